"""Executor side of scoring: model loaded once per Python worker, applied to whole Arrow batches.

Spark reuses Python workers (spark.python.worker.reuse), so the worker's model
cache (pipelines.core.tf_runtime), keyed by the model's digest, keeps one loaded
model per worker across all its tasks.  Images are decoded as a zero-copy view of the Arrow buffer
and run through a traced model call in fixed-size chunks, avoiding the
per-call set-up of `model.predict` and any per-row Python.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

from pipelines.core import records
from pipelines.core.tf_runtime import traced_model_call


def score_batches(model_bc, digest: str, shape: tuple, batch_size: int, threads: int,
                  batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    predict = traced_model_call(lambda: model_bc.value, digest, threads)
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
            names=[records.ID, records.LABEL, records.PREDICTION, records.PROBABILITIES],
        )
