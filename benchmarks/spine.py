"""`make bench`: the spine's throughput against the plain libraries, measured in the same run.

  training  samples/s: Horovod-on-Spark reading Parquet through Petastorm (1 and 2 workers)
            vs Keras fit on the same rows as in-memory numpy arrays (one process, all cores);
            and the widest Horovod row again with train.mixed_precision (--mixed-precision,
            default mixed_bfloat16: the one this CPU can run), against its float32 row
  scoring   rows/s: the score stage's Spark job (mapInArrow, model cached per worker,
            predictions written to Parquet) vs model.predict (and a bare traced model call)
            on the same arrays in one process

Steady-state numbers: epoch 1 and the first scoring pass carry one-off start-up
(graph tracing, model load) and are reported but not used in the ratios.
Requires the demo datasets (`make demo` or `sparkcnn ingest --conf conf/mnist.yaml`).

    python -m benchmarks.spine [--conf conf/mnist.yaml] [--epochs 3] [--repeats 3]
"""
import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from pipelines.core import records
from pipelines.core.session import build_spark
from pipelines.core.store import RunStore
from pipelines.score.stage import predict_dataset
from pipelines.stages import load_config
from pipelines.train.launch import run_horovod
from pipelines.train.training import make_spec


def plain(*args):
    out = subprocess.run([sys.executable, "-m", "benchmarks.plain_keras", *map(str, args)],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_training(spark, cfg, epochs, mixed_precision):
    train_dir = cfg.dataset_dir("train")
    rows = []
    base = plain("fit", os.path.realpath(train_dir), epochs, cfg.train.batch_size)
    rows.append(("Keras fit, in-memory numpy (baseline)", base["samples_per_second"], base["epoch_seconds"]))
    spec = make_spec(cfg.train, train_dir, cfg.dataset_dir("val"))
    spec = dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, epochs=epochs), val_path=None, val_rows=0)
    workers_rows = [w for w in (1, 2) if w <= spark.sparkContext.defaultParallelism]
    runs = [(w, None) for w in workers_rows] + ([(workers_rows[-1], mixed_precision)] if mixed_precision else [])
    for workers, precision in runs:
        run_spec = dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, mixed_precision=precision))
        result = run_horovod(spark, run_spec, workers, {"lo"}, 600)[0]
        secs = result["epoch_seconds"]
        sps = result["samples_per_epoch"] / statistics.median(secs[1:] or secs)
        rows.append((f"Horovod on Spark via Petastorm, {workers} worker(s)" + (f", {precision}" if precision else ""),
                     sps, secs))
    return rows


def bench_scoring(spark, cfg, model_path, repeats):
    dataset_dir = cfg.dataset_dir("train")  # 55k rows: enough to amortise Spark's per-job overhead
    meta = records.read_meta(dataset_dir)
    base = plain("predict", os.path.realpath(dataset_dir), model_path, cfg.score.batch_size, repeats)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats + 1):
            frame, _ = predict_dataset(spark, dataset_dir, model_path, cfg.score.batch_size)
            t0 = time.perf_counter()
            frame.write.mode("overwrite").parquet(os.path.join(tmp, "p"))
            times.append(time.perf_counter() - t0)
    spark_rps = meta.num_rows / statistics.median(times[1:])
    return [("model.predict, in-memory numpy (baseline)", base["predict_rows_per_second"], None),
            ("traced model call loop, in-memory numpy", base["call_rows_per_second"], None),
            ("Spark score stage (CNNModel -> Parquet)", spark_rps, times)], meta.num_rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", default="conf/mnist.yaml")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--mixed-precision", default="mixed_bfloat16", choices=("mixed_bfloat16", "mixed_float16", "none"),
                    help="the mixed-precision row's policy (none: no such row)")
    args = ap.parse_args(argv)
    cfg = load_config(args.conf)
    spark = build_spark(cfg.spark)
    store = RunStore(cfg.run_dir)
    print(f"cores: {os.cpu_count()}, Spark slots: {spark.sparkContext.defaultParallelism}")
    report = {}
    if not args.skip_training:
        precision = None if args.mixed_precision == "none" else args.mixed_precision
        rows = bench_training(spark, cfg, args.epochs, precision)
        base = rows[0][1]
        print(f"\nTRAINING mnist_cnn, batch {cfg.train.batch_size}/worker, {args.epochs} epochs "
              "(samples/s from the median epoch after the first)")
        for name, sps, secs in rows:
            print(f"  {name:<60} {sps:8.0f} samples/s  {sps / base:5.2f}x   epochs(s): "
                  + ", ".join(f"{s:.1f}" for s in secs))
        if precision:
            print(f"  {precision} vs float32, same workers: {rows[-1][1] / rows[-2][1]:.2f}x")
        report["training"] = [{"name": n, "samples_per_second": s, "ratio": s / base, "epoch_seconds": e}
                              for n, s, e in rows]
    model_path = store.require(store.model_path, "train")
    rows, n = bench_scoring(spark, cfg, model_path, args.repeats)
    base = rows[0][1]
    print(f"\nSCORING {n} rows, batch {cfg.score.batch_size} (rows/s from the median of {args.repeats} warm passes)")
    for name, rps, secs in rows:
        extra = ("   passes(s): " + ", ".join(f"{s:.2f}" for s in secs) + " (first is cold)") if secs else ""
        print(f"  {name:<60} {rps:8.0f} rows/s     {rps / base:5.2f}x{extra}")
    report["scoring"] = [{"name": n_, "rows_per_second": r, "ratio": r / base} for n_, r, _ in rows]
    out = os.path.join(store.root, "bench.json")
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\n-> {out}   reproduce: make bench   (or python -m benchmarks.spine --epochs {args.epochs})")


if __name__ == "__main__":
    main()
