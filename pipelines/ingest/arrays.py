"""Array sources (IDX, CIFAR, .npz): planned row ranges of a source, written as dataset splits.

Tasks read their own row range of the source file (memory-mapped or seeked), so no
process ever holds the whole array; a split is published only when the rows and the
id sum the tasks report match the plan.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import numpy as np

from pipelines.core import records, storage
from pipelines.core.config import Config
from pipelines.core.errors import IngestCheckError, IngestSetupError
from pipelines.core.store import atomic_dirs
from pipelines.datasets.publish import SplitWritten, check_part_files, partition_count, run_ingest_tasks
from pipelines.ingest.remote import write_ranges

logger = logging.getLogger("sparkcnn.ingest")


@dataclass(frozen=True)
class SplitPlan:
    """Rows [start, stop) of a source, destined for one dataset split."""
    split: str
    source: object      # a pipelines.ingest.sources.*Source
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start
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
                                                                       row_group_mb, storage.active_context()))
        for plan in plans:
            dest, got = dests[plan.split], written.get(plan.split, SplitWritten())
            expected_id_sum = (plan.start + plan.stop - 1) * plan.rows // 2 % 2 ** 64
            if got.rows != plan.rows or got.id_sum % 2 ** 64 != expected_id_sum:
                raise IngestCheckError(f"{dest}: tasks wrote {got.rows} rows (id sum {got.id_sum}) but "
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
        raise IngestSetupError(f"ingest.validation_rows={validation_rows} leaves no training rows out of {rows}")
    cut = rows - validation_rows
    plan = [SplitPlan("train", train, 0, cut)]
    if validation_rows:
        plan.append(SplitPlan("val", train, cut, rows))
    if test is not None:
        plan.append(SplitPlan("test", test, 0, min(limit_test or test.rows, test.rows)))
    return plan


def open_sources(cfg: Config) -> tuple:
    """({'train': source, 'test': source or None}, class_names) for the configured array format."""
    from pipelines.ingest import sources
    from pipelines.ingest.fetch import IDX_DATASETS, fetch_idx_dataset
    d = cfg.data
    scratch = os.path.join(os.path.expanduser(d.cache_dir), "unpacked")
    if d.format in IDX_DATASETS or d.format == "idx":
        if d.format == "idx":
            files = _user_idx_files(d.path)
            class_names = None
        else:
            files = fetch_idx_dataset(d.format, d.cache_dir, d.source, d.path)
            class_names = IDX_DATASETS[d.format].class_names
        train = sources.open_idx_pair(files["train_images"], files["train_labels"], scratch)
        test = (sources.open_idx_pair(files["test_images"], files["test_labels"], scratch)
                if "test_images" in files else None)
        if class_names is None:
            class_names = [str(k) for k in range(int(_max_label(train, test)) + 1)]
        return {"train": train, "test": test}, class_names
    if d.format in ("cifar10", "cifar100"):
        from pipelines.ingest.cifar import open_cifar
        found, class_names = open_cifar(d.path, d.format, scratch, cfg.ingest.coarse_labels)
        return found, class_names
    if d.format == "npz":
        found = sources.open_npz(d.path, scratch)
        class_names = [str(k) for k in range(int(_max_label(found["train"], found.get("test"))) + 1)]
        return {"train": found["train"], "test": found.get("test")}, class_names
    raise IngestSetupError(f"data.format '{d.format}' is not an array format")


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
    if not folder or not storage.isdir(folder):
        raise IngestSetupError(f"data.path {storage.redact(folder)!r} must be a folder holding the IDX files for format 'idx'")
    names = storage.listdir(folder)
    out = {}
    for role, stem in (("train_images", "train-images"), ("train_labels", "train-labels"),
                       ("test_images", "t10k-images"), ("test_labels", "t10k-labels")):
        hits = sorted(n for n in names if n.startswith(stem) and "ubyte" in n)
        if hits:
            out[role] = storage.join(folder, hits[0])
    if "train_images" not in out or "train_labels" not in out:
        raise IngestSetupError(f"{folder}: needs train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] "
                          f"(found {', '.join(names) or 'nothing'})")
    if ("test_images" in out) != ("test_labels" in out):
        raise IngestSetupError(f"{folder}: has only one of t10k-images / t10k-labels")
    return out
