"""Driver side of batch scoring: predictions Parquet + metrics.json for a dataset split.

The model travels to executors as a broadcast of its bytes (a few MB), so
executors need no access to the run directory; they load it once per Python
worker (see score_remote).  Metrics are computed by Spark from the written
predictions, so nothing image-sized is ever collected to the driver.
"""
from __future__ import annotations

import functools
import hashlib
import os
import time
from typing import Callable

import numpy as np

from . import records
from .config import Config
from .score_remote import PREDICTION, PREDICTIONS_DDL, PROBABILITIES, score_batches
from .store import RunStore, atomic_dir, write_json_atomic


def threads_per_task(spark) -> int:
    """A Spark task owns spark.task.cpus cores; TF in that task should use exactly those."""
    return max(1, int(spark.conf.get("spark.task.cpus", "1")))


def predict_dataset(spark, dataset_dir: str, model_bytes: bytes, batch_size: int):
    """A lazy DataFrame of predictions for every row of the dataset."""
    meta = records.read_meta(dataset_dir)
    model_bc = spark.sparkContext.broadcast(model_bytes)
    digest = hashlib.sha256(model_bytes).hexdigest()
    scorer = functools.partial(score_batches, model_bc, digest, meta.shape, batch_size, threads_per_task(spark))
    frame = spark.read.parquet(os.path.realpath(dataset_dir)).select(records.ID, records.LABEL, records.IMAGE)
    return frame.mapInArrow(scorer, PREDICTIONS_DDL), meta


def classification_metrics(confusion: np.ndarray, class_names: list) -> dict:
    """Accuracy and per-class precision/recall/F1 from a confusion matrix (rows: true, cols: predicted)."""
    total = int(confusion.sum())
    correct = int(np.trace(confusion))
    per_class = []
    for k, name in enumerate(class_names):
        tp = int(confusion[k, k])
        predicted = int(confusion[:, k].sum())
        support = int(confusion[k, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append({"class": k, "name": name, "precision": precision, "recall": recall,
                          "f1": f1, "support": support})
    return {
        "rows": total,
        "accuracy": correct / total if total else 0.0,
        "macro_f1": float(np.mean([c["f1"] for c in per_class])) if per_class else 0.0,
        "confusion_matrix": confusion.astype(int).tolist(),
        "per_class": per_class,
    }


def metrics_from_predictions(spark, predictions_dir: str, class_names: list) -> dict:
    from pyspark.sql import functions as F
    preds = spark.read.parquet(predictions_dir)
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    for row in preds.groupBy(records.LABEL, PREDICTION).count().collect():
        confusion[row[records.LABEL], row[PREDICTION]] = row["count"]
    p_true = F.element_at(F.col(PROBABILITIES), F.col(records.LABEL) + 1)
    loss = preds.select(F.avg(-F.log(F.greatest(p_true, F.lit(1e-7))))).first()[0]
    metrics = classification_metrics(confusion, class_names)
    metrics["loss"] = float(loss) if loss is not None else None
    return metrics


def score(spark, cfg: Config, store: RunStore, log: Callable[[str], None] = print) -> dict:
    split = cfg.score.split
    dataset_dir = cfg.dataset_dir(split)
    with open(store.require(store.model_path, "train"), "rb") as f:
        model_bytes = f.read()
    t0 = time.perf_counter()
    predictions, meta = predict_dataset(spark, dataset_dir, model_bytes, cfg.score.batch_size)
    with atomic_dir(store.predictions_dir) as staging:
        predictions.write.parquet(staging)
    seconds = time.perf_counter() - t0
    metrics = metrics_from_predictions(spark, store.predictions_dir, meta.class_names)
    if metrics["rows"] != meta.num_rows:
        raise RuntimeError(f"{store.predictions_dir}: {metrics['rows']} predictions for {meta.num_rows} rows of {dataset_dir}")
    metrics.update(split=split, dataset=os.path.realpath(dataset_dir), model=store.model_path,
                   scoring_seconds=seconds, rows_per_second=meta.num_rows / seconds)
    write_json_atomic(store.metrics_path, metrics)
    log(f"[score] {split}: {metrics['rows']} rows, accuracy {metrics['accuracy']:.4f}, "
        f"loss {metrics['loss']:.4f} ({seconds:.1f}s) -> {store.metrics_path}")
    return metrics
