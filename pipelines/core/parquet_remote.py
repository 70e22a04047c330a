"""Executor side of pipelines.core.parquet_io: the task bodies that read and write Parquet on remote stores.

A read task gets unit indices and reads each as one Parquet row group; a write task writes its
partition as one part file on local disk and uploads it whole (one PUT: the object appears
complete or not at all), named by its partition index so a retried attempt replaces it.
"""
from __future__ import annotations

import os
import tempfile
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import storage
from pipelines.core.store import published_files

MB = 1 << 20


class ReadUnits:
    """Task body of read_frame: each input row is a unit index, read as one Parquet row group."""

    def __init__(self, units, columns, context: storage.StorageContext):
        self.units, self.columns, self.context = units, columns, context

    def __call__(self, batches):
        return storage.iterate_using(self.context, self._read(batches))

    def _read(self, batches):
        for batch in batches:
            for unit in batch.column(0).to_pylist():
                location, group = self.units[unit]
                with storage.open_file(location, "rb") as f:
                    table = pq.ParquetFile(f).read_row_group(group, columns=self.columns)
                yield from table.to_batches()


class WritePartitions:
    """Task body of write_frame: the partition's batches as one Parquet part file in the staging prefix."""

    def __init__(self, staging: str, schema: pa.Schema, row_group_mb: Optional[float],
                 context: storage.StorageContext):
        self.staging, self.schema, self.row_group_mb, self.context = staging, schema, row_group_mb, context

    def __call__(self, batches):
        return storage.iterate_using(self.context, self._write(batches))

    def _write(self, batches):
        from pyspark import TaskContext
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
