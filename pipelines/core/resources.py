"""GPUs on the driver side: the `resources` section, the Spark settings it implies, and the checks that
fail fast before any Spark job starts.

Spark schedules GPUs per task (`spark.task.resource.gpu.amount`) out of what each executor was
given (`spark.executor.resource.gpu.amount`, found on the node by a discovery script): the
addresses a task got are in its TaskContext.  What a task then does with them (which GPU
TensorFlow may see) is executor code: pipelines/core/tf_runtime.py.  The amounts are settings of
the whole Spark application, so the section is one for every stage of a job.

Spark's local mode never offers GPUs to tasks (a task asking for one waits forever), so GPUs
need a cluster manager: standalone, YARN or Kubernetes.
"""
from __future__ import annotations

import importlib.metadata
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

from pipelines.core.config import ConfigError, setting
from pipelines.core.errors import EXIT_RETRY, SparkcnnError

TASK_GPUS = "spark.task.resource.gpu.amount"
EXECUTOR_GPUS = "spark.executor.resource.gpu.amount"
DISCOVERY = "spark.executor.resource.gpu.discoveryScript"
# Spark hands executorEnv to every Python worker; the workers' checks read it (tf_runtime.REQUIRE_GPU_ENV).
REQUIRE_ENV_CONF = "spark.executorEnv.SPARKCNN_REQUIRE_GPU"


class GpuError(SparkcnnError, RuntimeError):
    """GPUs were asked for and Spark or TensorFlow cannot give them; the message says which and why."""


class GpuUnavailableError(GpuError):
    """GPUs are configured but no executor offers one (yet): the cluster's state, worth retrying."""
    exit_code = EXIT_RETRY


@dataclass(frozen=True)
class ResourcesSection:
    gpus_per_task: float = setting(0.0, min=0.0, doc=(
        "GPUs per Spark task (spark.task.resource.gpu.amount): 0 = CPU only; 1 = one GPU per task and per "
        "Horovod rank; a fraction such as 0.5 lets scoring tasks share a GPU"))
    gpus_per_executor: Optional[int] = setting(None, min=1, doc=(
        "GPUs each executor asks for (spark.executor.resource.gpu.amount); default 1 when gpus_per_task > 0"))
    discovery_script: Optional[str] = setting(None, doc=(
        "spark.executor.resource.gpu.discoveryScript for YARN and Kubernetes (a path on every node, e.g. "
        "scripts/gpu_discovery.sh shipped with --files); standalone workers find their GPUs themselves"))
    require_gpu: bool = setting(False, doc=(
        "fail fast, before any Spark job, unless Spark schedules GPUs and this TensorFlow can use them; "
        "a task whose TensorFlow sees no GPU fails too"))

    def check(self, where: str) -> None:
        g = self.gpus_per_task
        if g > 1 and g != int(g):
            raise ConfigError(f"{where}.gpus_per_task: {g:g} — Spark takes fractions below 1 (tasks sharing a "
                              "GPU) or whole numbers")
        if self.require_gpu and g == 0:
            raise ConfigError(f"{where}.require_gpu: true needs resources.gpus_per_task > 0 (e.g. 1)")
        if self.gpus_per_executor is not None and g > self.gpus_per_executor:
            raise ConfigError(f"{where}.gpus_per_task {g:g} is more than resources.gpus_per_executor "
                              f"{self.gpus_per_executor}: no task could ever be scheduled")

    @property
    def wants_gpus(self) -> bool:
        return self.gpus_per_task > 0


def spark_defaults(section: ResourcesSection) -> dict:
    """The Spark settings the section implies; settings already given (spark-submit --conf, spark.conf) win."""
    if not section.wants_gpus:
        return {}
    g = section.gpus_per_task
    out = {TASK_GPUS: f"{g:g}", EXECUTOR_GPUS: str(section.gpus_per_executor or max(1, math.ceil(g)))}
    if section.discovery_script:
        out[DISCOVERY] = section.discovery_script
    if section.require_gpu:
        out[REQUIRE_ENV_CONF] = "1"
    return out


def _tensorflow_flavour() -> str:
    """'tensorflow-cpu' when only the CPU wheel is installed here, else the installed distribution's name."""
    for name in ("tensorflow", "tensorflow-gpu", "tensorflow-cpu"):
        try:
            importlib.metadata.version(name)
            return name
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def check_before_start(section: ResourcesSection, master: str, executors_python: Optional[str] = None) -> None:
    """What can be known before Spark starts: GPUs asked for in local mode, and require_gpu with a CPU-only TF."""
    if not section.wants_gpus:
        return
    if master.startswith("local"):
        raise GpuError(f"resources.gpus_per_task={section.gpus_per_task:g} but Spark's master is {master}: local "
                       "mode never gives GPUs to tasks (they would wait forever); use a standalone, YARN or "
                       "Kubernetes master, or resources.gpus_per_task=0")
    same_python = executors_python in (None, "", sys.executable)
    if section.require_gpu and same_python and _tensorflow_flavour() == "tensorflow-cpu":
        raise GpuError("resources.require_gpu is true but this Python (the executors' too: spark.pyspark.python) "
                       f"has tensorflow-cpu {importlib.metadata.version('tensorflow-cpu')}, which cannot use a GPU; "
                       "install the GPU build with `make install GPU=1`")


def check_session(spark, section: ResourcesSection) -> None:
    """The running application must schedule what the section asks for (a submit flag may have said otherwise)."""
    if task_gpus(spark) != section.gpus_per_task:
        if not section.wants_gpus:
            return          # GPUs given at spark-submit only: tasks still use what they are assigned
        raise GpuError(f"resources.gpus_per_task={section.gpus_per_task:g} but the running Spark application has "
                       f"{TASK_GPUS}={spark.sparkContext.getConf().get(TASK_GPUS, 'unset')}; set one or the "
                       "other, not both differently")
    if section.require_gpu and not gpu_task_slots(spark, wait_seconds=60):
        raise GpuUnavailableError("resources.require_gpu is true but no executor of this application offers a GPU "
                       f"(executors: {executor_summary(spark) or 'none registered'}); check the workers' GPU "
                       f"discovery ({EXECUTOR_GPUS}, spark.worker.resource.gpu.*)")


def _executors(spark) -> list:
    """(id, cores, gpu addresses) of the live executors, from Spark's status store (what the UI shows)."""
    sc = spark.sparkContext
    jvm = sc._jvm
    listed = jvm.scala.collection.JavaConverters.seqAsJavaList(sc._jsc.sc().statusStore().executorList(True))
    out = []
    for e in listed:
        if e.id() == "driver":
            continue
        res = e.resources()
        gpu = res.get("gpu")
        addresses = list(gpu.get().addresses()) if gpu.isDefined() else []
        out.append((e.id(), int(e.totalCores()), addresses))
    return out


def executor_summary(spark) -> str:
    return ", ".join(f"{i}: {c} cores, GPUs {a or 'none'}" for i, c, a in _executors(spark))


def gpu_task_slots(spark, wait_seconds: float = 0.0, wanted: int = 1, settle_seconds: float = 0.0) -> int:
    """Tasks that can run at once when each takes spark.task.resource.gpu.amount GPUs (and spark.task.cpus cores).

    Executors register after the application starts: wait up to `wait_seconds` for `wanted`
    slots, then (settle_seconds > 0) until the count has not grown for that long.
    """
    per_task = task_gpus(spark)
    if per_task <= 0:
        return 0
    cpus = max(1, int(spark.sparkContext.getConf().get("spark.task.cpus", "1")))

    def count() -> int:
        return sum(min(cores // cpus, int(len(gpus) / per_task + 1e-9)) for _, cores, gpus in _executors(spark))
    return settled(count, wait_seconds, wanted, settle_seconds)


def settled(count, wait_seconds: float, wanted: int, settle_seconds: float) -> int:
    """count() once it reaches `wanted` and then stops growing for `settle_seconds` (within wait_seconds)."""
    deadline = time.monotonic() + wait_seconds
    slots, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        if slots >= wanted and time.monotonic() - since >= settle_seconds:
            break
        time.sleep(0.5)
        now = count()
        if now != slots:
            slots, since = now, time.monotonic()
    return slots


def task_gpus(spark) -> float:
    """spark.task.resource.gpu.amount of the running application (0: tasks get no GPU)."""
    return float(spark.sparkContext.getConf().get(TASK_GPUS, "0"))


def executors_python(spark_conf: Optional[dict]) -> Optional[str]:
    """The interpreter the executors run, if the conf names one (else PYSPARK_PYTHON, this one by default)."""
    return (spark_conf or {}).get("spark.pyspark.python") or os.environ.get("PYSPARK_PYTHON")
