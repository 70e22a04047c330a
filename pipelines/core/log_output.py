"""Where sparkcnn's lines go: library code logs them, and only the CLI (or an executor's log) prints them.

Every module logs on the logger of its package, `logging.getLogger("sparkcnn.<package>")`
(sparkcnn.ingest, sparkcnn.train, sparkcnn.training, sparkcnn.inference, sparkcnn.core, ...); a
stage's progress and up-to-date lines are its own logger's (sparkcnn.<stage>).  A record's message
is the whole line users and tests grep ("[ingest] train: read ...", "[train] epoch 1/3: ...").

A program that configures no logging (a notebook calling a stage function or CNNEstimator.fit) gets
nothing printed: "sparkcnn" holds a NullHandler (pipelines/__init__.py).  `logging.basicConfig(
level=logging.INFO)` prints the lines, in basicConfig's format; `lines_to(sys.stdout)` prints them
as the CLI does.

Lines written in executor processes: a Horovod rank's records travel to the driver and are logged
there on the logger they were logged on (pipelines/core/line_relay.py); a Spark task's go to the
task process's stderr, the executor's log (`executor_lines`), since no CLI runs there.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, TextIO

ROOT = "sparkcnn"
LINE_FORMAT = "%(message)s"     # the line alone, as sparkcnn printed it before it logged


def line_handler(stream: TextIO) -> logging.Handler:
    """A handler writing each record's message alone on `stream` (flushed per record: a scheduler's log
    file gets each line as it happens)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LINE_FORMAT))
    return handler


@contextlib.contextmanager
def routed_to(handler: logging.Handler, level: int = logging.INFO) -> Iterator[logging.Handler]:
    """While the block runs, every "sparkcnn" record at `level` or above goes to `handler`.

    The records do not also propagate to the root logger: a library in the process may have
    configured it (Horovod's driver calls logging.info, which installs a stderr handler), and the
    lines would then appear twice.  The logger's level and propagation are restored afterwards, so
    a program calling the CLI's main() keeps its own configuration.
    """
    logger = logging.getLogger(ROOT)
    before = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]


def lines_to(stream: TextIO, level: int = logging.INFO):
    """The CLI's output: while the block runs, every "sparkcnn" record at `level` or above is printed on
    `stream`, its message alone (a context manager)."""
    return routed_to(line_handler(stream), level)


_EXECUTOR_HANDLER: list = []


def executor_lines() -> None:
    """In a Spark task's Python worker: "sparkcnn" INFO records go to this process's stderr, the executor's
    log (Spark keeps it per executor; in local mode it is the driver's stderr).  Once per process."""
    if _EXECUTOR_HANDLER:
        return
    logger = logging.getLogger(ROOT)
    handler = line_handler(sys.stderr)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.propagate = False          # whatever configured the root logger here, each line once
    _EXECUTOR_HANDLER.append(handler)
