"""Executor side of scoring: model loaded once per Python worker, applied to whole Arrow batches.

Spark reuses Python workers (spark.python.worker.reuse), so a module-level
cache keyed by the model's digest keeps one loaded model per worker across
all its tasks.  Images are decoded as a zero-copy view of the Arrow buffer
and run through a traced model call in fixed-size chunks, avoiding the
per-call set-up of `model.predict` and any per-row Python.
"""
from __future__ import annotations

import os
import tempfile
from typing import Iterator

import numpy as np
import pyarrow as pa

from . import records

PREDICTION = "prediction"
PROBABILITIES = "probabilities"
PREDICTIONS_DDL = "id LONG, label INT, prediction INT, probabilities ARRAY<FLOAT>"

_LOADED: dict = {}


def load_model_bytes(model_bytes: bytes):
    """Keras safe mode: a model file cannot run arbitrary code when loaded."""
    import tensorflow as tf
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        with open(path, "wb") as f:
            f.write(model_bytes)
        return tf.keras.models.load_model(path, compile=False, safe_mode=True)


def model_to_bytes(model) -> bytes:
    """The model in Keras format as bytes (what load_model_bytes reads back)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def cached_model_call(cache: dict, model_bc, digest: str, threads: int, convert=None):
    """One traced model call per Python worker, keyed by the model bytes' digest.

    `convert` turns the loaded model into the one to run (e.g. its fully-convolutional form).
    A new digest (a new run's model) replaces the cached one.
    """
    if digest not in cache:
        import tensorflow as tf
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TF already initialised in this worker by an earlier model; keep its setting
        model = load_model_bytes(model_bc.value)
        if convert is not None:
            model = convert(model)
        cache.clear()
        cache[digest] = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return cache[digest]


def score_batches(model_bc, digest: str, shape: tuple, batch_size: int, threads: int,
                  batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    predict = cached_model_call(_LOADED, model_bc, digest, threads)
    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        images = records.decode_images(batch.column(records.IMAGE), shape)
        probs = np.concatenate([predict(images[i:i + batch_size]).numpy() for i in range(0, n, batch_size)])
        probs = probs.astype(np.float32, copy=False)
        k = probs.shape[1]
        offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
        yield pa.RecordBatch.from_arrays(
            [batch.column(records.ID), batch.column(records.LABEL),
             pa.array(probs.argmax(axis=1).astype(np.int32)),
             pa.ListArray.from_arrays(offsets, pa.array(probs.reshape(-1)))],
            names=[records.ID, records.LABEL, PREDICTION, PROBABILITIES],
        )
