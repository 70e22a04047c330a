"""Building the SparkSession the way every sparkcnn job needs it.

Settings that only work before the JVM starts (driver memory, the Python the
workers run) are applied here, once, so no job forgets them.  Under
spark-submit the session already exists and the submit flags win; this
function then only adds the SQL settings that can change at run time.
"""
from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from pipelines.core.sections import SparkSection

# Arrow batches of this many rows feed mapInArrow (ingest, scoring).
ARROW_BATCH_ROWS = 4096


def is_local_master(master: str) -> bool:
    return master.startswith("local")


def build_spark(conf: SparkSection) -> SparkSession:
    # Workers must run this interpreter (the venv), or they import a different stack.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TF's INFO banners, once per worker process
    active = SparkSession.getActiveSession()
    # spark-submit starts the JVM first and hands its port to this process; its
    # --master / --driver-memory must then win over the conf file.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
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
        "spark.ui.showConsoleProgress": "true",
        # Horovod needs all its tasks running at once; never let a task wait for a locality slot.
        "spark.locality.wait": "0s",
    }
    settings.update(conf.conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = active or builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARKCNN_SPARK_LOG_LEVEL", "WARN"))
    return spark


def total_cores(spark: SparkSession) -> int:
    return int(spark.sparkContext.defaultParallelism)
