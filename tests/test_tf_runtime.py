"""The one TensorFlow runtime module: threads, model bytes, and the per-worker model cache."""
import hashlib

import numpy as np

from pipelines.core import tf_runtime
from pipelines.core.tf_runtime import (
    ModelCache,
    load_model_bytes,
    model_to_bytes,
    traced_model_call,
)


def test_cache_keeps_the_most_recent_entries_and_builds_each_once():
    cache, built = ModelCache(max_entries=2), []

    def build(name):
        return lambda: built.append(name) or name

    assert cache.get("a", build("a")) == "a" and cache.get("b", build("b")) == "b"
    assert cache.get("a", build("a")) == "a"                  # cached: not built again, and now most recent
    cache.get("c", build("c"))                                # evicts b, the least recently used
    assert built == ["a", "b", "c"] and cache.keys() == [("/CPU:0", "a"), ("/CPU:0", "c")]   # keyed by device too


def _tiny_model():
    import tensorflow as tf
    inputs = tf.keras.Input((4, 4, 1))
    outputs = tf.keras.layers.Dense(3, activation="softmax")(tf.keras.layers.Flatten()(inputs))
    return tf.keras.Model(inputs, outputs)


def test_model_bytes_round_trip_and_one_traced_call_per_digest_and_kind():
    tf_runtime.MODELS.clear()
    model = _tiny_model()
    data = model_to_bytes(model)
    x = np.random.default_rng(0).random((2, 4, 4, 1), dtype=np.float32)
    np.testing.assert_allclose(load_model_bytes(data)(x).numpy(), model(x).numpy(), rtol=1e-6)

    reads = []
    digest = hashlib.sha256(data).hexdigest()
    first = traced_model_call(lambda: reads.append(1) or data, digest, threads=1)
    again = traced_model_call(lambda: reads.append(1) or data, digest, threads=1)
    assert first is again and len(reads) == 1                 # the bytes are read once per worker
    other = traced_model_call(lambda: data, digest, threads=1, convert=lambda m: m, kind="converted")
    assert other is not first and set(tf_runtime.MODELS.keys()) == {("/CPU:0", ("keras", digest)), ("/CPU:0", ("converted", digest))}
    np.testing.assert_allclose(first(x).numpy(), model(x).numpy(), rtol=1e-6)
    assert tf_runtime.configure_threads(1) >= 1               # TF already running: the setting in force
