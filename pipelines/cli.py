"""`sparkcnn <stage> --conf conf/<name>.yaml [--set section.key=value ...]`

Each stage is a library function (spark, cfg, store, log); this module only
parses arguments, starts Spark, times the stage and turns known failures
into one clear line instead of a stack trace.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from dataclasses import dataclass

import yaml

from .config import load_config
from .errors import SparkcnnError, remote_error_message
from .store import RunStore, write_bytes_atomic
from .tracking import tracked


@dataclass(frozen=True)
class Stage:
    """A CLI stage: `target` is "module:function", a function (spark, cfg, store, log).

    Imported only when the stage runs, so `sparkcnn --help` and conf errors
    answer without loading Spark or TensorFlow.
    """
    target: str
    help: str
    example: str

    def function(self):
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


STAGES = {
    "ingest": Stage("pipelines.ingest:ingest_stage",
                    "fetch the dataset (verified) and write train/val/test Parquet datasets",
                    "sparkcnn ingest --conf conf/mnist.yaml --set ingest.limit_train=6000"),
    "augment": Stage("pipelines.augment:augment",
                     "augment Parquet splits (rotate, shift, skew, elastic, ...) reproducibly: <split>_aug + figure",
                     "sparkcnn augment --conf conf/augment_mnist.yaml"),
    "train": Stage("pipelines.train:train",
                   "train a zoo model with Horovod on Spark executors, reading Parquet through Petastorm",
                   "sparkcnn train --conf conf/mnist.yaml --set train.epochs=1 --set train.num_proc=2"),
    "score": Stage("pipelines.score:score",
                   "batch-score a split with the trained model: predictions Parquet + metrics.json",
                   "sparkcnn score --conf conf/mnist.yaml"),
    "report": Stage("pipelines.report:report",
                    "write runs/<run>/report/index.html with samples, curves, confusion matrix",
                    "sparkcnn report --conf conf/mnist.yaml"),
    "visualize": Stage("pipelines.visualize:visualize",
                       "PNG grid of N samples per class (misclassified in red with predictions) + class counts",
                       "sparkcnn visualize --conf conf/mnist.yaml --set visualize.split=test --set visualize.predictions=true"),
    "export": Stage("pipelines.export:export_stage",
                    "write a dataset back to lossless PNG files, one folder per class",
                    "sparkcnn export --conf conf/mnist.yaml --set export.splits=[test] --set export.out_dir=/tmp/mnist_png"),
    "transfer": Stage("featurizers.transfer:transfer",
                      "pretrained CNN features (DeepImageFeaturizer) + LogisticRegression: fit, save the "
                      "PipelineModel, evaluate on test, report",
                      "sparkcnn transfer --conf conf/transfer_mnist.yaml --set transfer.train_rows=2000"),
    "experiment": Stage("pipelines.experiments:experiment",
                        "sweep a grid of trials (architecture, batch size, optimizer, ...) as parallel Spark tasks: "
                        "results table + plots",
                        "sparkcnn experiment --conf conf/experiments/architectures.yaml"),
    "localise": Stage("pipelines.fcn:localise",
                      "convert mnist_cnn to a fully-convolutional net, prove equivalence, localise digits in "
                      "composite images with Spark (heatmaps + score)",
                      "sparkcnn localise --conf conf/experiments/localise.yaml"),
}
# Composite commands: a name for a sequence of stages.
PIPELINES = {
    "run": (("ingest", "train", "score", "report"), "the whole pipeline: ingest, train, score, report",
            "sparkcnn run --conf conf/mnist.yaml"),
}


def _commands() -> dict:
    """name -> (help, example) for every stage and composite command."""
    commands = {name: (st.help, st.example) for name, st in STAGES.items()}
    commands.update({name: (text, example) for name, (_, text, example) in PIPELINES.items()})
    return commands


def parser() -> argparse.ArgumentParser:
    commands = _commands()
    p = argparse.ArgumentParser(
        prog="sparkcnn", description="Distributed image-CNN pipeline on Spark, Horovod and Keras.",
        epilog="examples:\n" + "\n".join(f"  {example}" for _, example in commands.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (text, example) in commands.items():
        s = sub.add_parser(name, help=text, description=text, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        s.add_argument("--conf", required=True, help="job config, e.g. conf/mnist.yaml")
        s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one setting (repeatable), e.g. --set train.epochs=1")
    return p


def run_stages(stages, cfg, log=print) -> dict:
    """Run stages in order against one SparkSession (one MLflow run when tracked); returns each stage's result."""
    from .session import build_spark
    store = RunStore(cfg.run_dir)
    os.makedirs(store.root, exist_ok=True)
    write_bytes_atomic(store.config_path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    results = {}
    with tracked(cfg, store, stages, log) as tracking:   # MLflow, when tracking.mlflow is true
        spark = build_spark(cfg.spark)
        for stage in stages:
            t0 = time.perf_counter()
            results[stage] = STAGES[stage].function()(spark, cfg, store, log)
            seconds = time.perf_counter() - t0
            store.record_timing(stage, seconds)
            tracking.stage_done(stage, seconds)
    return results


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    # Progress lines (per-epoch, per-stage) must reach log files as they happen, not at exit.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        cfg = load_config(args.conf, args.set)
        stages = PIPELINES[args.stage][0] if args.stage in PIPELINES else [args.stage]
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
    if args.stage == "transfer":
        print(f"\nsparkcnn transfer '{cfg.run.name}': test accuracy {results['transfer']['accuracy']:.4f}")
        print(f"report: {results['transfer']['report']}")
    if args.stage == "run":
        print(f"\nsparkcnn run '{cfg.run.name}' finished in {time.perf_counter() - t0:.0f}s")
        print(f"test accuracy: {results['score']['accuracy']:.4f}")
        print(f"report: {results['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
