"""Executor side of ImageResizer: Arrow batches in, the same batches plus a resized image struct out.

Decoding and fitting are the scoring engine's (cnn_model_remote.decode_rows), so a resized image
is exactly what a CNNModel at that size would feed its network.  The output follows Spark's image
schema (BGR for colour, like spark.read.format("image")); a row that cannot be decoded gets
Spark's own marker for an invalid image (height/width/nChannels/mode -1, no data) and keeps its
origin, so the next stage rejects it with a reason rather than the whole job failing.
"""
from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from pipelines.core.worker_remote import tune_worker
from pipelines.images.image_struct import (
    ARROW_TYPE,
    CHANNELS,
    DATA,
    HEIGHT,
    INVALID,
    MODE,
    OPENCV_MODES,
    ORIGIN,
    WIDTH,
)
from pipelines.inference.cnn_model_remote import Columns, decode_rows
from pipelines.inference.network import NetworkSpec



def _origins(batch: pa.RecordBatch, cols: Columns) -> list:
    column = batch.column(batch.schema.get_field_index(cols.input))
    if pa.types.is_struct(column.type) and column.type.get_field_index(ORIGIN) >= 0:
        return column.field(ORIGIN).to_pylist()
    if "path" in batch.schema.names:
        return batch.column(batch.schema.get_field_index("path")).to_pylist()
    return [None] * batch.num_rows


def resize_batches(spec: NetworkSpec, cols: Columns, output: str, max_pixels: int,
                   batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body of ImageResizer.transform."""
    tune_worker()
    c = spec.channels
    for batch in batches:
        images, ok, _, _ = decode_rows(batch, cols, spec, max_pixels)
        if c == 3:
            images = images[..., ::-1]          # RGB -> Spark's BGR
        n, good = batch.num_rows, dict(zip(ok, range(len(ok))))
        data = [images[good[i]].tobytes() if i in good else b"" for i in range(n)]
        valid = [i in good for i in range(n)]
        values = {ORIGIN: _origins(batch, cols),
                  HEIGHT: [spec.height if v else INVALID for v in valid],
                  WIDTH: [spec.width if v else INVALID for v in valid],
                  CHANNELS: [c if v else INVALID for v in valid],
                  MODE: [OPENCV_MODES[c] if v else INVALID for v in valid], DATA: data}
        struct = pa.StructArray.from_arrays([pa.array(values[f.name], f.type) for f in ARROW_TYPE],
                                            fields=list(ARROW_TYPE))
        names = [name for name in batch.schema.names if name != output]
        arrays = [batch.column(batch.schema.get_field_index(name)) for name in names]
        yield pa.RecordBatch.from_arrays(arrays + [struct], names=names + [output])
