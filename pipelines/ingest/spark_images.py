"""Interop with Spark's own image data source (`spark.read.format("image")`, pyspark.ml.image).

Spark's image struct stores pixels row-major in OpenCV's BGR(A) order with an
OpenCV type code in `mode`; the record contract stores RGB.  These two
functions convert both ways so a DataFrame from Spark's reader can become a
sparkcnn dataset, and a sparkcnn dataset can be handed to any Spark tool that
expects the image struct.
"""
from __future__ import annotations

import functools
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa

from pipelines.core import records
from pipelines.core.parquet_io import read_frame
from pipelines.ingest.folder_remote import stable_id

CV_8UC = {1: 0, 3: 16, 4: 24}     # OpenCV type codes for 8-bit 1/3/4-channel images
IMAGE_STRUCT_DDL = ("image STRUCT<origin: STRING, height: INT, width: INT, nChannels: INT, mode: INT, data: BINARY>, "
                    "label INT, id LONG")


def _struct_to_records(class_index: dict, label_from_folder: bool, batches: Iterator[pa.RecordBatch]):
    for batch in batches:
        image = batch.column(0)
        origin = image.field("origin").to_pylist()
        height = image.field("height").to_numpy(zero_copy_only=False)
        width = image.field("width").to_numpy(zero_copy_only=False)
        nch = image.field("nChannels").to_numpy(zero_copy_only=False)
        data = image.field("data").to_pylist()
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


def from_spark_images(frame, image_col: str = "image", label_col: Optional[str] = None,
                      class_names: Optional[list] = None):
    """A DataFrame of Spark image structs -> record-contract rows.

    Labels come from `label_col`, or, when it is None, from each image's parent
    folder name mapped through `class_names` (sorted folder names by default,
    the same rule as folder ingest).  Ids are a hash of the image's origin.
    """
    from pyspark.sql import functions as F
    if label_col is None:
        if class_names is None:
            folders = frame.select(F.element_at(F.split(F.col(f"{image_col}.origin"), "/"), -2).alias("f")).distinct()
            class_names = sorted(r["f"] for r in folders.collect())
        class_index = {name: k for k, name in enumerate(class_names)}
        selected = frame.select(F.col(image_col), F.lit(0).alias("_label"))
    else:
        class_index = {}
        selected = frame.select(F.col(image_col), F.col(label_col).cast("int").alias("_label"))
    converter = functools.partial(_struct_to_records, class_index, label_col is None)
    return selected.mapInArrow(converter, records.SPARK_DDL), class_names


def _records_to_struct(shape: tuple, batches: Iterator[pa.RecordBatch]):
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
             pa.array(np.full(n, CV_8UC[c], np.int32)), data],
            names=["origin", "height", "width", "nChannels", "mode", "data"])
        yield pa.RecordBatch.from_arrays([struct, batch.column(records.LABEL), ids], names=["image", "label", "id"])


def to_spark_images(spark, dataset_dir: str):
    """A sparkcnn dataset as (image struct, label, id), the schema of pyspark.ml.image.ImageSchema."""
    meta = records.read_meta(dataset_dir)
    frame = read_frame(spark, dataset_dir, [records.ID, records.LABEL, records.IMAGE])
    return frame.mapInArrow(functools.partial(_records_to_struct, meta.shape), IMAGE_STRUCT_DDL)
