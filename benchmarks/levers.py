"""`make bench-levers`: Horovod's levers side by side, each one's samples/s, step breakdown and test accuracy.

Every case trains mnist_cnn with Horovod on Spark through Petastorm on the same first `--rows`
training rows for `--epochs` epochs, changing one train setting from the conf's (the first
2-worker row); samples/s come from the median epoch after the first (which traces), the
breakdown is the workers' own (pipelines/training/step.py), accuracy is the trained model's on the
whole test split.  The 1-worker row is the reference of the ratios.

    python -m benchmarks.levers [--conf conf/mnist.yaml] [--rows 12800] [--epochs 3] [--cases a,b]
"""
import argparse
import dataclasses
import os
import sys
import tempfile

from benchmarks.report_file import write_report
from benchmarks.spine import horovod_spec, measure_horovod, plain
from pipelines.core.log_output import lines_to
from pipelines.core.session import build_spark
from pipelines.core.store import RunStore
from pipelines.stages import load_config
from pipelines.training.step import PHASES

# name -> (workers, settings changed from the conf's)
CASES = {
    "1 worker": (1, {}),
    "2 workers (conf)": (2, {}),
    "Horovod's cycle 1 ms": (2, {"cycle_time_ms": 1.0}),
    "cycle 5 ms": (2, {"cycle_time_ms": 5.0}),
    "cycle 50 ms": (2, {"cycle_time_ms": 50.0}),
    "passes 2": (2, {"backward_passes_per_step": 2}),
    "passes 4": (2, {"backward_passes_per_step": 4}),
    "fp16 compression": (2, {"compression": "fp16"}),
    "no overlap (grouped)": (2, {"overlap": False}),
    "batch x2 (lr x2)": (2, {"batch_size": "x2"}),
    "2 threads/worker": (2, {"threads_per_worker": 2}),
    "2 reader threads": (2, {"reader_workers": 2}),
    "fusion off": (2, {"fusion_threshold_mb": 0.0}),
}


def _settings(base, changes):
    changes = dict(changes)
    if changes.get("batch_size") == "x2":
        changes.update(batch_size=base.batch_size * 2, learning_rate=base.learning_rate * 2)
    return dataclasses.replace(base, **changes)


def run_case(spark, cfg, workers, changes, rows, epochs, model_path):
    settings = _settings(dataclasses.replace(cfg.train, epochs=epochs, num_proc=workers), changes)
    m = measure_horovod(spark, horovod_spec(cfg, settings, rows), workers)
    with open(model_path, "wb") as f:
        f.write(m.pop("result")["model_keras"])
    return m


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", default="conf/mnist.yaml")
    ap.add_argument("--rows", type=int, default=12800)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    args = ap.parse_args(argv)
    cfg = load_config(args.conf)
    spark = build_spark(cfg.spark)
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"--cases: unknown {unknown}; known: {', '.join(CASES)}")
    t = cfg.train
    print(f"cores: {os.cpu_count()}; conf: batch {t.batch_size}/worker, lr {t.learning_rate:g} "
          f"(x workers x passes: scale_lr {t.scale_lr}), backward_passes_per_step {t.backward_passes_per_step}, "
          f"compression {t.compression}; {args.rows} rows, {args.epochs} epochs")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(names):
            workers, changes = CASES[name]
            out[name] = run_case(spark, cfg, workers, changes, args.rows, args.epochs, os.path.join(tmp, f"{i}.keras"))
            print(f"  {name:<20} {out[name]['samples_per_second']:7.0f} samples/s", flush=True)
        accuracy = plain("evaluate", os.path.realpath(cfg.dataset_dir("test")),
                         *[os.path.join(tmp, f"{i}.keras") for i in range(len(names))])
    for name, acc in zip(names, accuracy["accuracy"]):
        out[name]["test_accuracy"] = acc
    ref = out.get("1 worker", out[names[0]])["samples_per_second"]
    print(f"\nLEVERS mnist_cnn, {args.rows} rows, {args.epochs} epochs, test accuracy on {accuracy['rows']} digits; "
          "ms per step (mean over workers, median epoch after the first)")
    head = f"  {'case':<20} {'samples/s':>9} {'vs 1w':>6} {'test acc':>8}  " + " ".join(f"{p:>9}" for p in
                                                                                (*PHASES, "other", "step"))
    print(head)
    for name in names:
        r, ms = out[name], out[name]["breakdown"].get("ms_per_step", {})
        print(f"  {name:<20} {r['samples_per_second']:9.0f} {r['samples_per_second'] / ref:5.2f}x "
              f"{r['test_accuracy']:8.4f}  " + " ".join(f"{ms.get(f'{p}_ms', 0):9.1f}" for p in
                                                        (*PHASES, "other", "step")))
    write_report(os.path.join(RunStore(cfg.run_dir).root, "bench-levers.json"), out,
                 f"make bench-levers   (python -m benchmarks.levers --rows {args.rows} --epochs {args.epochs})")


if __name__ == "__main__":
    with lines_to(sys.stdout):         # the trainings' lines, as the CLI prints them
        main()
