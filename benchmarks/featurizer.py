"""`make bench-featurizer`: DeepImageFeaturizer images/s through Spark vs plain Keras, same run.

  baseline  model.predict of the same network (same weights) on the same images already
            resized and normalised as numpy arrays, in one separate process (TF owns all cores)
  spark     DeepImageFeaturizer.transform on the raw sparkcnn dataset rows: decode, resize,
            normalise and the model call inside executors, every row's vector materialised
            (noop sink, so nothing but the featurizer is timed)
  cnnmodel  CNNModel.from_zoo of the same network and weights on the same cached rows, its
            classifier-input embedding materialised: the engine the featurizer runs on, whose rate
            the featurizer should match

Steady state: the first Spark pass loads the model in each Python worker and is reported
but not used; images/s come from the median of the warm passes.
Needs the MNIST test dataset (`sparkcnn ingest --conf conf/transfer_mnist.yaml`, or the
transfer run, creates it).

    python -m benchmarks.featurizer [--conf conf/transfer_mnist.yaml] [--rows 1024] [--repeats 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import pyarrow.parquet as pq

from benchmarks.report_file import write_report
from pipelines.core import records


def load_images(dataset_dir, rows):
    meta = records.read_meta(dataset_dir)
    table = pq.read_table(os.path.realpath(dataset_dir), columns=[records.ID, records.IMAGE]).sort_by(records.ID)
    return records.decode_images(table.slice(0, rows).column(records.IMAGE), meta.shape)


def baseline(dataset_dir, rows, model_name, weights, batch, repeats):
    """Plain Keras: prepare all arrays first (untimed), then time model.predict alone."""
    from pipelines.inference.model_files import network_from_zoo
    from pipelines.inference.network import network_input
    from pipelines.inference.pretrained import keras_models, registry
    spec = registry.get_spec(model_name)
    x = network_input(network_from_zoo(model_name, weights), load_images(dataset_dir, rows))
    model = keras_models.build_model(spec, weights, keras_models.FEATURES)
    model.predict(x[:batch], batch_size=batch, verbose=0)  # warm-up: tracing
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(x, batch_size=batch, verbose=0)
        times.append(time.perf_counter() - t0)
    return {"rows": len(x), "images_per_second": len(x) / statistics.median(times), "pass_seconds": times}


def _pass_seconds(frame, stage, column) -> float:
    t0 = time.perf_counter()
    stage.transform(frame).select(records.ID, column).write.format("noop").mode("overwrite").save()
    return time.perf_counter() - t0


def _rate(times, n) -> dict:
    return {"rows": n, "images_per_second": n / statistics.median(times[1:]), "pass_seconds": times}


def spark_runs(cfg, dataset_dir, rows, repeats):
    """(DeepImageFeaturizer, CNNModel) passes over the same cached rows, alternating so both see the same
    machine: a shared host moves 1.5-2x between hours."""
    from pyspark.sql import functions as F

    from featurizers import DeepImageFeaturizer
    from pipelines.core.session import build_spark
    from pipelines.inference.cnn_model import CNNModel
    from pipelines.inference.network import CLASSIFIER_INPUT
    t = cfg.transfer
    spark = build_spark(cfg.spark)
    frame = (spark.read.parquet(os.path.realpath(dataset_dir)).where(F.col(records.ID) < rows)
             .repartition(spark.sparkContext.defaultParallelism).cache())
    n = frame.count()  # the raw rows are cached, so passes time the featurizer, not Parquet and the shuffle
    featurizer = DeepImageFeaturizer(inputCol=records.IMAGE, outputCol="features", modelName=t.model,
                                     weights=t.weights, batchSize=t.batch_size)
    engine = CNNModel.from_zoo(t.model, t.weights, inputCol=records.IMAGE, embeddingLayer=CLASSIFIER_INPUT,
                               embeddingCol="features", topKCol="", predictionCol="", batchSize=t.batch_size)
    ours, theirs = [], []
    for _ in range(repeats + 1):             # the first pass of each loads the model in every Python worker
        ours.append(_pass_seconds(frame, featurizer, "features"))
        theirs.append(_pass_seconds(frame, engine, "features"))
    return dict(_rate(ours, n), slots=spark.sparkContext.defaultParallelism), _rate(theirs, n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", default="conf/transfer_mnist.yaml")
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from pipelines.stages import load_config
    cfg = load_config(args.conf)
    t = cfg.transfer
    dataset_dir = cfg.dataset_dir("test")
    records.read_meta(dataset_dir)  # a clear error when the dataset is missing
    if args.baseline_only:
        print(json.dumps(baseline(dataset_dir, args.rows, t.model, t.weights, t.batch_size, args.repeats)))
        return
    out = subprocess.run([sys.executable, "-m", "benchmarks.featurizer", "--conf", args.conf, "--rows", str(args.rows),
                          "--repeats", str(args.repeats), "--baseline-only"], capture_output=True, text=True,
                         check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    base = json.loads(out.stdout.strip().splitlines()[-1])
    ours, engine = spark_runs(cfg, dataset_dir, args.rows, args.repeats)
    ratio = ours["images_per_second"] / base["images_per_second"]
    engine_ratio = engine["images_per_second"] / base["images_per_second"]
    print(f"\nFEATURIZER {t.model} ({t.weights}), {ours['rows']} MNIST images 28x28x1 -> "
          f"{t.model} input, batch {t.batch_size}, cores {os.cpu_count()}, Spark slots {ours['slots']} "
          f"(images/s from the median of {args.repeats} warm passes)")
    print(f"  {'Keras model.predict on prepared numpy (baseline)':<52} {base['images_per_second']:7.1f} images/s  "
          f"1.00x   passes(s): " + ", ".join(f"{s:.2f}" for s in base["pass_seconds"]))
    print(f"  {'DeepImageFeaturizer through Spark (raw rows in)':<52} {ours['images_per_second']:7.1f} images/s  "
          f"{ratio:4.2f}x   passes(s): " + ", ".join(f"{s:.2f}" for s in ours["pass_seconds"]) + " (first is cold)")
    print(f"  {'CNNModel.from_zoo through Spark (the same engine)':<52} {engine['images_per_second']:7.1f} images/s  "
          f"{engine_ratio:4.2f}x   passes(s): " + ", ".join(f"{s:.2f}" for s in engine["pass_seconds"]))
    print(f"  DeepImageFeaturizer / CNNModel: {ours['images_per_second'] / engine['images_per_second']:.2f}x")
    report = {"model": t.model, "rows": ours["rows"], "baseline": base, "spark": ours, "ratio": ratio,
              "cnnmodel": engine, "cnnmodel_ratio": engine_ratio}
    write_report(os.path.join(cfg.run_dir, "bench_featurizer.json"), report,
                 f"make bench-featurizer   (or python -m benchmarks.featurizer --rows {args.rows})")


if __name__ == "__main__":
    main()
