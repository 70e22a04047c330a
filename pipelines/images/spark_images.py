"""Interop with Spark's own image data source (`spark.read.format("image")`, pyspark.ml.image).

Spark's image struct stores pixels row-major in OpenCV's BGR(A) order with an
OpenCV type code in `mode`; the record contract stores RGB.  These two
functions convert both ways so a DataFrame from Spark's reader can become a
sparkcnn dataset, and a sparkcnn dataset can be handed to any Spark tool that
expects the image struct.
"""
from __future__ import annotations

import functools
from typing import Optional

from pipelines.core import records
from pipelines.core.parquet_io import read_frame
from pipelines.images import image_struct
from pipelines.images.spark_images_remote import records_to_struct, struct_to_records

IMAGE_STRUCT_DDL = (f"image {image_struct.DDL}, "
                    "label INT, id LONG")


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
    converter = functools.partial(struct_to_records, class_index, label_col is None)
    return selected.mapInArrow(converter, records.SPARK_DDL), class_names


def to_spark_images(spark, dataset_dir: str):
    """A sparkcnn dataset as (image struct, label, id), the schema of pyspark.ml.image.ImageSchema."""
    meta = records.read_meta(dataset_dir)
    frame = read_frame(spark, dataset_dir, [records.ID, records.LABEL, records.IMAGE])
    return frame.mapInArrow(functools.partial(records_to_struct, meta.shape), IMAGE_STRUCT_DDL)
