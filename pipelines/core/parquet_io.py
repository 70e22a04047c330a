"""Parquet outputs as Spark DataFrames, read and written by Python tasks when they live on a remote store.

Spark's own Parquet reader and writer go through the JVM's Hadoop filesystems, which need
a connector jar per store (s3a, gcs, abfs) that many clusters (and this project's CI) do not
have.  So for remote locations the project's own reads and writes run in Python tasks over
pipelines.core.storage: `read_frame` makes one Spark partition per Parquet row group of the
published files (exactly the files the manifest lists), and `write_frame` has every partition
write one part file into the staging prefix, named by its partition index so a retried task
attempt replaces its file rather than adding one.  Local locations keep Spark's reader and
writer, unchanged.
"""
from __future__ import annotations

import os
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import storage
from pipelines.core.parquet_remote import MB, ReadUnits, WritePartitions
from pipelines.core.store import published_entries, resolve


def _row_groups(parts: list) -> tuple:
    """([(file, row group)], arrow schema) of [(file, manifest entry)]: row-group counts come from the
    manifest where it has them (then only the first footer is read, for the schema)."""
    units, schema = [], None
    for location, entry in parts:
        groups = entry.get("row_groups")
        if schema is None or groups is None:
            with storage.open_file(location, "rb") as f:
                meta = pq.ParquetFile(f).metadata
            schema = schema or meta.schema.to_arrow_schema()
            groups = meta.num_row_groups
        units += [(location, g) for g in range(groups)]
    return units, schema


def read_frame(spark, dest: str, columns: Optional[list] = None):
    """The published Parquet output at `dest` as a DataFrame (optionally only `columns`)."""
    if not storage.is_remote(dest):
        frame = spark.read.parquet(resolve(dest))
        return frame.select(*columns) if columns else frame
    from pyspark.sql.pandas.types import from_arrow_schema
    parts = published_entries(dest)
    if not parts:
        raise FileNotFoundError(f"{storage.redact(dest)}: no published Parquet files")
    units, schema = _row_groups(parts)
    if columns:
        schema = pa.schema([schema.field(c) for c in columns])
    read = ReadUnits(units, columns, storage.active_context())
    return spark.range(len(units), numPartitions=max(1, len(units))).mapInArrow(read, from_arrow_schema(schema))


def write_frame(frame, staging: str, row_group_mb: Optional[float] = None) -> dict:
    """Write `frame` as Parquet into `staging` (a directory or prefix) -> {part file name: rows}.

    Local: Spark's writer (the row-group size as parquet.block.size).  Remote: one part file
    per partition, uploaded whole by its task.
    """
    if not storage.is_remote(staging):
        writer = frame.write.option("compression", "snappy")
        if row_group_mb:
            writer = writer.option("parquet.block.size", int(row_group_mb * MB))
        writer.parquet(staging)
        return {n: pq.read_metadata(os.path.join(staging, n)).num_rows
                for n in sorted(os.listdir(staging)) if n.endswith(".parquet")}
    from pyspark.sql.pandas.types import to_arrow_schema
    schema = to_arrow_schema(frame.schema)
    write = WritePartitions(staging, schema, row_group_mb, storage.active_context())
    out = frame.mapInArrow(write, "name string, rows long").collect()
    return {r["name"]: int(r["rows"]) for r in out if r["name"]}
