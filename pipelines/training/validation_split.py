"""Validation rows for training when `train.validation` names a fraction or a column.

Horovod's Spark estimators take `validation` as either a fraction of the
training DataFrame or the name of a 0/1 column; users of this pipeline get
the same two choices.  Petastorm readers shard whole datasets, so the split is
materialised once, by Spark, as two record-contract datasets in the run
directory (`<run>/validation/{train,val}`), written atomically like every
other output.  Rows are chosen by a hash of their id and train.seed, never by
position, so reruns, repartitioning and resumed runs hold out the same rows.
A marker remembers which dataset version and setting produced the split, so
a rerun (or a resume after a killed training) reuses it instead of rewriting.
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple

from pipelines.core import records, storage
from pipelines.core.errors import SparkcnnError
from pipelines.core.parquet_io import read_frame
from pipelines.core.store import RunStore, exists, read_json, write_json_atomic
from pipelines.datasets.publish import publish_dataset
from pipelines.training.section import TrainSection

logger = logging.getLogger("sparkcnn.training")
HASH_BUCKETS = 1_000_000


class ValidationSplitError(SparkcnnError, ValueError):
    """train.validation cannot be applied to the training split; the message says why."""


def held_out_datasets(spark, settings: TrainSection, source: records.PublishedDataset,
                      val: Optional[records.PublishedDataset], store: RunStore,
                      row_group_mb: float) -> Tuple[records.PublishedDataset, Optional[records.PublishedDataset]]:
    """(train, val) datasets for settings.validation; (source, val) unchanged when it is null."""
    setting = settings.validation
    if setting is None:
        return source, val
    source_dir = source.location
    out_root = storage.join(store.root, "validation")
    train_dir, val_dir = storage.join(out_root, "train"), storage.join(out_root, "val")
    marker_path = storage.join(out_root, "source.json")
    marker = {"source": source.url, "validation": setting, "seed": settings.seed}
    if (exists(marker_path) and read_json(marker_path) == marker
            and exists(train_dir) and exists(val_dir)):
        logger.info(f"[train] validation split of {source_dir} by {setting!r}: reusing {out_root}")
        return records.open_dataset(train_dir), records.open_dataset(val_dir)
    meta = source.meta
    frame = read_frame(spark, source_dir)          # within a fit: the version `source` pinned
    is_val = _validation_flag(frame, setting, settings.seed, source_dir)
    frame = frame.withColumn("_is_val", is_val)
    counts = {bool(r["_is_val"]): int(r["count"]) for r in frame.groupBy("_is_val").count().collect()}
    n_val, n_train = counts.get(True, 0), counts.get(False, 0)
    if n_val == 0 or n_train == 0:
        raise ValidationSplitError(f"{source_dir}: train.validation={setting!r} leaves {n_train} training and "
                                   f"{n_val} validation rows; both must be non-zero")
    for dest, flag, rows in ((train_dir, False, n_train), (val_dir, True, n_val)):
        part = records.DatasetMeta(name=meta.name, split="val" if flag else meta.split, num_rows=0,
                                   height=meta.height, width=meta.width, channels=meta.channels,
                                   class_names=list(meta.class_names),
                                   source=f"{source_dir} where validation={setting!r} is {flag}")
        publish_dataset(spark, frame.where(frame["_is_val"] == flag).select(*records.COLUMNS), dest, part,
                        row_group_mb, rows)
    write_json_atomic(marker_path, marker)
    logger.info(f"[train] validation split of {source_dir} by {setting!r}: {n_train} training + {n_val} "
                "validation rows")
    return records.open_dataset(train_dir), records.open_dataset(val_dir)   # in a fit: what was just published


def _validation_flag(frame, setting, seed: int, source_dir: str):
    """A boolean Column: True for validation rows."""
    from pyspark.sql import functions as F
    if isinstance(setting, str):
        if setting not in frame.columns:
            raise ValidationSplitError(f"{source_dir}: train.validation names column '{setting}', but the dataset's "
                                       f"columns are {', '.join(frame.columns)}")
        kind = frame.schema[setting].dataType.typeName()
        if kind not in ("boolean", "byte", "short", "integer", "long"):
            raise ValidationSplitError(f"{source_dir}: validation column '{setting}' is {kind}; expected boolean or 0/1")
        bad = frame.where(F.col(setting).isNull() | ~F.col(setting).cast("int").isin(0, 1)).count()
        if bad:
            raise ValidationSplitError(f"{source_dir}: validation column '{setting}' has {bad} row(s) that are "
                                       "null or not 0/1")
        return F.col(setting).cast("boolean")
    bucket = F.pmod(F.xxhash64(F.col(records.ID), F.lit(seed)), F.lit(HASH_BUCKETS))
    return bucket < F.lit(int(round(float(setting) * HASH_BUCKETS)))
