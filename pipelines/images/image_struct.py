"""Spark's image struct (`spark.read.format("image")`, pyspark.ml.image.ImageSchema), declared once.

Fields: origin (string), height, width, nChannels, mode (int: an OpenCV type code), data (binary, pixels
row-major in OpenCV's BGR(A) order, or gray).  Spark marks a file it could not decode with -1 sizes and
no data.  Every module that reads or writes the struct takes its names and types from here: the Arrow
type for executor code, the Spark type and DDL for driver code, and `is_image_struct` to recognise it.
"""
from __future__ import annotations

import pyarrow as pa

ORIGIN, HEIGHT, WIDTH, CHANNELS, MODE, DATA = "origin", "height", "width", "nChannels", "mode", "data"
FIELDS = (ORIGIN, HEIGHT, WIDTH, CHANNELS, MODE, DATA)
ARROW_TYPE = pa.struct([(ORIGIN, pa.string()), (HEIGHT, pa.int32()), (WIDTH, pa.int32()), (CHANNELS, pa.int32()),
                        (MODE, pa.int32()), (DATA, pa.binary())])
DDL = "STRUCT<origin: STRING, height: INT, width: INT, nChannels: INT, mode: INT, data: BINARY>"
OPENCV_MODES = {1: 0, 3: 16, 4: 24}      # CV_8UC1, CV_8UC3, CV_8UC4: 8-bit gray, BGR, BGRA
INVALID = -1                             # Spark's height/width/nChannels/mode for an undecodable file


def spark_type():
    """The struct as a pyspark StructType (driver side)."""
    from pyspark.sql import types as T
    kinds = {ORIGIN: T.StringType(), DATA: T.BinaryType()}
    return T.StructType([T.StructField(name, kinds.get(name, T.IntegerType()), True) for name in FIELDS])


def is_image_struct(dtype) -> bool:
    """Whether a pyspark DataType is Spark's image struct (every field present)."""
    names = getattr(dtype, "fieldNames", None)
    return names is not None and set(FIELDS) <= set(names())
