"""The plain-library baselines, run in their own process so TF owns all cores as it would
for a user without Spark: Keras fit on in-memory arrays and model.predict.

    python -m benchmarks.plain_keras fit DATASET_DIR EPOCHS BATCH
    python -m benchmarks.plain_keras predict DATASET_DIR MODEL_PATH BATCH REPEATS
    python -m benchmarks.plain_keras evaluate DATASET_DIR MODEL_PATH [MODEL_PATH ...]
Prints one JSON line.
"""
import json
import statistics
import sys
import time

import pyarrow.parquet as pq

from pipelines.core import records


def load_arrays(dataset_dir):
    meta = records.read_meta(dataset_dir)
    table = pq.read_table(dataset_dir, columns=[records.ID, records.LABEL, records.IMAGE]).sort_by(records.ID)
    return records.decode_images(table.column(records.IMAGE), meta.shape).copy(), \
        table.column(records.LABEL).to_numpy(), meta


def fit(dataset_dir, epochs, batch):
    import tensorflow as tf

    from pipelines.training.networks import build_model
    from pipelines.training.zoo import make_optimizer
    x, y, meta = load_arrays(dataset_dir)
    tf.keras.utils.set_random_seed(0)
    model = build_model("mnist_cnn", meta.shape, meta.num_classes)
    model.compile(optimizer=make_optimizer("adam", 1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    times = []

    class Clock(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0, callbacks=[Clock()])
    steady = times[1:] or times
    return {"epoch_seconds": times, "samples_per_second": (len(x) // batch) * batch / statistics.median(steady)}


def predict(dataset_dir, model_path, batch, repeats):
    import tensorflow as tf
    x, _, _ = load_arrays(dataset_dir)
    model = tf.keras.models.load_model(model_path, compile=False, safe_mode=True)
    model.predict(x[:batch], batch_size=batch, verbose=0)  # warm-up
    predict_times, call_times = [], []
    call = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(x, batch_size=batch, verbose=0)
        predict_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            call(x[i:i + batch]).numpy()
        call_times.append(time.perf_counter() - t0)
    return {"rows": len(x), "predict_rows_per_second": len(x) / statistics.median(predict_times),
            "call_rows_per_second": len(x) / statistics.median(call_times)}


def evaluate(dataset_dir, model_paths):
    """Accuracy of each saved model on the dataset (e.g. the test split), one process for all."""
    import numpy as np
    import tensorflow as tf
    x, y, _ = load_arrays(dataset_dir)
    out = []
    for path in model_paths:
        model = tf.keras.models.load_model(path, compile=False, safe_mode=True)
        out.append(float(np.mean(np.argmax(model.predict(x, batch_size=1024, verbose=0), axis=1) == y)))
    return {"rows": len(x), "accuracy": out}


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "fit":
        out = fit(args[0], int(args[1]), int(args[2]))
    elif mode == "evaluate":
        out = evaluate(args[0], args[1:])
    else:
        out = predict(args[0], args[1], int(args[2]), int(args[3]))
    print(json.dumps(out))
