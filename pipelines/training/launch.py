"""Launching the Horovod workers as Spark tasks (horovod.spark.run, gloo), and what a failure means.

This is the one place that knows how workers are started and how many can run at once: task
slots are cores, or GPUs when the application schedules them (one GPU per rank).  A different
launcher changes this file only.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional

from pipelines.core import resources
from pipelines.core.errors import EXIT_RETRY, SparkcnnError
from pipelines.core.line_relay import LineRelay
from pipelines.core.session import is_local_master
from pipelines.core.tf_runtime import REQUIRE_GPU_ENV, TF_LOG_LEVEL_CONF, TF_LOG_LEVEL_ENV, tf_log_level
from pipelines.training.remote import TrainSpec, train_worker


class TrainError(SparkcnnError, RuntimeError):
    """Training cannot start or did not produce a model; the message says why."""


class WorkerLostError(TrainError):
    """A Horovod worker died or returned nothing (killed, OOM, lost executor): the same command resumes."""
    exit_code = EXIT_RETRY


def worker_slots(spark, wanted: Optional[int] = None) -> tuple:
    """(slots, what a slot is): Horovod workers that can run at once.

    With GPUs scheduled (spark.task.resource.gpu.amount) a slot is a GPU (every rank gets one),
    counted from the executors' GPU addresses.  Executors still registering are waited for (up
    to 60 s); for "every slot" (wanted None) until no more have arrived for 5 s.
    """
    per_task = resources.task_gpus(spark)
    settle = 5.0 if wanted is None else 0.0
    if not per_task:
        if wanted is None and not is_local_master(spark.sparkContext.master):
            return resources.settled(lambda: spark.sparkContext.defaultParallelism, 60, 1, settle), \
                "task slots (cores)"
        return spark.sparkContext.defaultParallelism, "task slots (cores)"
    if per_task != 1:
        raise TrainError(f"{resources.TASK_GPUS}={per_task:g}: Horovod trains one rank per GPU, so training needs "
                         "resources.gpus_per_task=1 (fractions are for scoring tasks sharing a GPU)")
    return resources.gpu_task_slots(spark, wait_seconds=60, wanted=wanted or 1, settle_seconds=settle), \
        "GPU task slots"


def resolve_num_proc(spark, num_proc: Optional[int]) -> int:
    """train.num_proc, or every slot when it is null; more workers than slots is one clear error."""
    slots, kind = worker_slots(spark, num_proc)
    if num_proc is None:
        if slots < 1:
            raise TrainError(f"train.num_proc is null (one worker per slot) but Spark offers no {kind}: "
                             + (resources.executor_summary(spark) or "no executor registered"))
        return slots
    if num_proc > slots:
        raise TrainError(f"train.num_proc={num_proc} but Spark offers {slots} {kind}; Horovod needs all "
                         "its workers running at once (lower num_proc, or add executors)")
    return num_proc


def rank_environment(spark) -> dict:
    """The environment the Horovod ranks start with: this process's, not the executors' (so what the session
    gives executors is copied in: resources.require_gpu and TensorFlow's log threshold, run.verbose's).

    Unbuffered so what a rank prints streams to the driver; Petastorm's pyarrow deprecation warnings
    (one per row group) are noise for users.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore::FutureWarning")
    conf = spark.sparkContext.getConf()
    if conf.get(resources.REQUIRE_ENV_CONF) == "1":
        env[REQUIRE_GPU_ENV] = "1"
    env[TF_LOG_LEVEL_ENV] = conf.get(TF_LOG_LEVEL_CONF) or os.environ.get(TF_LOG_LEVEL_ENV) or tf_log_level(False)
    return env


def run_horovod(spark, spec: TrainSpec, num_proc: int, nics, start_timeout: int) -> list:
    """Run train_worker on num_proc Spark tasks (num_proc from resolve_num_proc); returns every rank's result."""
    import horovod.spark  # deferred: pulls in heavy modules only the train stage needs

    env = rank_environment(spark)
    # The ranks' lines (rank 0's epochs) come through a relay of ours, logged here on the loggers they were
    # logged on: Horovod's stdout forwarding delivers in 64 KiB chunks (pipelines/core/line_relay.py), i.e.
    # at the end of a training.
    driver_host = spark.sparkContext.getConf().get("spark.driver.host", "127.0.0.1")
    with LineRelay(driver_host) as relay:
        spec = dataclasses.replace(spec, log_relay=relay.address)
        results = horovod.spark.run(train_worker, args=(spec,), num_proc=num_proc, use_gloo=True,
                                    nics=nics, start_timeout=start_timeout, verbose=1, env=env,
                                    stdout=sys.stdout, stderr=sys.stderr)
    if not results or not results[0] or "model_keras" not in results[0]:
        raise WorkerLostError("Horovod rank 0 returned no model")
    return results
