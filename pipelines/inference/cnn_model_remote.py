"""Executor side of CNNModel: Arrow batches in, the same batches plus prediction columns out.

Rows are decoded one by one (PIL, pipelines.images.pixels) into a preallocated uint8 array of
`batch_size` images and run through the worker's cached network (pipelines.inference.network) in
one call, so memory stays at one Arrow batch of inputs plus one model batch of pixels whatever
the partition holds.  A row that cannot be decoded keeps its place: its prediction columns are null
and the error column says why, so a caller can route it to a rejects table without losing it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa

from pipelines.core import records
from pipelines.core.worker_remote import tune_worker
from pipelines.images import pixels
from pipelines.images.decode import Reject
from pipelines.images.image_struct import CHANNELS, DATA, HEIGHT, WIDTH
from pipelines.inference.network import NetworkSpec, load_network

ENCODED, STRUCT, RECORD = "encoded", "struct", "record"   # the input forms (see CNNModel.inputCol)
TOP_K_FIELDS = ("classIndex", "className", "probability")


@dataclass(frozen=True)
class Columns:
    """Which input column holds the images (and in what form), and the names of the added columns ("" = not added)."""
    input: str
    form: str
    height: str = ""         # RECORD: the row's height/width/channels columns
    width: str = ""
    channels: str = ""
    prediction: str = "prediction"
    top_k: str = "top_k"
    probabilities: str = ""
    embedding: str = ""
    error: str = "error"
    image_height: str = ""   # height/width of the image as stored (before fitting it to the network)
    image_width: str = ""
    keep: Optional[tuple] = None   # input columns passed through (None: all of them, as a Transformer does)

    def added(self):
        return [name for name in (self.prediction, self.top_k, self.probabilities, self.embedding,
                                  self.error, self.image_height, self.image_width) if name]


def _records_as_is(batch: pa.RecordBatch, cols: Columns, spec: NetworkSpec):
    """Record rows already at the network's shape (a sparkcnn dataset scored by its own model): one
    zero-copy view of the Arrow buffer instead of a PIL round trip per row; None when any row differs."""
    if cols.form != RECORD:
        return None
    column = batch.column(batch.schema.get_field_index(cols.input))
    if column.null_count:
        return None
    for name, want in ((cols.height, spec.height), (cols.width, spec.width), (cols.channels, spec.channels)):
        values = batch.column(batch.schema.get_field_index(name))
        if values.null_count or not np.all(values.to_numpy(zero_copy_only=False) == want):
            return None
    return records.decode_images(column, spec.size + (spec.channels,))


def decode_rows(batch: pa.RecordBatch, cols: Columns, spec: NetworkSpec, max_pixels: int):
    """The input column decoded for the network: what stack_decoded returns."""
    n = batch.num_rows
    same = _records_as_is(batch, cols, spec)
    if same is not None:
        return same, list(range(n)), [spec.size] * n, [None] * n
    column = batch.column(batch.schema.get_field_index(cols.input))
    if cols.form == STRUCT:
        fields = {name: column.field(name).to_pylist() for name in (HEIGHT, WIDTH, CHANNELS)}
        data = column.field(DATA)
    elif cols.form == RECORD:
        fields = {HEIGHT: batch.column(batch.schema.get_field_index(cols.height)).to_pylist(),
                  WIDTH: batch.column(batch.schema.get_field_index(cols.width)).to_pylist(),
                  CHANNELS: batch.column(batch.schema.get_field_index(cols.channels)).to_pylist()}
        data = column
    else:
        data = column
    results = []
    for i in range(n):
        value = data[i].as_py() if data[i].is_valid else None
        try:
            if value is None:
                raise Reject("no image (null)")
            if cols.form == ENCODED:
                results.append(pixels.from_encoded(value, spec, max_pixels))
            else:
                h, w, c = (fields[k][i] or 0 for k in (HEIGHT, WIDTH, CHANNELS))
                results.append(pixels.from_pixels(value, h, w, c, cols.form == STRUCT, spec, max_pixels))
        except Reject as exc:
            results.append(str(exc))
    return stack_decoded(results, spec)


def _list_column(n: int, rows: list, values: pa.Array, width: int) -> pa.Array:
    """A list column with `width` values for each row in `rows` (in order) and null elsewhere."""
    offsets = [None] * (n + 1)
    position = 0
    present = set(rows)
    for i in range(n):
        offsets[i] = position if i in present else None
        if i in present:
            position += width
    offsets[n] = position
    # a null offset marks a null list; the last offset must be valid
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def top_k_arrays(probs: np.ndarray, k: int):
    """(indices (N, k), probabilities (N, k)) of the k most likely classes, best first."""
    k = min(k, probs.shape[1])
    if k == probs.shape[1]:
        best = np.argsort(-probs, axis=1, kind="stable")
    else:
        part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(probs, part, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(part, order, axis=1)
    return best.astype(np.int32), np.take_along_axis(probs, best, axis=1).astype(np.float32)


def top_k_column(n: int, ok: list, probs: Optional[np.ndarray], k: int, class_names) -> pa.Array:
    """The top_k column of n rows: (classIndex, className, probability) best first for the rows in `ok`
    (whose probabilities `probs` holds, in order), null for the others; names null where unknown."""
    num_classes = probs.shape[1] if probs is not None and len(ok) else 0
    kk = min(k, num_classes)
    if kk:
        index, probability = top_k_arrays(probs, kk)
    else:
        index, probability = np.zeros((0, 0), np.int32), np.zeros((0, 0), np.float32)
    names = [class_names[j] if class_names and j < len(class_names) else None for j in index.reshape(-1)]
    values = pa.StructArray.from_arrays(
        [pa.array(index.reshape(-1), pa.int32()), pa.array(names, pa.string()),
         pa.array(probability.reshape(-1), pa.float32())], names=list(TOP_K_FIELDS))
    return _list_column(n, ok, values, kk)


def _outputs(n: int, ok: list, probs: Optional[np.ndarray], embeddings, sizes, errors,
             cols: Columns, k: int, class_names) -> dict:
    arrays = {}
    num_classes = probs.shape[1] if probs is not None and len(ok) else 0
    if cols.prediction:
        prediction = np.zeros(n, np.int32)
        mask = np.ones(n, bool)
        if len(ok):
            prediction[ok] = probs.argmax(axis=1)
            mask[ok] = False
        arrays[cols.prediction] = pa.array(prediction, pa.int32(), mask=mask)
    if cols.top_k:
        arrays[cols.top_k] = top_k_column(n, ok, probs, k, class_names)
    if cols.probabilities:
        values = pa.array((probs.reshape(-1) if len(ok) else np.zeros(0)).astype(np.float32), pa.float32())
        arrays[cols.probabilities] = _list_column(n, ok, values, num_classes)
    if cols.embedding:
        width = embeddings.shape[1] if embeddings is not None and len(ok) else 0
        values = pa.array((embeddings.reshape(-1) if width else np.zeros(0)).astype(np.float32), pa.float32())
        arrays[cols.embedding] = _list_column(n, ok, values, width)
    if cols.error:
        arrays[cols.error] = pa.array(errors, pa.string())
    if cols.image_height:
        arrays[cols.image_height] = pa.array([s[0] if s else None for s in sizes], pa.int32())
    if cols.image_width:
        arrays[cols.image_width] = pa.array([s[1] if s else None for s in sizes], pa.int32())
    return arrays


def stack_decoded(results: list, spec: NetworkSpec):
    """[(pixels, stored size) or an error string per row] -> (pixels of the decodable rows, their row
    positions, per-row stored (h, w) or None, per-row error or None)."""
    n = len(results)
    out = np.empty((n, spec.height, spec.width, spec.channels), np.uint8)
    ok, sizes, errors = [], [None] * n, [None] * n
    for i, result in enumerate(results):
        if isinstance(result, str):
            errors[i] = result
            continue
        out[len(ok)], sizes[i] = result
        ok.append(i)
    return out[:len(ok)], ok, sizes, errors


def predict_batch(run, batch: pa.RecordBatch, spec: NetworkSpec, cols: Columns, batch_size: int, top_k: int,
                  max_pixels: int, decoded=None) -> pa.RecordBatch:
    """One Arrow batch -> the same columns plus the added ones (see Columns).

    `decoded`: the rows' pixels already decoded (stack_decoded), by a caller that decodes in
    threads ahead of the model; otherwise the input column is decoded here.
    """
    n = batch.num_rows
    images, ok, sizes, errors = decoded if decoded is not None else decode_rows(batch, cols, spec, max_pixels)
    probs = embeddings = None
    if len(ok):
        parts = [run(images[i:i + batch_size]) for i in range(0, len(ok), batch_size)]
        probs = np.concatenate([p for p, _ in parts])
        embeddings = np.concatenate([e for _, e in parts]) if spec.embedding_layer else None
    added = _outputs(n, ok, probs, embeddings, sizes, errors, cols, top_k, spec.class_names)
    names = [name for name in batch.schema.names if name not in added and (cols.keep is None or name in cols.keep)]
    arrays = [batch.column(batch.schema.get_field_index(name)) for name in names]
    return pa.RecordBatch.from_arrays(arrays + list(added.values()), names=names + list(added))


def transform_batches(spec: NetworkSpec, payload_bc, cols: Columns, batch_size: int, top_k: int,
                      max_pixels: int, threads: int, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body of CNNModel.transform; the network is built once per Python worker."""
    tune_worker()
    run = load_network(spec, lambda: payload_bc.value if payload_bc is not None else None, threads)
    for batch in batches:
        # one model call per slice: pixels in memory stay at batch_size images whatever Arrow's batch holds
        for lo in range(0, batch.num_rows, batch_size):
            yield predict_batch(run, batch.slice(lo, batch_size), spec, cols, batch_size, top_k, max_pixels)
