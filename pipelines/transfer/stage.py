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

With the run directory on a remote store, the features and predictions are written by the
storage layer's Python tasks (vectors stored as float arrays, turned back into vectors on
reading), and the PipelineModel, which only Spark ML's own writer can save, is saved to local
disk and uploaded: that needs the driver and executors to share a disk (a local master).  On a
cluster it is saved by Spark ML to the URL itself, which needs the cluster's Hadoop connector
for that store (s3a, gcs, abfs).
"""
from __future__ import annotations

import logging
import time
from typing import Optional

from pipelines.inference.pretrained.registry import FeaturizerConfigError, check_weights, get_spec
from pipelines.core import records, storage
from pipelines.core.config import Config, ConfigError
from pipelines.core.metrics import prediction_metrics
from pipelines.core.parquet_io import read_frame, write_frame
from pipelines.core.records import PREDICTION
from pipelines.core.store import RunStore, atomic_dir, resolve, write_json_atomic

logger = logging.getLogger("sparkcnn.transfer")

FEATURES = "features"
PROBABILITY = "probability"


def train_features_dir(store: RunStore) -> str:
    return storage.join(store.root, "transfer_features", "train")


def _vectors_as_arrays(frame, *columns):
    """Remote outputs go through Arrow, which has no vector type: store vectors as float arrays."""
    from pyspark.ml.functions import vector_to_array
    for column in columns:
        frame = frame.withColumn(column, vector_to_array(column, "float32"))
    return frame


def _hadoop_url(dest: str) -> str:
    """The URL Spark ML's own (JVM) writer and reader need: the cluster's connector's scheme for S3."""
    return dest.replace("s3://", "s3a://", 1)


def _save_model(spark, model, dest: str) -> None:
    from pipelines.core.session import is_local_master
    if not storage.is_remote(dest):
        with atomic_dir(dest) as staging:
            model.write().save(staging)
    elif is_local_master(spark.sparkContext.master):
        with atomic_dir(dest, local_build=True) as staging:
            model.write().save(staging)
    else:
        model.write().overwrite().save(_hadoop_url(dest))


def _load_model(spark, dest: str):
    import tempfile

    from pyspark.ml import PipelineModel

    from pipelines.core.session import is_local_master
    if not storage.is_remote(dest):
        return PipelineModel.load(dest)
    if not is_local_master(spark.sparkContext.master):
        return PipelineModel.load(_hadoop_url(dest))
    local = tempfile.mkdtemp(prefix="sparkcnn-transfer-model-")
    storage.download_dir(resolve(dest), local)
    return PipelineModel.load(local)


def first_rows(spark, dataset_dir: str, limit: Optional[int]):
    """The first `limit` rows by id (all when None), spread over every core.

    A prefix of ids usually sits in one Parquet file, i.e. one task; the
    repartition (a shuffle of small raw images) lets every core featurize.
    """
    from pyspark.sql import functions as F
    meta = records.read_meta(dataset_dir)
    frame = read_frame(spark, dataset_dir, list(records.COLUMNS))
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
    preds = read_frame(spark, predictions_dir)
    metrics = prediction_metrics(preds, class_names, probabilities_col=PROBABILITY)
    evaluator = MulticlassClassificationEvaluator(labelCol=records.LABEL, predictionCol=PREDICTION)
    metrics["weighted_f1"] = evaluator.setMetricName("f1").evaluate(preds)
    metrics["spark_accuracy"] = evaluator.setMetricName("accuracy").evaluate(preds)
    return metrics


def transfer(spark, cfg: Config, store: RunStore) -> dict:
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import LogisticRegression
    t = cfg.transfer
    featurizer = _featurizer(cfg)
    for split in ("train", "test"):
        store.require(cfg.dataset_dir(split), "ingest")
    train, train_rows, meta = first_rows(spark, cfg.dataset_dir("train"), t.train_rows)
    test, test_rows, _ = first_rows(spark, cfg.dataset_dir("test"), t.test_rows)
    dim = get_spec(t.model).feature_dim
    logger.info(f"[transfer] {t.model} ({t.weights}) -> {dim}-d features for {train_rows} train / {test_rows} "
                "test images")

    t0 = time.perf_counter()
    remote = storage.is_remote(store.root)
    with atomic_dir(train_features_dir(store)) as staging:
        features = featurizer.transform(train).select(records.ID, records.LABEL, FEATURES)
        write_frame(_vectors_as_arrays(features, FEATURES) if remote else features, staging)
    featurize_seconds = time.perf_counter() - t0
    logger.info(f"[transfer] featurized {train_rows} train images in {featurize_seconds:.1f}s "
                f"({train_rows / featurize_seconds:.1f} images/s)")

    t0 = time.perf_counter()
    lr = LogisticRegression(featuresCol=FEATURES, labelCol=records.LABEL, predictionCol=PREDICTION,
                            probabilityCol=PROBABILITY, maxIter=t.max_iter, regParam=t.reg_param,
                            elasticNetParam=t.elastic_net, family="multinomial")
    features = read_frame(spark, train_features_dir(store))
    if remote:
        from pyspark.ml.functions import array_to_vector
        features = features.withColumn(FEATURES, array_to_vector(FEATURES))
    lr_model = lr.fit(features)
    fit_seconds = time.perf_counter() - t0
    train_accuracy = lr_model.summary.accuracy
    logger.info(f"[transfer] LogisticRegression: {lr_model.summary.totalIterations} iterations, "
                f"train accuracy {train_accuracy:.4f} ({fit_seconds:.1f}s)")

    _save_model(spark, PipelineModel(stages=[featurizer, lr_model]), store.transfer_model_dir)

    t0 = time.perf_counter()
    loaded = _load_model(spark, store.transfer_model_dir)  # score with what was saved, as a user's job would
    with atomic_dir(store.predictions_dir) as staging:
        predictions = loaded.transform(test).select(records.ID, records.LABEL, PREDICTION, PROBABILITY)
        write_frame(_vectors_as_arrays(predictions, PROBABILITY) if remote else predictions, staging)
    predict_seconds = time.perf_counter() - t0
    metrics = evaluate(spark, store.predictions_dir, meta.class_names)
    if metrics["rows"] != test_rows:
        raise RuntimeError(f"{store.predictions_dir}: {metrics['rows']} predictions for {test_rows} test rows")
    metrics.update(split="test", dataset=resolve(cfg.dataset_dir("test")), model=store.transfer_model_dir,
                   transfer={"model": t.model, "weights": t.weights, "feature_dim": dim,
                             "train_rows": train_rows, "test_rows": test_rows,
                             "train_accuracy": train_accuracy,
                             "featurize_train_seconds": round(featurize_seconds, 2),
                             "featurize_images_per_second": round(train_rows / featurize_seconds, 2),
                             "fit_seconds": round(fit_seconds, 2),
                             "predict_test_seconds": round(predict_seconds, 2)})
    write_json_atomic(store.metrics_path, metrics)
    logger.info(f"[transfer] test: {metrics['rows']} rows, accuracy {metrics['accuracy']:.4f}, "
                f"weighted F1 {metrics['weighted_f1']:.4f}, macro F1 {metrics['macro_f1']:.4f} -> {store.metrics_path}")
    logger.info(f"[transfer] PipelineModel -> {store.transfer_model_dir}")
    return metrics
