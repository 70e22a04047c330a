"""Launching the Horovod workers as Spark tasks (horovod.spark.run, gloo), and what a failure means.

This is the one place that knows how workers are started: a different launcher (or, later,
GPU-aware slot sizing) changes this file only.
"""
from __future__ import annotations

import os
import sys

from pipelines.core.errors import SparkcnnError
from pipelines.train.remote import TrainSpec, train_worker


class TrainError(SparkcnnError, RuntimeError):
    """Training cannot start or did not produce a model; the message says why."""


def run_horovod(spark, spec: TrainSpec, num_proc: int, nics, start_timeout: int) -> dict:
    """Run train_worker on num_proc Spark tasks; returns rank 0's result."""
    slots = spark.sparkContext.defaultParallelism
    if num_proc > slots:
        raise TrainError(f"train.num_proc={num_proc} but Spark offers {slots} task slots; Horovod needs all "
                         "its workers running at once (lower num_proc or add executor cores)")
    import horovod.spark  # deferred: pulls in heavy modules only the train stage needs

    # Unbuffered so per-epoch progress streams to the driver; Petastorm's pyarrow
    # deprecation warnings (one per row group) are noise for users.
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore::FutureWarning")
    results = horovod.spark.run(train_worker, args=(spec,), num_proc=num_proc, use_gloo=True,
                                nics=nics, start_timeout=start_timeout, verbose=1, env=env,
                                stdout=sys.stdout, stderr=sys.stderr)
    result = results[0]
    if not result or "model_keras" not in result:
        raise TrainError("Horovod rank 0 returned no model")
    return result
