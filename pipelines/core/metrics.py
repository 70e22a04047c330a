"""Classification metrics of a predictions table: one function for every stage that scores.

`score` (a trained CNN's predictions) and `transfer` (a PipelineModel's) both reduce a
predictions DataFrame to the same metrics.json: confusion matrix from one Spark
aggregation, log loss from the true class's probability, per-class precision/recall/F1
from the matrix.  Nothing image-sized reaches the driver.
"""
from __future__ import annotations

import numpy as np

from pipelines.core import records

LOG_LOSS_FLOOR = 1e-7   # a probability of 0 for the true class costs -log(1e-7), not infinity


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


def prediction_metrics(predictions, class_names: list, prediction_col: str = records.PREDICTION,
                       probabilities_col: str = records.PROBABILITIES) -> dict:
    """classification_metrics plus `loss` (mean log loss) of a predictions DataFrame.

    The probabilities column may be an array of floats (sparkcnn's predictions) or a Spark ML
    vector (a fitted classifier's `probability`).
    """
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    for row in predictions.groupBy(records.LABEL, prediction_col).count().collect():
        confusion[int(row[records.LABEL]), int(row[prediction_col])] = row["count"]
    probabilities = F.col(probabilities_col)
    if isinstance(predictions.schema[probabilities_col].dataType, VectorUDT):
        from pyspark.ml.functions import vector_to_array
        probabilities = vector_to_array(probabilities)
    p_true = F.element_at(probabilities, (F.col(records.LABEL) + 1).cast("int"))   # labels may be long or double
    loss = predictions.select(F.avg(-F.log(F.greatest(p_true, F.lit(LOG_LOSS_FLOOR))))).first()[0]
    metrics = classification_metrics(confusion, class_names)
    metrics["loss"] = float(loss) if loss is not None else None
    return metrics
