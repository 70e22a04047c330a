"""Ingest: raw dataset files -> Parquet datasets that follow the record contract.

An ingest is one Spark job.  Its tasks read their own rows (array-like sources
such as IDX, CIFAR and .npz by row range; image folders by file list, see
pipelines.ingest.folder) and write Parquet part files themselves
(pipelines.ingest.remote), so no process ever holds the whole dataset and the
job scales with executors.  The driver gets a small summary per task, checks
`read = written + rejected` and each file's row count, writes the metadata
sidecars and publishes every output of the job together, or none of them.
Partition count comes from the data size, with at least one partition per
core and split; row groups are kept small (a few MB) because a row group is
the unit that Petastorm shards across Horovod workers and shuffles.
"""
from __future__ import annotations

from typing import Callable

from pipelines.core.config import Config
from pipelines.core.store import published_url
from pipelines.ingest.arrays import open_sources, plan_splits, write_splits
from pipelines.ingest.folder import ingest_folder


def ingest_stage(spark, cfg: Config, store, log: Callable[[str], None] = print) -> dict:
    """The CLI stage; datasets live outside any one run, so the run store is not used."""
    return ingest(spark, cfg, log)


def ingest(spark, cfg: Config, log: Callable[[str], None] = print) -> dict:
    """Fetch or open the configured source and write its splits. Returns {split: meta}."""
    if cfg.data.format == "folder":
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
            f"-> {published_url(dests[part.split])}")
    return metas
