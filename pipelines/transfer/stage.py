"""`sparkcnn transfer`: the seeds' transfer-learning recipe on a sparkcnn dataset.

    DeepImageFeaturizer (pretrained CNN, frozen) -> LogisticRegression, as one PipelineModel.

Steps, all Spark jobs (no images reach the driver):
  1. featurize the training rows once and keep the vectors as Parquet
     (LogisticRegression makes many passes; re-running the CNN for each would be the cost);
  2. fit LogisticRegression on those vectors;
  3. save PipelineModel([featurizer, lr_model]) to runs/<run>/transfer_model;
  4. load it back and transform the test rows, as a user's scoring job would, writing
     predictions Parquet; metrics (accuracy, F1, confusion matrix) come from that Parquet;
  5. the run report (pipelines/report/stage.py) with the confusion matrix and misclassified images.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional

from featurizers.registry import FeaturizerConfigError, check_weights, get_spec
from pipelines.core import records
from pipelines.core.config import Config, ConfigError
from pipelines.core.metrics import prediction_metrics
from pipelines.core.records import PREDICTION
from pipelines.core.store import RunStore, atomic_dir, write_json_atomic

FEATURES = "features"
PROBABILITY = "probability"


def train_features_dir(store: RunStore) -> str:
    return os.path.join(store.root, "transfer_features", "train")


def first_rows(spark, dataset_dir: str, limit: Optional[int]):
    """The first `limit` rows by id (all when None), spread over every core.

    A prefix of ids usually sits in one Parquet file, i.e. one task; the
    repartition (a shuffle of small raw images) lets every core featurize.
    """
    from pyspark.sql import functions as F
    meta = records.read_meta(dataset_dir)
    frame = spark.read.parquet(os.path.realpath(dataset_dir)).select(*records.COLUMNS)
    rows = meta.num_rows
    if limit is not None and limit < meta.num_rows:
        start = frame.agg(F.min(records.ID)).first()[0]
        frame = frame.where(F.col(records.ID) < start + limit)
        rows = limit
    parts = max(spark.sparkContext.defaultParallelism, rows // 2000)
    return frame.repartition(parts), rows, meta


def _featurizer(cfg: Config):
    from featurizers.transformers import DeepImageFeaturizer
    t = cfg.transfer
    try:
        check_weights(get_spec(t.model), t.weights)
    except FeaturizerConfigError as exc:
        raise ConfigError(f"{cfg.source}: transfer: {exc}") from None
    return DeepImageFeaturizer(inputCol=records.IMAGE, outputCol=FEATURES, modelName=t.model,
                               weights=t.weights, batchSize=t.batch_size)


def evaluate(spark, predictions_dir: str, class_names: list) -> dict:
    """The metrics every scoring stage writes (pipelines.core.metrics), plus Spark's weighted F1 and accuracy."""
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    preds = spark.read.parquet(predictions_dir)
    metrics = prediction_metrics(preds, class_names, probabilities_col=PROBABILITY)
    evaluator = MulticlassClassificationEvaluator(labelCol=records.LABEL, predictionCol=PREDICTION)
    metrics["weighted_f1"] = evaluator.setMetricName("f1").evaluate(preds)
    metrics["spark_accuracy"] = evaluator.setMetricName("accuracy").evaluate(preds)
    return metrics


def transfer(spark, cfg: Config, store: RunStore, log: Callable[[str], None] = print) -> dict:
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import LogisticRegression
    t = cfg.transfer
    featurizer = _featurizer(cfg)
    if not os.path.exists(cfg.dataset_dir("train")) or not os.path.exists(cfg.dataset_dir("test")):
        from pipelines.ingest.stage import ingest
        log("[transfer] datasets missing: ingesting first")
        ingest(spark, cfg, log)
    train, train_rows, meta = first_rows(spark, cfg.dataset_dir("train"), t.train_rows)
    test, test_rows, _ = first_rows(spark, cfg.dataset_dir("test"), t.test_rows)
    dim = get_spec(t.model).feature_dim
    log(f"[transfer] {t.model} ({t.weights}) -> {dim}-d features for {train_rows} train / {test_rows} test images")

    t0 = time.perf_counter()
    with atomic_dir(train_features_dir(store)) as staging:
        featurizer.transform(train).select(records.ID, records.LABEL, FEATURES).write.parquet(staging)
    featurize_seconds = time.perf_counter() - t0
    log(f"[transfer] featurized {train_rows} train images in {featurize_seconds:.1f}s "
        f"({train_rows / featurize_seconds:.1f} images/s)")

    t0 = time.perf_counter()
    lr = LogisticRegression(featuresCol=FEATURES, labelCol=records.LABEL, predictionCol=PREDICTION,
                            probabilityCol=PROBABILITY, maxIter=t.max_iter, regParam=t.reg_param,
                            elasticNetParam=t.elastic_net, family="multinomial")
    lr_model = lr.fit(spark.read.parquet(train_features_dir(store)))
    fit_seconds = time.perf_counter() - t0
    train_accuracy = lr_model.summary.accuracy
    log(f"[transfer] LogisticRegression: {lr_model.summary.totalIterations} iterations, "
        f"train accuracy {train_accuracy:.4f} ({fit_seconds:.1f}s)")

    with atomic_dir(store.transfer_model_dir) as staging:
        PipelineModel(stages=[featurizer, lr_model]).write().save(staging)

    t0 = time.perf_counter()
    loaded = PipelineModel.load(store.transfer_model_dir)  # score with what was saved, as a user's job would
    with atomic_dir(store.predictions_dir) as staging:
        (loaded.transform(test).select(records.ID, records.LABEL, PREDICTION, PROBABILITY)
         .write.parquet(staging))
    predict_seconds = time.perf_counter() - t0
    metrics = evaluate(spark, store.predictions_dir, meta.class_names)
    if metrics["rows"] != test_rows:
        raise RuntimeError(f"{store.predictions_dir}: {metrics['rows']} predictions for {test_rows} test rows")
    metrics.update(split="test", dataset=os.path.realpath(cfg.dataset_dir("test")), model=store.transfer_model_dir,
                   transfer={"model": t.model, "weights": t.weights, "feature_dim": dim,
                             "train_rows": train_rows, "test_rows": test_rows,
                             "train_accuracy": train_accuracy,
                             "featurize_train_seconds": round(featurize_seconds, 2),
                             "featurize_images_per_second": round(train_rows / featurize_seconds, 2),
                             "fit_seconds": round(fit_seconds, 2),
                             "predict_test_seconds": round(predict_seconds, 2)})
    write_json_atomic(store.metrics_path, metrics)
    log(f"[transfer] test: {metrics['rows']} rows, accuracy {metrics['accuracy']:.4f}, "
        f"weighted F1 {metrics['weighted_f1']:.4f}, macro F1 {metrics['macro_f1']:.4f} -> {store.metrics_path}")
    log(f"[transfer] PipelineModel -> {store.transfer_model_dir}")
    from pipelines.report.stage import report
    metrics["report"] = report(spark, cfg, store, log)
    return metrics
