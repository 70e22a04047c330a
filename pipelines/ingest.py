"""Ingest: raw dataset files -> Parquet datasets that follow the record contract.

An ingest is one Spark job.  Its tasks read their own rows (array-like sources
such as IDX, CIFAR and .npz by row range; image folders by file list, see
pipelines.image_folder) and write Parquet part files themselves
(pipelines.ingest_remote), so no process ever holds the whole dataset and the
job scales with executors.  The driver gets a small summary per task, checks
`read = written + rejected` and each file's row count, writes the metadata
sidecars and publishes every output of the job together, or none of them.
Partition count comes from the data size, with at least one partition per
core and split; row groups are kept small (a few MB) because a row group is
the unit that Petastorm shards across Horovod workers and shuffles.
"""
from __future__ import annotations

import functools
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from . import records
from .config import Config
from .ingest_remote import MB, IngestError, write_ranges
from .store import atomic_dir, atomic_dirs

__all__ = ["IngestError", "SplitPlan", "partition_count", "publish_dataset", "write_split", "write_splits",
           "plan_splits", "open_sources", "ingest", "ingest_stage"]


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


@dataclass
class SplitWritten:
    """What the tasks of one job wrote for one split, summed from their summaries."""
    rows: int = 0
    id_sum: int = 0
    class_counts: Counter = field(default_factory=Counter)
    files: list = field(default_factory=list)
    ids: list = field(default_factory=list)

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
    for name in os.listdir(staging):
        if name.startswith("_tmp-"):
            os.remove(os.path.join(staging, name))
    on_disk = sorted(n for n in os.listdir(staging) if n.endswith(".parquet"))
    if on_disk != sorted(written.files):
        raise IngestError(f"{dest}: the tasks reported files {sorted(written.files)} but {staging} holds {on_disk}")
    rows = sum(pq.read_metadata(os.path.join(staging, n)).num_rows for n in on_disk)
    if rows != written.rows:
        raise IngestError(f"{dest}: the part files hold {rows} rows but the tasks reported {written.rows}")


def publish_dataset(spark, frame, dest: str, meta: records.DatasetMeta, row_group_mb: float,
                    expected_rows: int) -> records.DatasetMeta:
    """Write a record-contract DataFrame to `dest` atomically, with counts checked and the sidecar.

    For DataFrames computed by Spark (the validation split); ingest writes its files from tasks.
    """
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


def write_splits(spark, plans: list, dests: dict, name: str, class_names: list,
                 partition_mb: float, row_group_mb: float) -> dict:
    """Write planned splits of array sources to dests[split], in one Spark job; -> {split: meta}.

    All splits are published together once every check has passed.
    """
    slots = spark.sparkContext.defaultParallelism
    tasks = []
    for plan in plans:
        h, w, c = plan.source.shape
        n_parts = partition_count(plan.rows * h * w * c, plan.rows, partition_mb, slots)
        bounds = [int(b) for b in np.linspace(plan.start, plan.stop, n_parts + 1)]
        tasks += [(len(tasks) + i, plan.split, plan.source, lo, hi)
                  for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])) if hi > lo]
    metas = {}
    with atomic_dirs([dests[p.split] for p in plans]) as stagings:
        folders = {p.split: stagings[dests[p.split]] for p in plans}
        written, _ = run_ingest_tasks(spark, tasks, functools.partial(write_ranges, folders, len(class_names),
                                                                       row_group_mb))
        for plan in plans:
            dest, got = dests[plan.split], written.get(plan.split, SplitWritten())
            expected_id_sum = (plan.start + plan.stop - 1) * plan.rows // 2 % 2 ** 64
            if got.rows != plan.rows or got.id_sum % 2 ** 64 != expected_id_sum:
                raise IngestError(f"{dest}: tasks wrote {got.rows} rows (id sum {got.id_sum}) but "
                                  f"{plan.rows} were planned (id sum {expected_id_sum})")
            check_part_files(folders[plan.split], dest, got)
            h, w, c = plan.source.shape
            meta = records.DatasetMeta(name=name, split=plan.split, num_rows=got.rows, height=h, width=w, channels=c,
                                       class_names=list(class_names), class_counts=got.sorted_class_counts(),
                                       source=f"{plan.source.describe()}[{plan.start}:{plan.stop}]")
            records.write_meta(folders[plan.split], meta)
            metas[plan.split] = meta
    return metas


def write_split(spark, plan: SplitPlan, dest: str, name: str, class_names: list,
                partition_mb: float, row_group_mb: float) -> records.DatasetMeta:
    """Write one planned split as a dataset at `dest`, atomically; returns its metadata."""
    return write_splits(spark, [plan], {plan.split: dest}, name, class_names, partition_mb, row_group_mb)[plan.split]


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
    """Class count for sources that carry no names: the largest label seen (labels only, in chunks)."""
    top = 0
    for src in srcs:
        if src is None:
            continue
        for lo in range(0, src.rows, 1 << 20):
            labels = src.read_labels(lo, min(src.rows, lo + (1 << 20)))
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
    dests = {part.split: cfg.dataset_dir(part.split) for part in plan}
    metas = write_splits(spark, plan, dests, cfg.data.dataset, class_names, cfg.ingest.partition_mb,
                         cfg.ingest.row_group_mb)
    for part in plan:
        meta = metas[part.split]
        log(f"[ingest] {part.split}: read {part.rows} = written {meta.num_rows} + rejected {meta.rejected} "
            f"-> {dests[part.split]}")
    return metas
