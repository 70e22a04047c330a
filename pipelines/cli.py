"""`sparkcnn <stage> --conf conf/<name>.yaml [--set section.key=value ...]`

Each stage is a library function (spark, cfg, store, log) listed in the stage table
(pipelines/stages.py); this module only parses arguments, starts Spark, times the stage
and turns known failures into one clear line instead of a stack trace.
"""
from __future__ import annotations

import argparse
import sys
import time

import yaml

from pipelines.core import storage
from pipelines.core.config import describe
from pipelines.core.errors import SparkcnnError, remote_error_message
from pipelines.core.session import build_spark
from pipelines.core.store import RunStore, configure_from, write_bytes_atomic
from pipelines.stages import PIPELINES, STAGES, load_config, sections_of, stage_names
from pipelines.tracking.tracker import tracked


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
        settings = [line for section, cls in sections_of(name).items() for line in describe(section, cls)]
        s = sub.add_parser(name, help=text, description=text,
                           epilog=f"example:\n  {example}\n\nsettings (conf file or --set SECTION.KEY=VALUE):\n"
                                  + "\n".join(settings),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        s.add_argument("--conf", required=True, help="job config, e.g. conf/mnist.yaml")
        s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one setting (repeatable), e.g. --set train.epochs=1")
    return p


def run_stages(stages, cfg, log=print) -> dict:
    """Run stages in order against one SparkSession (one MLflow run when tracked); returns each stage's result."""
    configure_from(cfg)
    store = RunStore(cfg.run_dir)
    storage.makedirs(store.root)
    write_bytes_atomic(store.config_path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    results = {}
    with tracked(cfg, store, stages, log) as tracking:   # MLflow, when tracking.mlflow is true
        spark = build_spark(cfg.spark, resources=cfg.resources)
        for stage in stages:
            t0 = time.perf_counter()
            results[stage] = STAGES[stage].run(spark, cfg, store, log)
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
        stages = stage_names(args.stage)
        t0 = time.perf_counter()
        results = run_stages(stages, cfg)
    except (SparkcnnError, OSError) as exc:   # OSError: a file or store that cannot be read or written
        print(f"sparkcnn {args.stage}: error: {storage.redact(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a sparkcnn error raised inside a Spark task arrives wrapped
        message = remote_error_message(exc)
        if message is None:
            raise
        print(f"sparkcnn {args.stage}: error: {storage.redact(message)}", file=sys.stderr)
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
