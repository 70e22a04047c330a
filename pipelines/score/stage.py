"""Driver side of batch scoring: predictions Parquet + metrics.json for a dataset split.

The model travels to executors as a broadcast of its bytes (a few MB), so
executors need no access to the run directory; they load it once per Python
worker (CNNModel, the engine `sparkcnn predict` uses too).  Metrics are computed by Spark from the written
predictions, so nothing image-sized is ever collected to the driver.
"""
from __future__ import annotations

import logging
import time

from pipelines.core import records
from pipelines.core.config import Config
from pipelines.core.metrics import prediction_metrics
from pipelines.core.parquet_io import read_frame, write_frame
from pipelines.core.progress import expect_rows
from pipelines.core.published import reading_once
from pipelines.core.store import (
    RunStore,
    atomic_dir,
    published_url,
    write_json_atomic,
)

logger = logging.getLogger("sparkcnn.score")


def predict_dataset(spark, dataset: records.PublishedDataset, model_location: str, batch_size: int):
    """A lazy DataFrame of predictions (id, label, prediction, probabilities) for every row of the dataset.

    The same engine as `sparkcnn predict` (pipelines.inference.cnn_model): rows already at the model's
    shape go in as one zero-copy view of their Arrow buffer.
    """
    from pipelines.inference.cnn_model import CNNModel
    meta = dataset.meta
    model = CNNModel.from_file(model_location, inputCol=records.IMAGE, inputFormat="record", topKCol="",
                               probabilityCol=records.PROBABILITIES, predictionCol=records.PREDICTION,
                               errorCol="", batchSize=batch_size, resizeMode="stretch",
                               classNames=list(meta.class_names))
    frame = read_frame(spark, dataset.location, [records.ID, records.LABEL, records.HEIGHT, records.WIDTH,
                                            records.CHANNELS, records.IMAGE])
    return model.transform_keeping(frame, [records.ID, records.LABEL])


@reading_once()     # the dataset's manifest and sidecar once, whoever calls
def score(spark, cfg: Config, store: RunStore) -> dict:
    split = cfg.score.split
    dataset = records.open_dataset(cfg.dataset_dir(split))      # read once: its rows, classes and version
    meta = dataset.meta
    model_location = store.require(store.model_path, "train")
    t0 = time.perf_counter()
    predictions = predict_dataset(spark, dataset, model_location, cfg.score.batch_size)
    expect_rows(meta.num_rows)                             # for the progress lines
    with atomic_dir(store.predictions_dir) as staging:
        write_frame(predictions, staging)
    seconds = time.perf_counter() - t0
    metrics = prediction_metrics(read_frame(spark, store.predictions_dir), meta.class_names)
    if metrics["rows"] != meta.num_rows:
        raise RuntimeError(f"{store.predictions_dir}: {metrics['rows']} predictions for {meta.num_rows} rows of "
                           f"{dataset.location}")
    logger.info(f"[score] predictions -> {published_url(store.predictions_dir)}")
    metrics.update(split=split, dataset=dataset.url, model=store.model_path,
                   scoring_seconds=seconds, rows_per_second=meta.num_rows / seconds)
    write_json_atomic(store.metrics_path, metrics)
    logger.info(f"[score] {split}: {metrics['rows']} rows, accuracy {metrics['accuracy']:.4f}, "
                f"loss {metrics['loss']:.4f} ({seconds:.1f}s) -> {store.metrics_path}")
    return metrics
