"""TensorFlow inside Spark tasks and Horovod workers: devices, threads, model bytes, one model cache per worker.

Every executor-side module that runs TensorFlow (training, scoring, featurizing, experiment
trials, localisation) goes through here, so that which GPU a process may see, how many cores
TF takes, how a model travels as bytes and how long a loaded model stays in a reused Python
worker are decided in one place.

Devices: Spark gives each task GPU addresses (TaskContext.resources(), when the application
sets spark.task.resource.gpu.amount; pipelines/core/resources.py).  The process makes exactly
those GPUs visible (CUDA_VISIBLE_DEVICES) before TensorFlow starts, so two tasks or Horovod
ranks on one host never share or grab each other's GPUs, and turns on memory growth.  A
process is placed once: TensorFlow cannot change its devices after it starts, so a reused
Python worker keeps the GPU of its first task (with one GPU per executor, the usual layout,
that is every task's GPU; otherwise the mismatch is logged).

TensorFlow is imported inside the functions: driver code imports this module without
loading TF.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Callable, Hashable, Optional

from pipelines.core.errors import RetryableError
from pipelines.core.log_output import executor_lines

# Set (to 1) in every executor's environment by resources.require_gpu (spark.executorEnv.*).
REQUIRE_GPU_ENV = "SPARKCNN_REQUIRE_GPU"
# TensorFlow's C++ log threshold, read once when TF starts in a process: the driver sets it in its own
# environment, executors get it through Spark's executorEnv and Horovod ranks through their launch.
TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
TF_LOG_LEVEL_CONF = "spark.executorEnv." + TF_LOG_LEVEL_ENV

logger = logging.getLogger("sparkcnn.core")


def tf_log_level(verbose: bool) -> str:
    """run.verbose as TF's threshold: 0 shows its INFO lines (banners, per-process device and thread
    set-up), 1 only warnings and errors."""
    return "0" if verbose else "1"


class NoGpuError(RetryableError, RuntimeError):
    """resources.require_gpu is true and this task's TensorFlow sees no GPU."""


@dataclass(frozen=True)
class Placement:
    """Where this process runs TensorFlow, and why: recorded per Horovod rank, logged per Python worker."""
    who: str                      # "rank 1", "task 3 (stage 2)"
    assigned: tuple = ()          # the GPU addresses Spark gave (or the local-rank fallback's index)
    source: str = ""              # "spark", "local rank" or "" (no GPU asked for or found)
    visible: Optional[str] = None  # CUDA_VISIBLE_DEVICES as this process set it (None: left alone)
    tf_gpus: int = 0              # GPUs TensorFlow sees after placing

    @property
    def device(self) -> str:
        return "/GPU:0" if self.tf_gpus else "/CPU:0"

    def line(self) -> str:
        how = f"CUDA_VISIBLE_DEVICES={self.visible}" if self.visible is not None else "set_visible_devices"
        where = (f"TensorFlow sees {self.tf_gpus} GPU(s)" if self.tf_gpus else
                 "TensorFlow sees no GPU device, so it runs on the CPU")
        via = "" if self.source == "spark" else f", by {self.source}: Spark assigned none"
        return f"[gpu] {self.who} -> GPU {','.join(self.assigned)} ({how}{via}; {where})"

    def as_dict(self) -> dict:
        return {**asdict(self), "assigned": list(self.assigned), "device": self.device}


_PLACED: Optional[Placement] = None
_MISMATCHES_LOGGED: set = set()


def _visible_gpus(tf) -> list:
    """The GPUs TensorFlow sees, memory growth on (a process takes what it uses, not the whole card)."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):
            pass   # already initialised in this process: its setting stays
    return gpus


def _require(placement: Placement) -> Placement:
    if os.environ.get(REQUIRE_GPU_ENV) == "1" and not placement.tf_gpus:
        raise NoGpuError(f"{placement.who}: resources.require_gpu is true but TensorFlow sees no GPU "
                         f"(Spark assigned {','.join(placement.assigned) or 'none'}; "
                         f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}; "
                         "a tensorflow-cpu install or a missing CUDA driver?)")
    return placement


def place(who: str, assigned=(), fallback_index: Optional[int] = None) -> Placement:
    """Make exactly the `assigned` GPUs visible, before TensorFlow starts in this process; once per process.

    `fallback_index` (a Horovod rank's local rank): when Spark assigned no GPU but the host has
    GPUs, see only that one (what Horovod's own Spark estimator does).  Logs one line when a GPU
    is involved.  Later calls return the first placement; a different assignment is logged once.
    """
    global _PLACED
    assigned = tuple(str(a) for a in assigned)
    if _PLACED is not None:
        if assigned and assigned != _PLACED.assigned and assigned not in _MISMATCHES_LOGGED:
            _MISMATCHES_LOGGED.add(assigned)
            logger.warning(f"[gpu] {who} was assigned GPU {','.join(assigned)} but this Python worker was placed "
                           f"on GPU {','.join(_PLACED.assigned) or 'none'} when TensorFlow started, and stays there "
                           "(one GPU per executor avoids this)")
        return _PLACED
    visible = None
    if assigned:
        visible = ",".join(assigned)
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    import tensorflow as tf
    gpus = _visible_gpus(tf)
    source = "spark" if assigned else ""
    if not assigned and gpus and fallback_index is not None:
        index = fallback_index % len(gpus)
        try:
            tf.config.set_visible_devices([gpus[index]], "GPU")
            gpus, assigned, source = [gpus[index]], (str(index),), "local rank"
        except RuntimeError:
            pass   # TensorFlow already started: it keeps every GPU
    _PLACED = Placement(who=who, assigned=assigned, source=source, visible=visible, tf_gpus=len(gpus))
    if assigned:
        logger.info(_PLACED.line())
    return _require(_PLACED)


def place_task() -> Placement:
    """place() for the Spark task running in this Python worker (scoring, featurizing, trials, localisation),
    on the GPU addresses Spark assigned it (none outside a task or without GPU scheduling).  Its line goes
    to the executor's log."""
    from pyspark import TaskContext
    ctx = TaskContext.get()
    if ctx is None:
        return place("driver", ())
    executor_lines()
    gpu = ctx.resources().get("gpu")
    who = f"task {ctx.taskAttemptId()} (stage {ctx.stageId()}, partition {ctx.partitionId()})"
    return place(who, tuple(gpu.addresses) if gpu is not None else ())


def configure_threads(threads: int, inter_op: int = 1) -> int:
    """Give TF `threads` intra-op threads (and `inter_op` inter-op threads); returns the setting in force.

    TF accepts the setting only before its runtime initialises.  A reused Python worker that
    already ran TF keeps the setting it started with (the same task slot, so the same
    cores); that is not an error, and the value in force is returned so callers can log it.
    The process is placed on its task's GPU first (place_task), since that too must precede TF.
    """
    if _PLACED is None:
        place_task()
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op))
    except RuntimeError:
        pass  # already initialised in this process
    return tf.config.threading.get_intra_op_parallelism_threads() or int(threads)


def threads_per_task(spark) -> int:
    """A Spark task owns spark.task.cpus cores; TF in that task should use exactly those (driver side)."""
    return max(1, int(spark.conf.get("spark.task.cpus", "1")))


def cores_per_local_worker(local_workers: int) -> int:
    """The host's cores split between the workers on it, so that they do not oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // max(1, int(local_workers)))


def load_model_bytes(model_bytes: bytes, suffix: str = ".keras"):
    """A model file's bytes as a model: a .keras file in Keras safe mode (loading cannot run arbitrary
    code); an .h5/.hdf5 file (`suffix`: Keras picks its loader by it) has no safe mode."""
    import tensorflow as tf
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model" + suffix)
        with open(path, "wb") as f:
            f.write(model_bytes)
        if suffix == ".keras":
            return tf.keras.models.load_model(path, compile=False, safe_mode=True)
        return tf.keras.models.load_model(path, compile=False)


def model_to_bytes(model) -> bytes:
    """The model in Keras format as bytes (what load_model_bytes reads back)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


class ModelCache:
    """Loaded models kept across the tasks a reused Python worker runs (spark.python.worker.reuse).

    Keyed by what identifies the model (the digest of its bytes, or a registry name, weights
    and output) plus how it is run, and by the device it was built on (the worker's placement);
    at most `max_entries` are held, the least recently used leaving first, so a worker that
    moves on to a new run's model frees the old one.
    """

    def __init__(self, max_entries: int = 2):
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], object]):
        device = (_PLACED or place_task()).device
        key = (device, key)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        import tensorflow as tf
        with tf.device(device):
            value = build()
        self._entries[key] = value
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def keys(self) -> list:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()


# The one cache of this Python worker: scoring, localisation and the featurizers share it.
# Two entries: a featurizer and a predictor in one Spark ML pipeline alternate in one worker.
MODELS = ModelCache(max_entries=2)


def traced_model_call(model_bytes_fn: Callable[[], bytes], digest: str, threads: int, convert=None,
                      kind: str = "keras"):
    """One traced `model(x, training=False)` per worker for the model whose bytes have `digest`.

    `model_bytes_fn` is called only when the model is not cached (a broadcast's `.value`
    costs a deserialisation); `convert` turns the loaded model into the one to run (its
    fully-convolutional form, say) and `kind` names that form in the cache key.
    """
    def build():
        import tensorflow as tf
        configure_threads(threads)
        model = load_model_bytes(model_bytes_fn())
        if convert is not None:
            model = convert(model)
        return tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return MODELS.get((kind, digest), build)
