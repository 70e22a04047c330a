"""`predict.input` as a Parquet table of images (`predict.input_column`), driver side.

For images that already live in a table: `spark.read.format("binaryFile")` saved as Parquet
(path, modificationTime, length, content), Spark's image source (an image struct whose `origin`
names the file), or a sparkcnn dataset (raw pixels with height/width/channels).  Each row's
identity is its path column (or the struct's origin), the image's byte length and, when the
table has it, `modificationTime`; the ledger compares those exactly as for files, so a rerun
scores only new or changed rows.  The table is read by Spark locally and by Python tasks on an
object store (pipelines.core.parquet_io), then CNNModel scores it and commit_chunks commits one
part file per Spark partition.
"""
from __future__ import annotations

import pyarrow as pa

from pipelines.core.config import ConfigError
from pipelines.images.image_struct import is_image_struct
from pipelines.images.listing import ETAG, LISTING_SCHEMA, MODIFIED, PATH, SIZE

MODIFICATION_TIME = "modificationTime"       # spark.read.format("binaryFile")'s column


def identified(frame, section, where: str):
    """(frame with path/size/modified/etag beside the image column, the image column's name)."""
    from pyspark.sql import functions as F
    column = section.input_column
    if column not in frame.columns:
        raise ConfigError(f"{where}.input_column: '{column}' is not a column of {section.input}; "
                          f"columns: {', '.join(frame.columns)}")
    dtype = frame.schema[column].dataType
    is_struct = is_image_struct(dtype)
    if section.path_column in frame.columns:
        path = F.col(section.path_column).cast("string")
    elif is_struct:
        path = F.col(column)["origin"]
    else:
        raise ConfigError(f"{where}.path_column: '{section.path_column}' is not a column of {section.input}; "
                          "each row needs a name that identifies it (the file it came from)")
    data = F.col(column)["data"] if is_struct else F.col(column)
    modified = (F.unix_micros(F.col(MODIFICATION_TIME)) / 1e6 if MODIFICATION_TIME in frame.columns
                else F.lit(None).cast("double"))
    return frame.withColumn(PATH, path).withColumn(SIZE, F.length(data).cast("long")) \
        .withColumn(MODIFIED, modified).withColumn(ETAG, F.lit(None).cast("string")), column


def listing_of(frame) -> pa.Table:
    """The identity columns of every row, on the driver, as the listing of files would be."""
    rows = frame.select(PATH, SIZE, MODIFIED, ETAG).toPandas()
    return pa.Table.from_pandas(rows, schema=LISTING_SCHEMA, preserve_index=False).sort_by(PATH)


def rows_to_score(spark, frame, todo: pa.Table):
    """The frame's rows whose path is in the to-do listing (a broadcast semi-join)."""
    from pyspark.sql import functions as F
    wanted = spark.createDataFrame(todo.select([PATH]).to_pandas())
    return frame.join(F.broadcast(wanted), on=PATH, how="left_semi")
