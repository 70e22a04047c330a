"""Executor side of pipelines.images.spark_images: Arrow batches of Spark image structs <-> record rows."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

from pipelines.core import records
from pipelines.core.records import stable_id
from pipelines.images import image_struct
from pipelines.images.image_struct import OPENCV_MODES




def struct_to_records(class_index: dict, label_from_folder: bool, batches: Iterator[pa.RecordBatch]):
    for batch in batches:
        image = batch.column(0)
        origin = image.field(image_struct.ORIGIN).to_pylist()
        height = image.field(image_struct.HEIGHT).to_numpy(zero_copy_only=False)
        width = image.field(image_struct.WIDTH).to_numpy(zero_copy_only=False)
        nch = image.field(image_struct.CHANNELS).to_numpy(zero_copy_only=False)
        data = image.field(image_struct.DATA).to_pylist()
        labels = batch.column(1).to_pylist() if not label_from_folder else None
        ids, labs, hs, ws, cs, blobs = [], [], [], [], [], []
        for i in range(len(origin)):
            h, w, c = int(height[i]), int(width[i]), int(nch[i])
            pixels = np.frombuffer(data[i], np.uint8).reshape(h, w, c)
            if c >= 3:
                pixels = pixels[..., [2, 1, 0]]            # BGR(A) -> RGB, alpha dropped
            if label_from_folder:
                folder = origin[i].rstrip("/").split("/")[-2]
                if folder not in class_index:
                    raise ValueError(f"{origin[i]}: folder '{folder}' is not one of the classes {sorted(class_index)}")
                label = class_index[folder]
            else:
                label = int(labels[i])
            ids.append(stable_id(origin[i]))
            labs.append(label)
            hs.append(h)
            ws.append(w)
            cs.append(pixels.shape[2])
            blobs.append(np.ascontiguousarray(pixels).tobytes())
        yield pa.RecordBatch.from_arrays(
            [pa.array(ids, pa.int64()), pa.array(labs, pa.int32()), pa.array(hs, pa.int32()),
             pa.array(ws, pa.int32()), pa.array(cs, pa.int32()), pa.array(blobs, pa.binary())],
            schema=records.ARROW_SCHEMA)


def records_to_struct(shape: tuple, batches: Iterator[pa.RecordBatch]):
    h, w, c = shape
    for batch in batches:
        images = records.decode_images(batch.column(records.IMAGE), shape)
        if c == 3:
            images = images[..., ::-1]                     # RGB -> BGR
        n = len(images)
        flat = np.ascontiguousarray(images).reshape(-1)
        row = h * w * c
        data = pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(np.arange(0, (n + 1) * row, row, dtype=np.int32)),
                                                           pa.py_buffer(flat)])
        ids = batch.column(records.ID)
        struct = pa.StructArray.from_arrays(
            [pa.array([f"sparkcnn:{i}" for i in ids.to_pylist()], pa.string()),
             pa.array(np.full(n, h, np.int32)), pa.array(np.full(n, w, np.int32)), pa.array(np.full(n, c, np.int32)),
             pa.array(np.full(n, OPENCV_MODES[c], np.int32)), data],
            names=list(image_struct.FIELDS))
        yield pa.RecordBatch.from_arrays([struct, batch.column(records.LABEL), ids], names=["image", "label", "id"])
