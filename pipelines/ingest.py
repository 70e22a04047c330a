"""Ingest: raw dataset files -> Parquet datasets that follow the record contract.

Array-like sources (IDX, CIFAR, .npz) are read in parallel by Spark tasks,
each reading its own row range of the files (whole-file checks happen once,
on the driver, first), so no process ever holds the whole dataset and the
job scales with executors.  Image folders go through pipelines.image_folder.
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

from . import records
from .config import Config
from .errors import SparkcnnError
from .store import atomic_dir

MB = 1 << 20
ROWS_PER_BATCH = 4096


class IngestError(SparkcnnError, ValueError):
    """Input that cannot be ingested; the message names the file and the reason."""


@dataclass(frozen=True)
class SplitPlan:
    """Rows [start, stop) of a source, destined for one dataset split."""
    split: str
    source: object      # a pipelines.sources.*Source
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def partition_count(total_bytes: int, rows: int, partition_mb: float, min_partitions: int) -> int:
    by_size = math.ceil(total_bytes / (partition_mb * MB))
    return max(1, min(rows, max(by_size, min_partitions)))


def _read_partitions(plan: SplitPlan, bounds: list, num_classes: int,
                     batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side: for each partition index received, stream its rows as record batches."""
    for batch in batches:
        for p in batch.column(0).to_pylist():
            for lo in range(bounds[p], bounds[p + 1], ROWS_PER_BATCH):
                hi = min(lo + ROWS_PER_BATCH, bounds[p + 1])
                images, labels = plan.source.read(lo, hi)
                bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
                if bad.size:
                    raise IngestError(f"{plan.source.describe()}: label {int(labels[bad[0]])} at row "
                                      f"{lo + int(bad[0])} is outside 0..{num_classes - 1}")
                yield records.encode_batch(np.arange(lo, hi), labels, images)


def publish_dataset(spark, frame, dest: str, meta: records.DatasetMeta, row_group_mb: float,
                    expected_rows: int) -> records.DatasetMeta:
    """Write a record-contract DataFrame to `dest` atomically, with counts checked and the sidecar."""
    with atomic_dir(dest) as staging:
        (frame.write.option("parquet.block.size", int(row_group_mb * MB))
         .option("compression", "snappy").parquet(staging))
        written = spark.read.parquet(staging)
        counts = {str(r[records.LABEL]): int(r["count"]) for r in written.groupBy(records.LABEL).count().collect()}
        meta.num_rows = sum(counts.values())
        meta.class_counts = dict(sorted(counts.items(), key=lambda kv: int(kv[0])))
        if meta.num_rows != expected_rows:
            raise IngestError(f"{dest}: wrote {meta.num_rows} rows but expected {expected_rows}")
        records.write_meta(staging, meta)
    return meta


def write_split(spark, plan: SplitPlan, dest: str, name: str, class_names: list,
                partition_mb: float, row_group_mb: float) -> records.DatasetMeta:
    """Write one planned split as a dataset at `dest`, atomically; returns its metadata."""
    h, w, c = plan.source.shape
    n_parts = partition_count(plan.rows * h * w * c, plan.rows, partition_mb, spark.sparkContext.defaultParallelism)
    bounds = [int(b) for b in np.linspace(plan.start, plan.stop, n_parts + 1)]
    reader = functools.partial(_read_partitions, plan, bounds, len(class_names))
    frame = spark.range(0, n_parts, 1, n_parts).mapInArrow(reader, records.SPARK_DDL)
    meta = records.DatasetMeta(name=name, split=plan.split, num_rows=0, height=h, width=w, channels=c,
                               class_names=list(class_names),
                               source=f"{plan.source.describe()}[{plan.start}:{plan.stop}]")
    return publish_dataset(spark, frame, dest, meta, row_group_mb, plan.rows)


def plan_splits(train, test, limit_train=None, limit_test=None, validation_rows: int = 0) -> list:
    """train (+ val from its tail) and test plans from two sources (test may be None)."""
    rows = min(limit_train or train.rows, train.rows)
    if validation_rows >= rows:
        raise IngestError(f"ingest.validation_rows={validation_rows} leaves no training rows out of {rows}")
    cut = rows - validation_rows
    plan = [SplitPlan("train", train, 0, cut)]
    if validation_rows:
        plan.append(SplitPlan("val", train, cut, rows))
    if test is not None:
        plan.append(SplitPlan("test", test, 0, min(limit_test or test.rows, test.rows)))
    return plan


def open_sources(cfg: Config, log: Callable[[str], None]) -> tuple:
    """({'train': source, 'test': source or None}, class_names) for the configured array format."""
    from . import sources
    from .fetch import IDX_DATASETS, fetch_idx_dataset
    d = cfg.data
    scratch = os.path.join(os.path.expanduser(d.cache_dir), "unpacked")
    if d.format in IDX_DATASETS or d.format == "idx":
        if d.format == "idx":
            files = _user_idx_files(d.path)
            class_names = None
        else:
            files = fetch_idx_dataset(d.format, d.cache_dir, d.source, d.path, log=log)
            class_names = IDX_DATASETS[d.format].class_names
        train = sources.open_idx_pair(files["train_images"], files["train_labels"], scratch)
        test = (sources.open_idx_pair(files["test_images"], files["test_labels"], scratch)
                if "test_images" in files else None)
        if class_names is None:
            class_names = [str(k) for k in range(int(_max_label(train, test)) + 1)]
        return {"train": train, "test": test}, class_names
    if d.format in ("cifar10", "cifar100"):
        from .cifar import open_cifar
        found, class_names = open_cifar(d.path, d.format, scratch, cfg.ingest.coarse_labels, log)
        return found, class_names
    if d.format == "npz":
        found = sources.open_npz(d.path, scratch)
        class_names = [str(k) for k in range(int(_max_label(found["train"], found.get("test"))) + 1)]
        return {"train": found["train"], "test": found.get("test")}, class_names
    raise IngestError(f"data.format '{d.format}' is not an array format")


def _max_label(*srcs) -> int:
    """Class count for sources that carry no names: the largest label seen (read in chunks)."""
    top = 0
    for src in srcs:
        if src is None:
            continue
        for lo in range(0, src.rows, 65536):
            _, labels = src.read(lo, min(src.rows, lo + 65536))
            if labels.size:
                top = max(top, int(labels.max()))
    return top


def _user_idx_files(folder) -> dict:
    """train-/t10k- IDX files (raw or .gz) in a user's folder, MNIST naming."""
    if not folder or not os.path.isdir(folder):
        raise IngestError(f"data.path {folder!r} must be a folder holding the IDX files for format 'idx'")
    out = {}
    for role, stem in (("train_images", "train-images"), ("train_labels", "train-labels"),
                       ("test_images", "t10k-images"), ("test_labels", "t10k-labels")):
        hits = sorted(n for n in os.listdir(folder) if n.startswith(stem) and "ubyte" in n)
        if hits:
            out[role] = os.path.join(folder, hits[0])
    if "train_images" not in out or "train_labels" not in out:
        raise IngestError(f"{folder}: needs train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] "
                          f"(found {', '.join(sorted(os.listdir(folder))) or 'nothing'})")
    if ("test_images" in out) != ("test_labels" in out):
        raise IngestError(f"{folder}: has only one of t10k-images / t10k-labels")
    return out


def ingest_stage(spark, cfg: Config, store, log: Callable[[str], None] = print) -> dict:
    """The CLI stage; datasets live outside any one run, so the run store is not used."""
    return ingest(spark, cfg, log)


def ingest(spark, cfg: Config, log: Callable[[str], None] = print) -> dict:
    """Fetch or open the configured source and write its splits. Returns {split: meta}."""
    if cfg.data.format == "folder":
        from .image_folder import ingest_folder
        return ingest_folder(spark, cfg, log)
    found, class_names = open_sources(cfg, log)
    plan = plan_splits(found["train"], found.get("test"), cfg.ingest.limit_train, cfg.ingest.limit_test,
                       cfg.ingest.validation_rows)
    metas = {}
    for part in plan:
        dest = cfg.dataset_dir(part.split)
        meta = write_split(spark, part, dest, cfg.data.dataset, class_names,
                           cfg.ingest.partition_mb, cfg.ingest.row_group_mb)
        log(f"[ingest] {part.split}: read {part.rows} = written {meta.num_rows} + rejected {meta.rejected} -> {dest}")
        metas[part.split] = meta
    return metas
