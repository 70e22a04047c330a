"""Running an ingest's Spark tasks and checking what they wrote, for every kind of source.

Array sources (pipelines.ingest.arrays) and image folders (pipelines.ingest.folder) both
hand a list of task descriptions to `run_ingest_tasks`; each task writes its own Parquet
part files and returns a small summary, and the driver checks those summaries against the
files on disk before anything is published.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import pyarrow.parquet as pq

from pipelines.core import records, storage
from pipelines.core.errors import IngestCheckError, IngestError
from pipelines.core.parquet_io import MB, read_frame, write_frame
from pipelines.core.store import atomic_dir


def partition_count(total_bytes: int, rows: int, partition_mb: float, min_partitions: int) -> int:
    by_size = math.ceil(total_bytes / (partition_mb * MB))
    return max(1, min(rows, max(by_size, min_partitions)))


@dataclass
class SplitWritten:
    """What the tasks of one job wrote for one split, summed from their summaries."""
    rows: int = 0
    id_sum: int = 0
    class_counts: Counter = field(default_factory=Counter)
    files: list = field(default_factory=list)
    ids: list = field(default_factory=list)

    def merge(self, other: "SplitWritten") -> None:
        """Add another share of the same split (rows carried over by an incremental ingest)."""
        self.rows += other.rows
        self.id_sum += other.id_sum
        self.class_counts.update(other.class_counts)
        self.files.extend(other.files)
        self.ids.extend(other.ids)

    def sorted_class_counts(self) -> dict:
        return {str(k): int(v) for k, v in sorted(self.class_counts.items())}


def run_ingest_tasks(spark, tasks: list, task_fn: Callable) -> tuple:
    """Run `task_fn` over `tasks` as one Spark job, one task each -> ({split: SplitWritten}, reject rows)."""
    written: dict = {}
    rejects: list = []
    if not tasks:
        return written, rejects
    summaries = spark.sparkContext.parallelize(tasks, len(tasks)).mapPartitions(task_fn).collect()
    for summary in summaries:
        rejects.extend(summary["rejects"])
        for split, part in summary["splits"].items():
            acc = written.setdefault(split, SplitWritten())
            acc.rows += part["rows"]
            acc.id_sum += part["id_sum"]
            acc.class_counts.update(part["class_counts"])
            acc.files.append(part["file"])
            if part["ids"] is not None:
                acc.ids.append(part["ids"])
    return written, rejects


def check_part_files(staging: str, dest: str, written: SplitWritten) -> None:
    """The staging dir holds exactly the files the tasks reported, with the rows they reported.

    Temporary files of task attempts that were killed (a lost executor) are removed here.
    """
    names = storage.listdir(staging)
    for name in names:
        if name.startswith("_tmp-"):
            storage.remove(storage.join(staging, name))
    on_disk = sorted(n for n in names if n.endswith(".parquet") and not n.startswith("_tmp-"))
    if on_disk != sorted(written.files):
        raise IngestCheckError(f"{storage.redact(dest)}: the tasks reported files {sorted(written.files)} but "
                          f"{storage.redact(staging)} holds {on_disk}")
    rows = 0
    for name in on_disk:
        with storage.open_file(storage.join(staging, name), "rb") as f:
            rows += pq.ParquetFile(f).metadata.num_rows
    if rows != written.rows:
        raise IngestCheckError(f"{storage.redact(dest)}: the part files hold {rows} rows but the tasks reported {written.rows}")


def publish_dataset(spark, frame, dest: str, meta: records.DatasetMeta, row_group_mb: float,
                    expected_rows, name_classes=None, before_publish=None) -> records.DatasetMeta:
    """Write a record-contract DataFrame to `dest` atomically, with counts checked and the sidecar.

    For DataFrames computed by Spark (the validation split, a materialised estimator input); ingest
    writes its files from tasks.  expected_rows may be a function, called once the rows are written
    (counts gathered by accumulators while writing); name_classes(label counts) -> class names, for
    labels known only once written; before_publish() runs last inside the staging (raise to discard).
    """
    with atomic_dir(dest) as staging:
        write_frame(frame, staging, row_group_mb)
        written = read_frame(spark, staging, [records.LABEL])
        counts = {str(r[records.LABEL]): int(r["count"]) for r in written.groupBy(records.LABEL).count().collect()}
        meta.num_rows = sum(counts.values())
        meta.class_counts = dict(sorted(counts.items(), key=lambda kv: int(kv[0])))
        if name_classes is not None:
            meta.class_names = name_classes(counts)
        expected = expected_rows() if callable(expected_rows) else expected_rows
        if meta.num_rows != expected:
            raise IngestError(f"{dest}: wrote {meta.num_rows} rows but expected {expected}")
        records.write_meta(staging, meta)
        if before_publish is not None:
            before_publish()
    return meta
