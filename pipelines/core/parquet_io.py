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
import tempfile
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import storage
from pipelines.core.store import published_entries, published_files, resolve

MB = 1 << 20


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


class _ReadUnits:
    """Task body of read_frame: each input row is a unit index, read as one Parquet row group."""

    def __init__(self, units, columns, options):
        self.units, self.columns, self.options = units, columns, options

    def __call__(self, batches):
        storage.configure(self.options)
        for batch in batches:
            for unit in batch.column(0).to_pylist():
                location, group = self.units[unit]
                with storage.open_file(location, "rb") as f:
                    table = pq.ParquetFile(f).read_row_group(group, columns=self.columns)
                yield from table.to_batches()


def read_table(location: str, columns: Optional[list] = None) -> pa.Table:
    """A whole dataset (published output, pinned version or plain folder) as one Arrow table, in this process.

    For the small datasets that executors of sweeps load whole; remote files are read through the storage layer.
    """
    if not storage.is_remote(location):
        return pq.read_table(location, columns=columns)
    tables = []
    for part in published_files(location):
        with storage.open_file(part, "rb") as f:
            tables.append(pq.read_table(f, columns=columns))
    if not tables:
        raise FileNotFoundError(f"{storage.redact(location)}: no Parquet files")
    return pa.concat_tables(tables)


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
    read = _ReadUnits(units, columns, storage.current_options())
    return spark.range(len(units), numPartitions=max(1, len(units))).mapInArrow(read, from_arrow_schema(schema))


class _WritePartitions:
    def __init__(self, staging: str, schema: pa.Schema, row_group_mb: Optional[float], options):
        self.staging, self.schema, self.row_group_mb, self.options = staging, schema, row_group_mb, options

    def __call__(self, batches):
        from pyspark import TaskContext
        storage.configure(self.options)
        name = f"part-{TaskContext.get().partitionId():05d}.parquet"
        rows, writer, pending, pending_rows, group_rows = 0, None, [], 0, None
        with tempfile.TemporaryDirectory(prefix="sparkcnn-part-") as tmp:
            path = os.path.join(tmp, name)
            for batch in batches:
                if not batch.num_rows:
                    continue
                batch = pa.RecordBatch.from_arrays(batch.columns, schema=self.schema)
                if group_rows is None:
                    per_row = max(1, batch.nbytes // batch.num_rows)
                    group_rows = max(1, int((self.row_group_mb or 128) * MB) // per_row)
                pending.append(batch)
                pending_rows += batch.num_rows
                rows += batch.num_rows
                if pending_rows >= group_rows:
                    writer = writer or pq.ParquetWriter(path, self.schema, compression="snappy")
                    writer.write_table(pa.Table.from_batches(pending, self.schema), row_group_size=group_rows)
                    pending, pending_rows = [], 0
            if pending:
                writer = writer or pq.ParquetWriter(path, self.schema, compression="snappy")
                writer.write_table(pa.Table.from_batches(pending, self.schema), row_group_size=group_rows)
            if writer is not None:
                writer.close()
                fs, target = storage.filesystem(storage.join(self.staging, name))
                fs.put_file(path, target)      # one upload: the object appears complete, or not at all
        yield pa.RecordBatch.from_pydict({"name": [name if rows else ""], "rows": [rows]})


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
    write = _WritePartitions(staging, schema, row_group_mb, storage.current_options())
    out = frame.mapInArrow(write, "name string, rows long").collect()
    return {r["name"]: int(r["rows"]) for r in out if r["name"]}
