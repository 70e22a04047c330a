"""Measurements for the scaling cost model (benchmarks/scaling.py), each in its own process so
TensorFlow's thread pools are the ones asked for.  Prints one JSON line.

    python -m benchmarks.scaling_probe compute MODEL HEIGHT WIDTH CHANNELS BATCH THREADS STEPS
    python -m benchmarks.scaling_probe allreduce BYTES REPEATS CYCLE_MS   (2 Horovod processes on loopback)
"""
import json
import statistics
import sys
import time


def compute(model_name, shape, batch, threads, steps):
    """Seconds per sample of one worker's train step (forward, backward, optimizer update) at `threads`."""
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    if model_name == "resnet50":
        model = tf.keras.applications.ResNet50(weights=None, input_shape=shape, classes=1000)
        classes = 1000
    else:
        from pipelines.training.networks import build_model
        classes = 10
        model = build_model(model_name, shape, classes)
    from pipelines.training.zoo import make_optimizer
    optimizer = make_optimizer("adam", 1e-3)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()
    x = tf.constant(np.random.default_rng(0).integers(0, 255, (batch, *shape)).astype("float32"))
    y = tf.constant(np.arange(batch) % classes)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    step().numpy()                       # traces
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - t0)
    params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    return {"seconds_per_sample": statistics.median(times) / batch, "params": params, "batch": batch,
            "threads": threads, "step_seconds": times}


def _allreduce_worker(nbytes, repeats, cycle_ms):
    import os
    os.environ["HOROVOD_CYCLE_TIME"] = str(cycle_ms)      # as the training's workers run (read at init)
    import horovod.tensorflow as hvd
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    hvd.init()
    out = {}
    for label, n in (("latency", 4), ("payload", nbytes)):
        tensor = tf.ones([max(1, n // 4)], tf.float32)
        hvd.allreduce(tensor, op=hvd.Average, name=f"probe_{label}_warm").numpy()
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            hvd.allreduce(tensor, op=hvd.Average, name=f"probe_{label}").numpy()
            times.append(time.perf_counter() - t0)
        out[label] = statistics.median(times)
    return out


def allreduce(nbytes, repeats, cycle_ms):
    """Median seconds of one allreduce of 4 bytes and of `nbytes`, 2 gloo processes on loopback."""
    from horovod.runner import run
    results = run(_allreduce_worker, args=(nbytes, repeats, cycle_ms), np=2, use_gloo=True, network_interfaces=["lo"],
                  hosts="localhost:2", verbose=0)
    return {"latency_seconds": max(r["latency"] for r in results),
            "payload_seconds": max(r["payload"] for r in results), "bytes": nbytes}


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "compute":
        out = compute(args[0], (int(args[1]), int(args[2]), int(args[3])), int(args[4]), int(args[5]), int(args[6]))
    else:
        out = allreduce(int(args[0]), int(args[1]), float(args[2]))
    print(json.dumps(out))
