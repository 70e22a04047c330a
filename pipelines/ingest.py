"""Ingest: raw dataset files -> Parquet datasets that follow the record contract.

IDX files are read in parallel by Spark tasks, each reading its own byte
range of the file (the header is validated once, on the driver, first), so
no process ever holds the whole dataset and the job scales with executors.
Partition count comes from the data size, with at least one partition per
core; row groups are kept small (a few MB) because a row group is the unit
that Petastorm shards across Horovod workers and shuffles.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from . import idx, records
from .config import Config
from .errors import SparkcnnError
from .fetch import MNIST_CLASS_NAMES, fetch_mnist
from .store import atomic_dir

MB = 1 << 20
ROWS_PER_BATCH = 4096


class IngestError(SparkcnnError, ValueError):
    """Input that cannot be ingested; the message names the file and the reason."""


@dataclass(frozen=True)
class IdxSplit:
    """Rows [start, stop) of an IDX images/labels pair, destined for one dataset split."""
    split: str
    images: idx.IdxHeader
    labels: idx.IdxHeader
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def partition_count(rows: int, row_bytes: int, partition_mb: float, min_partitions: int) -> int:
    by_size = math.ceil(rows * row_bytes / (partition_mb * MB))
    return max(1, min(rows, max(by_size, min_partitions)))


def _read_idx_partitions(part: IdxSplit, bounds: list, num_classes: int,
                         batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side: for each partition index received, stream its rows as record batches."""
    for batch in batches:
        for p in batch.column(0).to_pylist():
            for lo in range(bounds[p], bounds[p + 1], ROWS_PER_BATCH):
                hi = min(lo + ROWS_PER_BATCH, bounds[p + 1])
                labels = idx.read_rows(part.labels, lo, hi)
                bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
                if bad.size:
                    row = lo + int(bad[0])
                    raise IngestError(f"{part.labels.path}: label {int(labels[bad[0]])} at row {row} "
                                      f"is outside 0..{num_classes - 1}")
                images = idx.read_rows(part.images, lo, hi)
                if images.dtype != np.uint8:
                    raise IngestError(f"{part.images.path}: pixels are {images.dtype}, expected unsigned bytes")
                yield records.encode_batch(np.arange(lo, hi), labels, images)


def write_idx_split(spark, part: IdxSplit, dest: str, name: str, class_names: list,
                    partition_mb: float, row_group_mb: float, source: str) -> records.DatasetMeta:
    """Write one split as a dataset at `dest`, atomically; returns its metadata."""
    n_parts = partition_count(part.rows, part.images.row_bytes, partition_mb, spark.sparkContext.defaultParallelism)
    bounds = [int(b) for b in np.linspace(part.start, part.stop, n_parts + 1)]
    reader = functools.partial(_read_idx_partitions, part, bounds, len(class_names))
    frame = spark.range(0, n_parts, 1, n_parts).mapInArrow(reader, records.SPARK_DDL)
    h, w = part.images.row_shape[:2]
    c = part.images.row_shape[2] if len(part.images.row_shape) == 3 else 1
    with atomic_dir(dest) as staging:
        (frame.write.option("parquet.block.size", int(row_group_mb * MB))
         .option("compression", "snappy").parquet(staging))
        counts = {str(r["label"]): int(r["count"])
                  for r in spark.read.parquet(staging).groupBy(records.LABEL).count().collect()}
        written = sum(counts.values())
        if written != part.rows:
            raise IngestError(f"{dest}: wrote {written} rows but read {part.rows} from {part.images.path}")
        meta = records.DatasetMeta(name=name, split=part.split, num_rows=written, height=h, width=w, channels=c,
                                   class_names=list(class_names), source=source,
                                   class_counts=dict(sorted(counts.items(), key=lambda kv: int(kv[0]))))
        records.write_meta(staging, meta)
    return meta


def plan_idx_splits(images_path: str, labels_path: str, scratch: str, limit=None, validation_rows: int = 0,
                    split: str = "train") -> list:
    """Validate an images/labels IDX pair and plan its split(s): train (+ val from its tail) or test."""
    images = idx.read_header(idx.ensure_uncompressed(images_path, scratch))
    labels = idx.read_header(idx.ensure_uncompressed(labels_path, scratch), expect_ndim=1)
    if len(images.row_shape) not in (2, 3):
        raise idx.IdxFormatError(f"{images_path}: expected images (count, rows, cols[, channels]), got dims {images.dims}")
    idx.check_pair(images, labels)
    rows = min(limit or images.count, images.count)
    if validation_rows >= rows:
        raise IngestError(f"ingest.validation_rows={validation_rows} leaves no training rows out of {rows}")
    cut = rows - validation_rows
    plan = [IdxSplit(split, images, labels, 0, cut)]
    if validation_rows:
        plan.append(IdxSplit("val", images, labels, cut, rows))
    return plan


def ingest_stage(spark, cfg: Config, store, log: Callable[[str], None] = print) -> dict:
    """The CLI stage; datasets live outside any one run, so the run store is not used."""
    return ingest(spark, cfg, log)


def ingest(spark, cfg: Config, log: Callable[[str], None] = print) -> dict:
    """Fetch the configured dataset and write its train/val/test splits. Returns {split: meta}."""
    files = fetch_mnist(cfg.data.cache_dir, cfg.data.source, cfg.data.source_dir, log=log)
    scratch = os.path.join(os.path.expanduser(cfg.data.cache_dir), "unpacked")
    plan = plan_idx_splits(files["train_images"], files["train_labels"], scratch,
                           cfg.ingest.limit_train, cfg.ingest.validation_rows, "train")
    plan += plan_idx_splits(files["test_images"], files["test_labels"], scratch, cfg.ingest.limit_test, 0, "test")
    metas = {}
    for part in plan:
        dest = cfg.dataset_dir(part.split)
        meta = write_idx_split(spark, part, dest, cfg.data.dataset, MNIST_CLASS_NAMES,
                               cfg.ingest.partition_mb, cfg.ingest.row_group_mb,
                               source=f"{os.path.basename(part.images.path)}[{part.start}:{part.stop}]")
        log(f"[ingest] {part.split}: read {part.rows} = written {meta.num_rows} + rejected {meta.rejected} -> {dest}")
        metas[part.split] = meta
    return metas
