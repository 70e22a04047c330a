"""Building the SparkSession the way every sparkcnn job needs it.

Settings that only work before the JVM starts (driver memory, the Python the
workers run) are applied here, once, so no job forgets them.  Under
spark-submit the submit flags win over the conf file's master and driver memory.
When a SparkSession is already running in this process (a notebook, a test, a
second command in one driver), only the settings Spark can still change (runtime
SQL settings) are applied to it; every other one that differs is named in one
line saying it was not applied, never dropped silently.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from pyspark.sql import SparkSession

from pipelines.core import resources as gpu_resources
from pipelines.core.arrow_batches import ARROW_BATCH_ROWS
from pipelines.core.sections import SparkSection
from pipelines.core.tf_runtime import TF_LOG_LEVEL_CONF, TF_LOG_LEVEL_ENV, tf_log_level

logger = logging.getLogger("sparkcnn.core")


def is_local_master(master: str) -> bool:
    return master.startswith("local")


def _submitted_conf() -> dict:
    """The settings spark-submit gave the JVM it started for this process (--conf, spark-defaults.conf)."""
    from pyspark import SparkConf, SparkContext
    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


def build_spark(conf: SparkSection, resources: Optional[gpu_resources.ResourcesSection] = None,
                verbose: bool = False) -> SparkSession:
    """The session a job runs in; `verbose` (run.verbose) lets TensorFlow's INFO lines through everywhere."""
    # Workers must run this interpreter (the venv), or they import a different stack.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    _set_tf_log_level(verbose)
    active = SparkSession.getActiveSession()
    # spark-submit starts the JVM first and hands its port to this process; its
    # --master / --driver-memory must then win over the conf file.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    resources = resources or gpu_resources.ResourcesSection()
    presets = _submitted_conf() if submitted and active is None and resources.wants_gpus else {}
    # the master the session will have: a running one's, else spark-submit's, else the conf file's
    master = active.sparkContext.master if active is not None else presets.get("spark.master", conf.master)
    gpu_resources.check_before_start(resources, master,
                                     gpu_resources.executors_python({**presets, **(conf.conf or {})}))
    if is_local_master(conf.master) and not submitted:
        # Local runs stay on loopback: no firewall prompts, no surprises on VPNs.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(conf.app_name)
    if not submitted:
        builder = builder.master(conf.master).config("spark.driver.memory", conf.driver_memory)
    settings = {
        # Reused Python workers keep the model loaded across tasks (a reload per task measured 0.1x).
        "spark.python.worker.reuse": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH_ROWS),
        "spark.sql.shuffle.partitions": "8",
        # Spark's bar redraws one terminal line: in a log file it is a smear of "[Stage 0:>" fragments that
        # can even land after the command's one error line.  Logs get core/progress.py's lines instead.
        "spark.ui.showConsoleProgress": "true" if sys.stderr.isatty() else "false",
        # Horovod needs all its tasks running at once; never let a task wait for a locality slot.
        "spark.locality.wait": "0s",
    }
    if active is None or verbose:
        # TF's threshold as this process has it: local executors inherit it anyway, a cluster's do not.  A
        # running session's executors keep theirs (said below only when verbose asked for another).
        settings[TF_LOG_LEVEL_CONF] = os.environ[TF_LOG_LEVEL_ENV]
    # GPU amounts are defaults: what spark-submit --conf already says wins (then checked below).
    settings.update({k: v for k, v in gpu_resources.spark_defaults(resources).items() if k not in presets})
    settings.update(conf.conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    if active is not None:
        _apply_to_running(active, conf, settings, submitted)
        spark = active
    else:
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARKCNN_SPARK_LOG_LEVEL", "WARN"))
    if resources.wants_gpus or gpu_resources.task_gpus(spark):
        gpu_resources.check_session(spark, resources)
    return spark


def _set_tf_log_level(verbose: bool) -> None:
    """TensorFlow's C++ log threshold for this process and (through the environment it passes on) its
    local executors: verbose shows TF's INFO lines; otherwise a threshold already in the environment
    stays, and TF's INFO lines (banners, once per worker process) are hidden."""
    if verbose:
        os.environ[TF_LOG_LEVEL_ENV] = tf_log_level(verbose)
    else:
        os.environ.setdefault(TF_LOG_LEVEL_ENV, tf_log_level(verbose))


def _apply_to_running(spark: SparkSession, conf: SparkSection, settings: dict, submitted: bool) -> None:
    """Set what a running session still accepts; name, in one line, what it cannot take any more."""
    not_applied = []
    if not submitted and spark.sparkContext.master != conf.master:
        not_applied.append(f"master={conf.master} (running: {spark.sparkContext.master})")
    for key, value in settings.items():
        current = spark.conf.get(key, None)
        if current == str(value):
            continue
        if spark.conf.isModifiable(key):
            spark.conf.set(key, value)
        else:
            not_applied.append(f"{key}={value} (running: {current})")
    if not_applied:
        logger.warning("[spark] a SparkSession was already running, so these settings were not applied "
                       f"(set them before it starts, e.g. with spark-submit --conf): {', '.join(not_applied)}")


def total_cores(spark: SparkSession) -> int:
    return int(spark.sparkContext.defaultParallelism)
