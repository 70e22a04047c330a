"""One metrics function for every scoring stage (pipelines/core/metrics.py), checked against numbers
worked out by hand on small cases and against Spark's own MulticlassMetrics and
MulticlassClassificationEvaluator on the same real DataFrame, whatever type the probabilities have."""
import math

import pytest

from pipelines.core.metrics import LOG_LOSS_FLOOR, prediction_metrics

NAMES = ["a", "b", "c"]


def _probabilities(predicted: int, k: int = 3) -> list:
    """0.6 for the predicted class, the rest shared: argmax is the prediction."""
    return [0.6 if c == predicted else 0.4 / (k - 1) for c in range(k)]


# Every class in labels and predictions.  Confusion (rows true, columns predicted), by hand:
#   true a: a a a b -> [3, 1, 0]     class a: P 3/4  R 3/4  F1 3/4
#   true b: b a     -> [1, 1, 0]     class b: P 1/4  R 1/2  F1 2*(1/8)/(3/4) = 1/3
#   true c: c b b   -> [0, 2, 1]     class c: P 1/1  R 1/3  F1 2*(1/3)/(4/3) = 1/2
EVERY_CLASS = dict(
    labels=[0, 0, 0, 0, 1, 1, 2, 2, 2], predictions=[0, 0, 0, 1, 1, 0, 2, 1, 1],
    confusion=[[3, 1, 0], [1, 1, 0], [0, 2, 1]], accuracy=5 / 9,
    precision=[3 / 4, 1 / 4, 1.0], recall=[3 / 4, 1 / 2, 1 / 3], f1=[3 / 4, 1 / 3, 1 / 2], support=[4, 2, 3],
    macro_f1=(3 / 4 + 1 / 3 + 1 / 2) / 3,                      # 19/36
    weighted_f1=(4 * 3 / 4 + 2 * 1 / 3 + 3 * 1 / 2) / 9,       # 31/54, not the accuracy
    loss=(5 * -math.log(0.6) + 4 * -math.log(0.2)) / 9)

# Class c is never predicted: its precision is 0 (0 of 0), not an error.
#   true a: a a -> [2, 0, 0]   class a: P 2/4  R 1    F1 2/3
#   true b: b a -> [1, 1, 0]   class b: P 1/1  R 1/2  F1 2/3
#   true c: a   -> [1, 0, 0]   class c: P 0    R 0    F1 0
NEVER_PREDICTED = dict(
    labels=[0, 0, 1, 1, 2], predictions=[0, 0, 1, 0, 0],
    confusion=[[2, 0, 0], [1, 1, 0], [1, 0, 0]], accuracy=3 / 5,
    precision=[1 / 2, 1.0, 0.0], recall=[1.0, 1 / 2, 0.0], f1=[2 / 3, 2 / 3, 0.0], support=[2, 2, 1],
    macro_f1=(2 / 3 + 2 / 3 + 0) / 3, weighted_f1=(2 * 2 / 3 + 2 * 2 / 3 + 0) / 5,
    # the last row's true class gets probability 0: it costs -log(floor), not infinity
    loss=(3 * -math.log(0.6) + 1 * -math.log(0.2) + -math.log(LOG_LOSS_FLOOR)) / 5)

# Class c is in no label (it is predicted once): its recall is 0 (0 of 0) and its support 0.
#   true a: a c -> [1, 0, 1]   class a: P 1/1  R 1/2  F1 2/3
#   true b: b b -> [0, 2, 0]   class b: P 2/2  R 1    F1 1
#   true c:     -> [0, 0, 0]   class c: P 0/1  R 0    F1 0
NEVER_A_LABEL = dict(
    labels=[0, 0, 1, 1], predictions=[0, 2, 1, 1],
    confusion=[[1, 0, 1], [0, 2, 0], [0, 0, 0]], accuracy=3 / 4,
    precision=[1.0, 1.0, 0.0], recall=[1 / 2, 1.0, 0.0], f1=[2 / 3, 1.0, 0.0], support=[2, 2, 0],
    macro_f1=(2 / 3 + 1 + 0) / 3,                               # every named class counts, present or not
    weighted_f1=(2 * 2 / 3 + 2 * 1 + 0) / 4,
    loss=(3 * -math.log(0.6) + -math.log(0.2)) / 4)

CASES = {"every class": EVERY_CLASS, "a class never predicted": NEVER_PREDICTED,
         "a class in no label": NEVER_A_LABEL}


def _frame(spark, case, as_vector=False):
    from pyspark.ml.linalg import Vectors
    rows = []
    for i, (label, predicted) in enumerate(zip(case["labels"], case["predictions"])):
        probs = _probabilities(predicted)
        if case is NEVER_PREDICTED and i == len(case["labels"]) - 1:
            probs = [1.0, 0.0, 0.0]
        rows.append((i, label, predicted, Vectors.dense(probs) if as_vector else probs))
    return spark.createDataFrame(rows, ["id", "label", "prediction", "probabilities"])


@pytest.mark.parametrize("name,as_vector", [(name, False) for name in CASES] + [("every class", True)],
                         ids=[f"{name}, array" for name in CASES] + ["every class, vector"])
def test_metrics_equal_the_hand_computed_values(spark, name, as_vector):
    case = CASES[name]
    metrics = prediction_metrics(_frame(spark, case, as_vector), NAMES)
    assert metrics["rows"] == len(case["labels"])
    assert metrics["confusion_matrix"] == case["confusion"]
    assert metrics["accuracy"] == pytest.approx(case["accuracy"])
    assert [c["name"] for c in metrics["per_class"]] == NAMES
    assert [c["class"] for c in metrics["per_class"]] == [0, 1, 2]
    for field in ("precision", "recall", "f1", "support"):
        assert [c[field] for c in metrics["per_class"]] == pytest.approx(case[field]), field
    assert metrics["macro_f1"] == pytest.approx(case["macro_f1"])
    # metrics.json has no weighted F1 of its own: what its per-class rows give
    weighted = sum(c["f1"] * c["support"] for c in metrics["per_class"]) / metrics["rows"]
    assert weighted == pytest.approx(case["weighted_f1"])
    assert metrics["loss"] == pytest.approx(case["loss"], rel=1e-6)


@pytest.mark.slow   # three Spark evaluations per case, ~8 s each: make test, not the everyday tier
@pytest.mark.parametrize("name", CASES)
def test_metrics_agree_with_spark_on_the_same_dataframe(spark, name):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.mllib.evaluation import MulticlassMetrics
    from pyspark.sql import functions as F
    case = CASES[name]
    frame = _frame(spark, case, as_vector=True)
    ours = prediction_metrics(frame, NAMES)

    pairs = frame.select(F.col("prediction").cast("double"), F.col("label").cast("double")).rdd.map(tuple)
    theirs = MulticlassMetrics(pairs)
    assert ours["accuracy"] == pytest.approx(theirs.accuracy)
    # Spark knows the classes that occur as labels (asked about another it fails: "key not found")
    seen = sorted(set(case["labels"]))
    labelled = [c for c in ours["per_class"] if c["class"] in seen]
    for c in labelled:
        assert c["precision"] == pytest.approx(theirs.precision(float(c["class"]))), c
        assert c["recall"] == pytest.approx(theirs.recall(float(c["class"]))), c
        assert c["f1"] == pytest.approx(theirs.fMeasure(float(c["class"]))), c
    # Spark weighs by the labels it saw, as the weighted F1 above does
    weighted = sum(c["f1"] * c["support"] for c in ours["per_class"]) / ours["rows"]
    assert weighted == pytest.approx(theirs.weightedFMeasure())
    assert theirs.confusionMatrix().toArray().astype(int).tolist() == \
        [[ours["confusion_matrix"][t][p] for p in seen] for t in seen]

    evaluator = MulticlassClassificationEvaluator(labelCol="label", predictionCol="prediction",
                                                  probabilityCol="probabilities")
    typed = frame.withColumn("label", F.col("label").cast("double")).withColumn(
        "prediction", F.col("prediction").cast("double"))
    assert ours["accuracy"] == pytest.approx(evaluator.evaluate(typed, {evaluator.metricName: "accuracy"}))
    assert weighted == pytest.approx(evaluator.evaluate(typed, {evaluator.metricName: "f1"}))
    for c in labelled:
        by_label = {evaluator.metricLabel: float(c["class"]), evaluator.metricName: "fMeasureByLabel"}
        assert c["f1"] == pytest.approx(evaluator.evaluate(typed, by_label))
    if case is not NEVER_PREDICTED:    # Spark clips probabilities at 1e-15, this project at 1e-7
        assert ours["loss"] == pytest.approx(evaluator.evaluate(typed, {evaluator.metricName: "logLoss"}), rel=1e-6)
