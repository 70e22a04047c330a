"""Driver side of batch scoring: predictions Parquet + metrics.json for a dataset split.

The model travels to executors as a broadcast of its bytes (a few MB), so
executors need no access to the run directory; they load it once per Python
worker (see score_remote).  Metrics are computed by Spark from the written
predictions, so nothing image-sized is ever collected to the driver.
"""
from __future__ import annotations

import functools
import hashlib
import time
from typing import Callable

from pipelines.core import records, storage
from pipelines.core.config import Config
from pipelines.core.metrics import prediction_metrics
from pipelines.core.parquet_io import read_frame, write_frame
from pipelines.core.records import PREDICTIONS_DDL
from pipelines.core.store import (
    RunStore,
    atomic_dir,
    published_url,
    resolve,
    write_json_atomic,
)
from pipelines.core.tf_runtime import threads_per_task
from pipelines.score.remote import score_batches


def predict_dataset(spark, dataset_dir: str, model_bytes: bytes, batch_size: int):
    """A lazy DataFrame of predictions for every row of the dataset."""
    meta = records.read_meta(dataset_dir)
    model_bc = spark.sparkContext.broadcast(model_bytes)
    digest = hashlib.sha256(model_bytes).hexdigest()
    scorer = functools.partial(score_batches, model_bc, digest, meta.shape, batch_size, threads_per_task(spark))
    frame = read_frame(spark, dataset_dir, [records.ID, records.LABEL, records.IMAGE])
    return frame.mapInArrow(scorer, PREDICTIONS_DDL), meta


def score(spark, cfg: Config, store: RunStore, log: Callable[[str], None] = print) -> dict:
    split = cfg.score.split
    dataset_dir = cfg.dataset_dir(split)
    model_bytes = storage.read_bytes(store.require(store.model_path, "train"))
    t0 = time.perf_counter()
    predictions, meta = predict_dataset(spark, dataset_dir, model_bytes, cfg.score.batch_size)
    with atomic_dir(store.predictions_dir) as staging:
        write_frame(predictions, staging)
    seconds = time.perf_counter() - t0
    metrics = prediction_metrics(read_frame(spark, store.predictions_dir), meta.class_names)
    if metrics["rows"] != meta.num_rows:
        raise RuntimeError(f"{store.predictions_dir}: {metrics['rows']} predictions for {meta.num_rows} rows of {dataset_dir}")
    log(f"[score] predictions -> {published_url(store.predictions_dir)}")
    metrics.update(split=split, dataset=resolve(dataset_dir), model=store.model_path,
                   scoring_seconds=seconds, rows_per_second=meta.num_rows / seconds)
    write_json_atomic(store.metrics_path, metrics)
    log(f"[score] {split}: {metrics['rows']} rows, accuracy {metrics['accuracy']:.4f}, "
        f"loss {metrics['loss']:.4f} ({seconds:.1f}s) -> {store.metrics_path}")
    return metrics
