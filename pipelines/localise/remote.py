"""Executor side of localisation: the fully-convolutional model built once per worker, run over whole canvases.

The classifier travels as a broadcast of its .keras bytes (as in scoring);
each Python worker converts it to its fully-convolutional form once (cached
by the classifier's digest) and maps Arrow batches of composite canvases to
per-class probability maps.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

from pipelines.core import records, storage
from pipelines.core.tf_runtime import (
    configure_threads,
    load_model_bytes,
    traced_model_call,
)
from pipelines.localise.fcn_model import equivalence, to_fully_convolutional
from pipelines.training.trial_remote import load_split

HEATMAP = "heatmap"          # float32 bytes, (heat_height, heat_width, classes) row-major
HEAT_HEIGHT = "heat_height"
HEAT_WIDTH = "heat_width"
HEATMAPS_DDL = f"{records.ID} LONG, {HEAT_HEIGHT} INT, {HEAT_WIDTH} INT, {HEATMAP} BINARY"
CANVAS_DDL = f"{records.ID} LONG, {records.HEIGHT} INT, {records.WIDTH} INT, {records.CHANNELS} INT, {records.IMAGE} BINARY"

def _fcn(model_bc, digest: str, threads: int):
    return traced_model_call(lambda: model_bc.value, digest, threads, convert=to_fully_convolutional, kind="fcn")


def heatmap_batches(model_bc, digest: str, threads: int, batch_size: int,
                    batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    fcn = _fcn(model_bc, digest, threads)
    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        h = batch.column(records.HEIGHT)[0].as_py()
        w = batch.column(records.WIDTH)[0].as_py()
        c = batch.column(records.CHANNELS)[0].as_py()
        canvases = records.decode_images(batch.column(records.IMAGE), (h, w, c))
        heat = np.concatenate([fcn(canvases[i:i + batch_size]).numpy() for i in range(0, n, batch_size)])
        heat = np.ascontiguousarray(heat, dtype=np.float32)
        yield pa.RecordBatch.from_arrays(
            [batch.column(records.ID), pa.array(np.full(n, heat.shape[1], np.int32)),
             pa.array(np.full(n, heat.shape[2], np.int32)), pa.array([m.tobytes() for m in heat], pa.binary())],
            names=[records.ID, HEAT_HEIGHT, HEAT_WIDTH, HEATMAP])


def check_equivalence(model_bytes: bytes, test_path: str, shape: tuple, threads: int,
                      context: storage.StorageContext = None) -> dict:
    """Classifier vs its fully-convolutional form on every row of a split (runs inside one Spark task;
    `context`: the driver's storage context, for a split on a remote store)."""
    configure_threads(threads)
    model = load_model_bytes(model_bytes)
    with storage.using(context):
        images, _ = load_split(test_path, shape)
    return equivalence(model, to_fully_convolutional(model), images)
