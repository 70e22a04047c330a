"""One metrics function for every scoring stage, whatever type the probabilities column has."""
import numpy as np
import pytest

from pipelines.core.metrics import classification_metrics, prediction_metrics

LABELS = [0, 0, 1, 1, 2, 2, 2]
PROBS = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.6, 0.2], [0.0, 1.0, 0.0],
         [0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.0, 0.0, 1.0]]


def _expected():
    probs = np.asarray(PROBS)
    predicted = probs.argmax(axis=1)
    loss = float(np.mean(-np.log(np.maximum(probs[np.arange(len(LABELS)), LABELS], 1e-7))))
    confusion = np.zeros((3, 3), np.int64)
    for t, p in zip(LABELS, predicted):
        confusion[t, p] += 1
    return predicted, loss, confusion


@pytest.mark.parametrize("as_vector", [False, True])
def test_metrics_from_array_or_vector_probabilities(spark, as_vector):
    from pyspark.ml.linalg import Vectors
    predicted, loss, confusion = _expected()
    rows = [(i, t, int(p), Vectors.dense(q) if as_vector else [float(v) for v in q])
            for i, (t, p, q) in enumerate(zip(LABELS, predicted, PROBS))]
    frame = spark.createDataFrame(rows, ["id", "label", "prediction", "probabilities"])
    metrics = prediction_metrics(frame, ["a", "b", "c"])
    assert metrics["confusion_matrix"] == confusion.tolist()
    assert metrics["accuracy"] == pytest.approx(6 / 7) and metrics["rows"] == 7
    assert metrics["loss"] == pytest.approx(loss, rel=1e-6)
    assert metrics == {**classification_metrics(confusion, ["a", "b", "c"]), "loss": metrics["loss"]}
