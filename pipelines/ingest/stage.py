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

import logging

from pipelines.core import storage
from pipelines.core.config import Config
from pipelines.core.errors import IngestSetupError
from pipelines.core.progress import expect_rows
from pipelines.core.store import published_url
from pipelines.ingest.arrays import open_sources, plan_splits, write_splits
from pipelines.ingest.folder import ingest_folder

logger = logging.getLogger("sparkcnn.ingest")


def ingest_stage(spark, cfg: Config, store) -> dict:
    """The CLI stage; datasets live outside any one run, so the run store is not used."""
    return ingest(spark, cfg)


def _check_executors_can_read(spark, cfg: Config, found: dict) -> None:
    """Remote raw files that had to be unpacked (gzip, tar, npz) are on the driver's disk only."""
    from pipelines.core.session import is_local_master
    if not (cfg.data.path and storage.is_remote(cfg.data.path)) or is_local_master(spark.sparkContext.master):
        return
    local = [p for src in found.values() if src is not None for p in src.paths() if not storage.is_remote(p)]
    if local:
        raise IngestSetupError(f"data.path {storage.redact(cfg.data.path)}: {storage.basename(local[0])} had to be "
                          "unpacked on the driver (gzip, tar or npz), and executors of a cluster cannot read the "
                          "driver's disk: put the unpacked files in the store (e.g. gunzip the IDX files) "
                          "or run with a local master")


def ingest(spark, cfg: Config) -> dict:
    """Fetch or open the configured source and write its splits. Returns {split: meta}."""
    if cfg.data.format == "folder":
        return ingest_folder(spark, cfg)
    found, class_names = open_sources(cfg)
    _check_executors_can_read(spark, cfg, found)
    plan = plan_splits(found["train"], found.get("test"), cfg.ingest.limit_train, cfg.ingest.limit_test,
                       cfg.ingest.validation_rows)
    dests = {part.split: cfg.dataset_dir(part.split) for part in plan}
    expect_rows(sum(part.rows for part in plan))         # for the progress lines
    metas = write_splits(spark, plan, dests, cfg.data.dataset, class_names, cfg.ingest.partition_mb,
                         cfg.ingest.row_group_mb)
    for part in plan:
        meta = metas[part.split]
        logger.info(f"[ingest] {part.split}: read {part.rows} = written {meta.num_rows} + rejected {meta.rejected} "
                    f"-> {published_url(dests[part.split])}")
    return metas
