"""`sparkcnn <stage> --conf conf/<name>.yaml [--set section.key=value ...]`

Each stage is a library function (spark, cfg, store) listed in the stage table
(pipelines/stages.py); this module only parses arguments, starts Spark, times the stage
and turns known failures into one clear line instead of a stack trace.  The library logs its
lines ("sparkcnn.*" loggers); the CLI is what prints them, on stdout, each line as it happens.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
import traceback

import yaml

from pipelines.core import stage_cache, storage
from pipelines.core.config import ConfigError, describe
from pipelines.core.errors import EXIT_BUG, EXIT_CODES, EXIT_OK, Terminated, classify
from pipelines.core.events import EventLog, summary_of
from pipelines.core.log_output import lines_to
from pipelines.core.progress import StageProgress
from pipelines.core.published import reading_once
from pipelines.core.run_lock import RunLock
from pipelines.core.session import build_spark
from pipelines.core.store import RunStore, read_json, write_bytes_atomic
from pipelines.stages import PIPELINES, STAGES, WRITES_DATASET, load_config, sections_of, stage_names
from pipelines.tracking.tracker import tracked


def _commands() -> dict:
    """name -> (help, example) for every stage and composite command."""
    commands = {name: (st.help, st.example) for name, st in STAGES.items()}
    commands.update({name: (text, example) for name, (_, text, example) in PIPELINES.items()})
    return commands


EXIT_HELP = "exit codes:\n" + "\n".join(f"  {code:<3}  {text}" for code, text in sorted(EXIT_CODES.items()))


def parser() -> argparse.ArgumentParser:
    commands = _commands()
    p = argparse.ArgumentParser(
        prog="sparkcnn", description="Distributed image-CNN pipeline on Spark, Horovod and Keras.",
        epilog="examples:\n" + "\n".join(f"  {example}" for _, example in commands.values()) + "\n\n" + EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (text, example) in commands.items():
        settings = [line for section, cls in sections_of(name).items() for line in describe(section, cls)]
        s = sub.add_parser(name, help=text, description=text,
                           epilog=f"example:\n  {example}\n\nsettings (conf file or --set SECTION.KEY=VALUE):\n"
                                  + "\n".join(settings) + "\n\n" + EXIT_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        s.add_argument("--conf", required=True, help="job config, e.g. conf/mnist.yaml")
        s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one setting (repeatable), e.g. --set train.epochs=1")
        s.add_argument("--force", action="append", default=[], metavar="STAGE|all",
                       help="run these stages even when their inputs are unchanged (a stage whose key is "
                            "unchanged and whose outputs are intact is skipped: '[train] up to date')")
    return p


def _forced(command: str, force: list) -> set:
    """The stages `--force` names (comma lists and repeats allowed; 'all' = every stage of the command)."""
    stages = stage_names(command)
    names = {n.strip() for item in force for n in item.split(",") if n.strip()}
    unknown = sorted(names - set(stages) - {"all"})
    if unknown:
        raise ConfigError(f"--force {','.join(unknown)}: `sparkcnn {command}` runs {', '.join(stages)} (or say all)")
    return set(stages) if "all" in names else names


def _locks(command: str, cfg) -> list:
    """The locks a command holds while it runs: its run directory's, and the dataset's when it writes one."""
    ttl, holder = cfg.run.lock_ttl_seconds, f"sparkcnn {command} --conf {cfg.source}"
    locks = [RunLock(cfg.run_dir, "run directory", holder, ttl)]
    if any(stage in WRITES_DATASET for stage in stage_names(command)):
        locks.append(RunLock(cfg.dataset_root, "dataset", holder, ttl))
    return locks


def _run_one(stage: str, session, cfg, store, forced: set, events) -> tuple:
    """One stage: skipped when its key says it is up to date, else run with progress lines and its key
    recorded -> (its result, its seconds); (None, None) when skipped.  Its lines are its own logger's."""
    logger = logging.getLogger(f"sparkcnn.{stage}")
    key_spec = STAGES[stage].key
    verdict = stage_cache.check(stage, key_spec, cfg, store) if key_spec is not None else None
    if verdict is not None and verdict.up_to_date and stage not in forced:
        logger.info(f"[{stage}] up to date (key {verdict.key}); --force {stage} runs it anyway")
        events.emit("stage_skipped", stage=stage, key=verdict.key)
        return None, None
    if verdict is not None:
        logger.info(f"[{stage}] running: " + ("--force" if stage in forced else verdict.reason))
    events.emit("stage_start", stage=stage, key=verdict.key if verdict else None)
    t0 = time.perf_counter()
    spark = session()
    with StageProgress(spark, stage, cfg.run.progress_seconds):
        result = STAGES[stage].run(spark, cfg, store)
    seconds = time.perf_counter() - t0
    if verdict is not None:
        stage_cache.remember(verdict, key_spec, cfg, store, result)
    store.record_timing(stage, seconds)
    events.emit("stage_end", stage=stage, seconds=round(seconds, 2), result=summary_of(result))
    return result, seconds


def run_stages(stages, cfg, forced=frozenset(), events=None) -> dict:
    """Run stages in order against one SparkSession (one MLflow run when tracked), under the conf's storage
    context; returns each stage's result (None for a stage that was up to date).  Each published output
    is read once for all of them (their keys and runs), and what a stage publishes is what the next ones
    see."""
    with storage.using(cfg.storage.context()), reading_once():
        return _run_in_order(stages, cfg, forced, events)


def _run_in_order(stages, cfg, forced, events) -> dict:
    store = RunStore(cfg.run_dir)
    storage.makedirs(store.root)
    events = events or EventLog(store.root)
    write_bytes_atomic(store.config_path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    results = {}
    started = []

    def session():
        """Spark starts when the first stage that is not up to date runs (a run of skips takes seconds)."""
        if not started:
            started.append(build_spark(cfg.spark, resources=cfg.resources, verbose=cfg.run.verbose))
        return started[0]
    with tracked(cfg, store, stages) as tracking:   # MLflow, when tracking.mlflow is true
        for stage in stages:
            results[stage], seconds = _run_one(stage, session, cfg, store, set(forced), events)
            if seconds is not None:
                tracking.stage_done(stage, seconds)        # the same seconds as timings.json
    return results


def _active_spark(method: str) -> None:
    """Call `method` of this process's running SparkContext, if one runs."""
    from pyspark import SparkContext
    if SparkContext._active_spark_context is not None:
        getattr(SparkContext._active_spark_context, method)()


def _stop_spark(jvm_too: bool = False) -> None:
    """Stop Spark before the failure's one line: a dying job's JVM threads (task kills, Horovod's job group
    cancelled) otherwise log after it, and a scheduler reads the last line.  jvm_too (the sparkcnn command,
    whose process ends next): the JVM itself is ended and waited for, since it still logs while it shuts
    down (exceptions of threads the dying job left), which would land after the line (a dead-worker test
    saw a Java stack trace last).  Not when the JVM started this process (spark-submit), and not for
    callers of main() in their own process (a notebook, a test), who may start Spark again."""
    try:
        from pyspark import SparkContext
        _active_spark("stop")
        gateway = SparkContext._gateway
        proc = getattr(gateway, "proc", None) if jvm_too else None
        if proc is not None:
            SparkContext._gateway = SparkContext._jvm = None   # a later SparkContext starts a new JVM
            gateway.shutdown()
            if proc.stdin is not None:
                proc.stdin.close()       # pyspark's JVM exits when its stdin closes
            proc.wait(timeout=60)
    except Exception:          # noqa: BLE001 (the JVM may be gone already)
        pass


def _fail(command: str, code: int, message: str, events, own_process: bool = False) -> int:
    _stop_spark(jvm_too=own_process)
    print(f"sparkcnn {command}: error: {storage.redact(message)}", file=sys.stderr)
    if events is not None:
        events.emit("command_end", exit_code=code, reason=EXIT_CODES.get(code, ""), message=storage.redact(message))
    return code


class _Termination:
    """Whether SIGTERM reached the running command: whatever exception then ends it, it ends as terminated."""

    def __init__(self):
        self.signal = None

    def on_sigterm(self, signum, frame) -> None:
        """A scheduler's timeout or kill: cancel the Spark jobs (so no task writes on into a staging folder),
        then unwind through every atomic_dir and lock, which discard what was half written.  Raised inside
        a Py4J call the exception may arrive as Py4J's own error: `self.signal` says what it really was."""
        self.signal = signum
        try:
            _active_spark("cancelAllJobs")
        except Exception:          # noqa: BLE001 (the JVM may be going away too)
            pass
        raise _terminated()


def _terminated() -> Terminated:
    return Terminated("stopped by SIGTERM: Spark jobs cancelled and half-written outputs discarded; published "
                      "outputs are unchanged; run the same command again to continue")


def main(argv=None) -> int:
    with reading_once():          # the closing lines name outputs the stages read or published
        return _parse_and_run(argv)


def _parse_and_run(argv) -> int:
    args = parser().parse_args(argv)
    termination = _Termination()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, termination.on_sigterm)
    # Progress lines (per-epoch, per-stage) must reach log files as they happen, not at exit.
    sys.stdout.reconfigure(line_buffering=True)
    # the library's lines as they always looked (the message alone), and the conf's storage context from
    # when it is read to the last line
    with lines_to(sys.stdout), contextlib.ExitStack() as scope:
        return _command(args, termination, scope, own_process=argv is None)


def _command(args, termination: _Termination, scope: contextlib.ExitStack, own_process: bool) -> int:
    """The command `args` names, its failure turned into one line on stderr and an exit code.  own_process:
    this process is the sparkcnn command (not a caller of main(), such as a test or a notebook)."""
    events = None
    try:
        cfg = load_config(args.conf, args.set)
        scope.enter_context(storage.using(cfg.storage.context()))
        stages = stage_names(args.stage)
        forced = _forced(args.stage, args.force)
        events = EventLog(cfg.run_dir)
        events.emit("command_start", command=args.stage, stages=list(stages), conf=cfg.source,
                    overrides=[storage.redact(o) for o in args.set], forced=sorted(forced))
        with contextlib.ExitStack() as held:
            for lock in _locks(args.stage, cfg):
                held.enter_context(lock)
            t0 = time.perf_counter()
            results = run_stages(stages, cfg, forced=forced, events=events)
            events.emit("command_end", exit_code=EXIT_OK, seconds=round(time.perf_counter() - t0, 2))
    except Exception as exc:  # noqa: BLE001 (every failure ends in one line and an exit code)
        known = classify(_terminated() if termination.signal else exc)
        if known is None:                      # a bug: the traceback, then the one line
            traceback.print_exc()
            return _fail(args.stage, EXIT_BUG, f"internal error (please report): {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300] if str(exc) else ''}", events, own_process)
        return _fail(args.stage, known[0], known[1], events, own_process)
    if args.stage == "transfer" and results.get("transfer"):
        print(f"\nsparkcnn transfer '{cfg.run.name}': test accuracy {results['transfer']['accuracy']:.4f}")
        print(f"report: {results['report'] or RunStore(cfg.run_dir).report_index()}")
    if args.stage == "run":
        print(f"\nsparkcnn run '{cfg.run.name}' finished in {time.perf_counter() - t0:.0f}s")
        store = RunStore(cfg.run_dir)                    # skipped stages: what they published before
        metrics = results["score"] or read_json(store.metrics_path)
        print(f"test accuracy: {metrics['accuracy']:.4f}")
        print(f"report: {results['report'] or store.report_index()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
