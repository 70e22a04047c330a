"""TensorFlow inside Spark tasks and Horovod workers: threads, model bytes, one model cache per worker.

Every executor-side module that runs TensorFlow (training, scoring, featurizing, experiment
trials, localisation) goes through here, so that how many cores TF takes, how a model
travels as bytes and how long a loaded model stays in a reused Python worker are decided
in one place.  (Device pinning for GPU executors belongs here too.)

TensorFlow is imported inside the functions: driver code imports this module without
loading TF.
"""
from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from typing import Callable, Hashable


def configure_threads(threads: int, inter_op: int = 1) -> int:
    """Give TF `threads` intra-op threads (and `inter_op` inter-op threads); returns the setting in force.

    TF accepts the setting only before its runtime initialises.  A reused Python worker that
    already ran TF keeps the setting it started with (the same task slot, so the same
    cores); that is not an error, and the value in force is returned so callers can log it.
    """
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
    and output) plus how it is run; at most `max_entries` are held, the least recently used
    leaving first, so a worker that moves on to a new run's model frees the old one.
    """

    def __init__(self, max_entries: int = 2):
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], object]):
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
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
