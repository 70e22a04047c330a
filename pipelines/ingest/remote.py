"""Executor side of ingest: each Spark task reads its own rows, writes its own Parquet part files
with pyarrow, and returns a small summary to the driver.

Why tasks write the files themselves: routing the rows through a DataFrame costs, per job, an
Arrow -> JVM -> Parquet round trip of every pixel, a persisted pass to count rejects exactly and
several small jobs for counts, duplicate checks and per-split writes; on 2 cores that made Spark
ingest 5-7x slower than one plain process.  Here an ingest is one Spark job: the only data that
crosses to the driver is the summary (rows, class counts and ids per split, reject rows), from
which the driver checks `read = written + rejected` and writes the metadata.

A part file is written under a temporary name that readers skip ('_' prefix) and renamed when
complete (on a remote store: written to local disk and uploaded whole when complete), so a task
that is killed and re-run (a lost executor) leaves no half-written file; its name depends only on
the task, so a re-run replaces, never duplicates.  Nothing here imports
Spark or the driver's config: it runs in executors, from the --py-files zip on a cluster.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from collections import Counter
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import records, storage
from pipelines.core.errors import IngestError
from pipelines.core.worker_remote import tune_worker

MB = 1 << 20


def part_file_name(split: str, task: int) -> str:
    return f"part-{split}-{task:05d}.parquet"


def rows_per_row_group(row_bytes: int, row_group_mb: float) -> int:
    return max(1, int(row_group_mb * MB) // max(1, row_bytes))


class PartWriter:
    """One task's Parquet part file of one split: row groups of a fixed row count, published by rename."""

    def __init__(self, folder: str, split: str, task: int, group_rows: int, keep_ids: bool):
        self.keep_ids = keep_ids
        self.id_sum = 0
        self.name = part_file_name(split, task)
        self.path = storage.join(folder, self.name)
        self.remote = storage.is_remote(folder)
        scratch = tempfile.gettempdir() if self.remote else folder
        self.tmp = os.path.join(scratch, f"_tmp-{uuid.uuid4().hex[:8]}-{self.name}")
        self.group_rows = group_rows
        self.rows = 0
        self.class_counts: Counter = Counter()
        self.ids: list = []
        self._pending: list = []
        self._pending_rows = 0
        self._writer = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Buffer a record batch; full row groups go to disk (memory stays at about one row group)."""
        if batch.num_rows == 0:
            return
        self.rows += batch.num_rows
        counts = np.bincount(batch.column(records.LABEL).to_numpy())
        self.class_counts.update({int(k): int(counts[k]) for k in np.flatnonzero(counts)})
        ids = batch.column(records.ID).to_numpy()
        self.id_sum += int(ids.sum(dtype=np.uint64))   # a checksum (mod 2**64) of the ids written
        if self.keep_ids:
            self.ids.append(ids)
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self.group_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        table = pa.Table.from_batches(self._pending, schema=records.ARROW_SCHEMA)
        cut = table.num_rows if final else table.num_rows - table.num_rows % self.group_rows
        if cut:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.tmp, records.ARROW_SCHEMA, compression="snappy")
            self._writer.write_table(table.slice(0, cut), row_group_size=self.group_rows)
        rest = table.slice(cut)
        self._pending = rest.to_batches() if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close(self) -> dict:
        """Finish the file and rename it into place; -> its summary (empty when it got no rows)."""
        if self._pending_rows:
            self._flush(final=True)
        if self._writer is None:
            return {}
        self._writer.close()
        if self.remote:
            fs, target = storage.filesystem(self.path)
            try:
                fs.put_file(self.tmp, target)     # one upload: the object appears whole or not at all
            finally:
                os.remove(self.tmp)
        else:
            os.replace(self.tmp, self.path)
        return {"file": self.name, "rows": self.rows, "class_counts": dict(self.class_counts),
                "id_sum": self.id_sum, "ids": np.concatenate(self.ids) if self.keep_ids else None}

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


class TaskOutput:
    """The part files of one task, one per split it writes, and its reject rows."""

    def __init__(self, folders: dict, task: int, group_rows: int, keep_ids: bool = False):
        self.folders, self.task, self.group_rows, self.keep_ids = folders, task, group_rows, keep_ids
        self.writers: dict = {}
        self.rejects: list = []

    def writer(self, split: str) -> PartWriter:
        if split not in self.writers:
            self.writers[split] = PartWriter(self.folders[split], split, self.task, self.group_rows, self.keep_ids)
        return self.writers[split]

    def run(self, body) -> dict:
        """Run body(self); on success -> the task summary, on failure no file of this task is left."""
        try:
            body(self)
            splits = {s: w.close() for s, w in self.writers.items()}
        except BaseException:
            for w in self.writers.values():
                w.abort()
            raise
        return {"task": self.task, "splits": {s: out for s, out in splits.items() if out}, "rejects": self.rejects}


def check_labels(source, lo: int, labels: np.ndarray, num_classes: int) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise IngestError(f"{source.describe()}: label {int(labels[bad[0]])} at row "
                          f"{lo + int(bad[0])} is outside 0..{num_classes - 1}")


def write_ranges(folders: dict, num_classes: int, row_group_mb: float, context: storage.StorageContext,
                 tasks: Iterable[tuple]) -> Iterator[dict]:
    """Array sources: each task (index, split, source, start, stop) -> one part file of its split.

    `context`: the driver's storage context (pipelines.core.storage), for remote folders and sources.
    """
    tune_worker()
    return storage.iterate_using(context, _ranges_written(folders, num_classes, row_group_mb, tasks))


def _ranges_written(folders: dict, num_classes: int, row_group_mb: float, tasks: Iterable[tuple]) -> Iterator[dict]:
    for task, split, source, start, stop in tasks:
        h, w, c = source.shape
        group = rows_per_row_group(h * w * c, row_group_mb)

        def body(out: TaskOutput):
            for lo in range(start, stop, group):
                hi = min(lo + group, stop)
                images, labels = source.read(lo, hi)
                check_labels(source, lo, labels, num_classes)
                out.writer(split).write(records.encode_batch(np.arange(lo, hi), labels, images))
        yield TaskOutput(folders, task, group).run(body)
