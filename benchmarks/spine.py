"""`make bench`: the spine's throughput against the plain libraries, measured in the same run.

  training  samples/s: Horovod-on-Spark reading Parquet through Petastorm (1 and 2 workers)
            vs Keras fit on the same rows as in-memory numpy arrays (one process, all cores)
  mixed     samples/s: train.mixed_precision (--mixed-precision, default mixed_bfloat16: the one a
            CPU can run) vs float32, Horovod on the same workers and rows (--mixed-rows), same run
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

from benchmarks.report_file import write_report
from pipelines.core import records
from pipelines.core.log_output import lines_to
from pipelines.core.session import build_spark
from pipelines.core.store import RunStore
from pipelines.score.stage import predict_dataset
from pipelines.stages import load_config
from pipelines.training.driver import breakdown_summary, make_spec
from pipelines.training.launch import run_horovod
from pipelines.training.step import describe


def plain(*args):
    out = subprocess.run([sys.executable, "-m", "benchmarks.plain_keras", *map(str, args)],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def horovod_spec(cfg, settings, rows=None):
    """A training spec on the conf's train split without validation, on its first `rows` rows (None: all)."""
    spec = make_spec(settings, records.open_dataset(cfg.dataset_dir("train")), None)
    return dataclasses.replace(spec, train_rows=min(rows or spec.train_rows, spec.train_rows))


def measure_horovod(spark, spec, workers) -> dict:
    """One Horovod-on-Spark training on loopback: samples/s from the median epoch after the first (which
    traces), the epochs' seconds, the workers' step breakdown, and rank 0's result (the model)."""
    ranks = run_horovod(spark, spec, workers, {"lo"}, 600)
    secs = ranks[0]["epoch_seconds"]
    return {"samples_per_second": ranks[0]["samples_per_epoch"] / statistics.median(secs[1:] or secs),
            "epoch_seconds": secs, "breakdown": breakdown_summary(ranks), "result": ranks[0]}


def _horovod_row(spark, spec, workers, name):
    m = measure_horovod(spark, spec, workers)
    return name, m["samples_per_second"], m["epoch_seconds"], m["breakdown"].get("ms_per_step", {})


def _breakdown_line(ms) -> str:
    return f"\n  {'':<60} {describe(ms, digits=0)}" if ms else ""


def bench_training(spark, cfg, epochs):
    train_dir = cfg.dataset_dir("train")
    rows = []
    base = plain("fit", os.path.realpath(train_dir), epochs, cfg.train.batch_size)
    rows.append(("Keras fit, in-memory numpy (baseline)", base["samples_per_second"], base["epoch_seconds"], {}))
    spec = horovod_spec(cfg, dataclasses.replace(cfg.train, epochs=epochs))
    for workers in (1, 2):
        if workers <= spark.sparkContext.defaultParallelism:
            rows.append(_horovod_row(spark, spec, workers, f"Horovod on Spark via Petastorm, {workers} worker(s)"))
    return rows


def bench_mixed_precision(spark, cfg, precision, rows_used, epochs=2):
    """float32 and `precision` side by side: same workers, the first `rows_used` rows, epoch 2 timed.

    Fewer rows than the float32 rows above because bfloat16 and float16 are emulated on CPUs
    without those instructions (here: several times slower), and 2 epochs (the first traces).
    """
    workers = min(2, spark.sparkContext.defaultParallelism)
    spec = horovod_spec(cfg, dataclasses.replace(cfg.train, epochs=epochs), rows_used)
    out = []
    for policy in (None, precision):
        run = dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, mixed_precision=policy))
        out.append(_horovod_row(spark, run, workers, f"{workers} worker(s), {policy or 'float32'}"))
    return out, spec.train_rows


def bench_scoring(spark, cfg, model_path, repeats):
    dataset = records.open_dataset(cfg.dataset_dir("train"))  # 55k rows: enough to amortise Spark's per-job overhead
    meta = dataset.meta
    base = plain("predict", dataset.url, model_path, cfg.score.batch_size, repeats)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats + 1):
            frame = predict_dataset(spark, dataset, model_path, cfg.score.batch_size)
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
    ap.add_argument("--skip-scoring", action="store_true", help="no scoring rows (they need the demo's model)")
    ap.add_argument("--mixed-precision", default="mixed_bfloat16", choices=("mixed_bfloat16", "mixed_float16", "none"),
                    help="the mixed-precision rows' policy (none: no such rows)")
    ap.add_argument("--mixed-rows", type=int, default=12800, help="training rows of the mixed-precision rows")
    args = ap.parse_args(argv)
    cfg = load_config(args.conf)
    spark = build_spark(cfg.spark)
    store = RunStore(cfg.run_dir)
    print(f"cores: {os.cpu_count()}, Spark slots: {spark.sparkContext.defaultParallelism}")
    report = {}
    if not args.skip_training:
        rows = bench_training(spark, cfg, args.epochs)
        base = rows[0][1]
        print(f"\nTRAINING mnist_cnn, batch {cfg.train.batch_size}/worker, {args.epochs} epochs "
              "(samples/s from the median epoch after the first)")
        for name, sps, secs, ms in rows:
            print(f"  {name:<60} {sps:8.0f} samples/s  {sps / base:5.2f}x   epochs(s): "
                  + ", ".join(f"{s:.1f}" for s in secs) + _breakdown_line(ms))
        report["training"] = [{"name": n, "samples_per_second": s, "ratio": s / base, "epoch_seconds": e,
                               "ms_per_step": ms} for n, s, e, ms in rows]
        if args.mixed_precision != "none":
            rows, used = bench_mixed_precision(spark, cfg, args.mixed_precision, args.mixed_rows)
            print(f"\nMIXED PRECISION mnist_cnn, {used} rows, batch {cfg.train.batch_size}/worker, 2 epochs "
                  "(samples/s from epoch 2)")
            for name, sps, secs, ms in rows:
                print(f"  {name:<60} {sps:8.0f} samples/s  {sps / rows[0][1]:5.2f}x   epochs(s): "
                      + ", ".join(f"{s:.1f}" for s in secs) + _breakdown_line(ms))
            report["mixed_precision"] = [{"name": n, "samples_per_second": s, "ratio": s / rows[0][1],
                                          "epoch_seconds": e} for n, s, e, _ in rows]
    if not args.skip_scoring:
        model_path = store.require(store.model_path, "train")
        rows, n = bench_scoring(spark, cfg, model_path, args.repeats)
        base = rows[0][1]
        print(f"\nSCORING {n} rows, batch {cfg.score.batch_size} (rows/s from the median of {args.repeats} "
              "warm passes)")
        for name, rps, secs in rows:
            extra = ("   passes(s): " + ", ".join(f"{s:.2f}" for s in secs) + " (first is cold)") if secs else ""
            print(f"  {name:<60} {rps:8.0f} rows/s     {rps / base:5.2f}x{extra}")
        report["scoring"] = [{"name": n_, "rows_per_second": r, "ratio": r / base} for n_, r, _ in rows]
    write_report(os.path.join(store.root, "bench.json"), report,
                 f"make bench   (or python -m benchmarks.spine --epochs {args.epochs})")


if __name__ == "__main__":
    with lines_to(sys.stdout):         # the trainings' lines, as the CLI prints them
        main()
