"""A progress line at least every 30 s while a stage runs, for logs that nobody watches live.

Spark's console progress bar redraws one terminal line and is off when stdout is a file; a
scheduler's log then shows nothing between a stage's first and last line.  While a stage runs,
a daemon thread reads Spark's status tracker (the driver's own view of its jobs: no extra Spark
job, no executor work) and logs, every `every` seconds,

    [ingest] progress: 12/40 tasks (30%), ~18000/60000 rows, 0.40 tasks/s, ETA 70 s, 31 s elapsed

counting the tasks of the stage's Spark jobs that started since it began.  A stage that knows its
total rows says so with `expect_rows(n)`, which tells the StageProgress its code runs under (a
ContextVar: the CLI's block around the stage; nothing outside one); rows done are then the tasks'
share of it (tasks are sized alike).  A stage whose one Spark job is long-lived (Horovod
training: one task per worker) prints elapsed time and running tasks; its own per-epoch lines say
the rest.
"""
from __future__ import annotations

import logging
import threading
import time
from contextvars import ContextVar
from typing import Optional

from pipelines.core.context_threads import in_this_context

_RUNNING: ContextVar = ContextVar("sparkcnn_stage_progress", default=None)   # the StageProgress of this block


def expect_rows(rows: Optional[int]) -> None:
    """The running stage's total rows (files, images), for the `~done/total rows` part of the line."""
    progress = _RUNNING.get()
    if progress is not None:
        progress.expected_rows = int(rows) if rows is not None else None


def _job_ids(tracker) -> set:
    """Jobs Spark still knows: those outside any job group, and every running one (Horovod sets a group)."""
    return set(tracker.getJobIdsForGroup(None) or []) | set(tracker.getActiveJobsIds() or [])


def _task_counts(tracker, since_jobs: set) -> tuple:
    """(tasks done, tasks in all, tasks running) of the jobs that are not in `since_jobs`."""
    done = total = running = 0
    for job_id in _job_ids(tracker) - since_jobs:
        job = tracker.getJobInfo(job_id)
        if job is None:
            continue
        for stage_id in job.stageIds:
            info = tracker.getStageInfo(stage_id)
            if info is None:
                continue
            done += info.numCompletedTasks
            total += info.numTasks
            running += info.numActiveTasks
    return done, total, running


def format_line(label: str, done: int, total: int, running: int, elapsed: float, first_done_at: Optional[float],
                expected_rows: Optional[int]) -> str:
    parts = []
    if total:
        parts.append(f"{done}/{total} tasks ({100 * done // total}%)")
        if expected_rows:
            parts.append(f"~{expected_rows * done // total}/{expected_rows} rows")
        if done and first_done_at is not None and done < total:
            rate = done / max(elapsed, 1e-9)
            parts.append(f"{rate:.2f} tasks/s, ETA {int((total - done) / rate)} s")
        if running:
            parts.append(f"{running} running")
    else:
        parts.append("no Spark task yet (driver work)")
    parts.append(f"{int(elapsed)} s elapsed")
    return f"[{label}] progress: " + ", ".join(parts)


class StageProgress:
    """Context manager: logs a progress line every `every` seconds while the block runs, on the stage's own
    logger (sparkcnn.<label>), beside the stage's other lines."""

    def __init__(self, spark, label: str, every: float = 30.0):
        self.spark, self.label, self.every = spark, label, float(every)
        self.logger = logging.getLogger(f"sparkcnn.{label}")
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.expected_rows: Optional[int] = None     # the stage's total rows, when it said (expect_rows)

    def __enter__(self) -> "StageProgress":
        self.expected_rows = None
        tracker = self.spark.sparkContext.statusTracker()
        self._before = _job_ids(tracker)
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=in_this_context(self._run), args=(tracker,),
                                        name=f"sparkcnn-progress-{self.label}", daemon=True)
        self._thread.start()
        self._running = _RUNNING.set(self)
        return self

    def _run(self, tracker) -> None:
        first_done_at = None
        while not self._stop.wait(self.every):
            try:
                done, total, running = _task_counts(tracker, self._before)
            except Exception:                 # noqa: BLE001 (the JVM is going away: stop reporting)
                return
            elapsed = time.monotonic() - self._t0
            if done and first_done_at is None:
                first_done_at = elapsed
            self.logger.info(format_line(self.label, done, total, running, elapsed, first_done_at, self.expected_rows))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        _RUNNING.reset(self._running)
