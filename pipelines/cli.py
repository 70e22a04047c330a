"""`sparkcnn <stage> --conf conf/<name>.yaml [--set section.key=value ...]`

Each stage is a library function (spark, cfg, store, log); this module only
parses arguments, starts Spark, times the stage and turns known failures
into one clear line instead of a stack trace.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import yaml

from .config import load_config
from .errors import SparkcnnError, remote_error_message
from .store import RunStore, write_bytes_atomic

EXAMPLES = {
    "ingest": "sparkcnn ingest --conf conf/mnist.yaml --set ingest.limit_train=6000",
    "train": "sparkcnn train --conf conf/mnist.yaml --set train.epochs=1 --set train.num_proc=2",
    "score": "sparkcnn score --conf conf/mnist.yaml",
    "report": "sparkcnn report --conf conf/mnist.yaml",
    "run": "sparkcnn run --conf conf/mnist.yaml",
}
HELP = {
    "ingest": "fetch the dataset (verified) and write train/val/test Parquet datasets",
    "train": "train a zoo model with Horovod on Spark executors, reading Parquet through Petastorm",
    "score": "batch-score a split with the trained model: predictions Parquet + metrics.json",
    "report": "write runs/<run>/report/index.html with samples, curves, confusion matrix",
    "run": "the whole pipeline: ingest, train, score, report",
}


def _stage_functions():
    # Imported lazily so `sparkcnn --help` and conf errors answer without loading Spark modules.
    from .ingest import ingest
    from .report import report
    from .score import score
    from .train import train
    return {"ingest": lambda spark, cfg, store, log: ingest(spark, cfg, log),  # datasets live outside the run
            "train": train, "score": score, "report": report}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sparkcnn", description="Distributed image-CNN pipeline on Spark, Horovod and Keras.",
        epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, text in HELP.items():
        s = sub.add_parser(stage, help=text, description=text, epilog=f"example:\n  {EXAMPLES[stage]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        s.add_argument("--conf", required=True, help="job config, e.g. conf/mnist.yaml")
        s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one setting (repeatable), e.g. --set train.epochs=1")
    return p


def run_stages(stages, cfg, log=print) -> dict:
    """Run stages in order against one SparkSession; returns each stage's result."""
    from .session import build_spark
    functions = _stage_functions()
    store = RunStore(cfg.run_dir)
    os.makedirs(store.root, exist_ok=True)
    write_bytes_atomic(store.config_path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    spark = build_spark(cfg.spark)
    results = {}
    for stage in stages:
        t0 = time.perf_counter()
        results[stage] = functions[stage](spark, cfg, store, log)
        store.record_timing(stage, time.perf_counter() - t0)
    return results


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = load_config(args.conf, args.set)
        stages = ["ingest", "train", "score", "report"] if args.stage == "run" else [args.stage]
        t0 = time.perf_counter()
        results = run_stages(stages, cfg)
    except (SparkcnnError, FileNotFoundError) as exc:
        print(f"sparkcnn {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a sparkcnn error raised inside a Spark task arrives wrapped
        message = remote_error_message(exc)
        if message is None:
            raise
        print(f"sparkcnn {args.stage}: error: {message}", file=sys.stderr)
        return 2
    if args.stage == "run":
        print(f"\nsparkcnn run '{cfg.run.name}' finished in {time.perf_counter() - t0:.0f}s")
        print(f"test accuracy: {results['score']['accuracy']:.4f}")
        print(f"report: {results['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
