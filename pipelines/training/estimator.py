"""CNNEstimator: train a Keras CNN with Horovod on Spark executors from a DataFrame; fit returns a CNNModel.

    images = spark.read.format("image").load("digits/*/*.png")
    images = images.withColumn("label", F.regexp_extract("image.origin", r"/(\\d)/[^/]*$", 1).cast("int"))
    est = CNNEstimator(inputCol="image", labelCol="label", store="s3://bucket/sparkcnn", epochs=4, numProc=2)
    model = est.fit(images)                  # a CNNModel (pipelines.inference.cnn_model)
    model.transform(images).select("prediction", "probability")

The Params are the `train` section's settings under camel-case names (pipelines/training/section.py:
`batch_size` is `batchSize`) plus the estimator's own (EstimatorSection in estimator_params.py),
all generated from those declarations, so the conf file and the estimator cannot drift apart.

fit(df) = materialise the DataFrame in the record contract, once per data key
(pipelines/training/materialise.py), then train exactly as `sparkcnn train` does
(pipelines/training/driver.py: same Horovod launch, checkpoints and resume), then wrap the model
file in a CNNModel holding its bytes, the class names (a string label's sorted mapping, or "0".."n-1")
and the resize rule.  `sparkcnn train` is this estimator's `fit_dataset` on an ingested dataset.

The run directory defaults to store/runs/<data key>-<settings key>: a fit started again with the same
data and settings (after a lost executor, or with more epochs) continues from its last checkpoint;
other settings train in a run directory of their own.  Storage credentials are never Params (Params
are saved with a Pipeline): fit runs under the caller's storage context (`with storage.using(ctx):`),
and executors get that context in their task spec (or credentials from the environment).
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Optional, Tuple

from pyspark import keyword_only
from pyspark.ml import Estimator
from pyspark.ml.param import Params
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

from pipelines.augmentation.pipeline import Pipeline
from pipelines.core import records, storage
from pipelines.core.config import ConfigError, computing_settings
from pipelines.core.published import reading_once
from pipelines.core.store import RunStore, exists
from pipelines.inference.cnn_model import CNNModel
from pipelines.training import estimator_params as declared
from pipelines.training.driver import train_records
from pipelines.training.estimator_params import WHERE, EstimatorSection
from pipelines.training.materialise import materialise
from pipelines.training.section import TrainSection

logger = logging.getLogger("sparkcnn.training")


class _CNNEstimatorParams(Params):
    """Every Param is generated: see pipelines/training/estimator_params.py."""


declared.add_params(_CNNEstimatorParams)


class CNNEstimator(Estimator, _CNNEstimatorParams, DefaultParamsReadable, DefaultParamsWritable):
    """Horovod training of a Keras CNN on an image DataFrame; see the module docstring."""

    @keyword_only
    def __init__(self, **kwargs):
        super().__init__()
        self._setDefault(**declared.defaults())
        declared.check_names(kwargs)
        self._set(**kwargs)

    @keyword_only
    def setParams(self, **kwargs):
        declared.check_names(kwargs)
        return self._set(**kwargs)

    @classmethod
    def from_section(cls, train: TrainSection, **params) -> "CNNEstimator":
        """The estimator a conf file's train section describes (the CLI's way in)."""
        return cls(**declared.from_section(train), **params)

    # -- fitting ------------------------------------------------------------------------------
    @reading_once()          # a fit reads each published dataset (manifest, sidecar) once
    def _fit(self, dataset) -> CNNModel:
        train, own = declared.sections_of(self)
        if not own.store:
            raise ConfigError(f"{WHERE}.store is not set: give a folder or URL every executor can reach "
                              "(materialised data and runs are kept there)")
        spark = dataset.sparkSession
        data = materialise(spark, dataset, own, train.validation)
        run_dir = own.run_dir or storage.join(storage.normalize(own.store), "runs",
                                              f"{data.key}-{settings_key(train, own)}")
        model, _ = self._train(spark, train, own, data.dataset, None, RunStore(run_dir))
        return model

    @reading_once()
    def fit_dataset(self, spark, dataset_dir: str, val_dir: Optional[str] = None,
                    where: str = WHERE) -> Tuple[CNNModel, dict]:
        """Train on an ingested record dataset (no materialising): what `sparkcnn train` runs.

        runDir must be set; val_dir is the dataset's own validation split (used when `validation`
        is null).  Returns the model and the training history (as written to history.json).
        """
        train, own = declared.sections_of(self)
        if not own.run_dir:
            raise ConfigError(f"{WHERE}.runDir is not set: fit_dataset writes the run there")
        dataset = records.open_dataset(dataset_dir)          # read once, handed to everything below
        held_out = train.validation is not None            # then the validation rows come from the dataset
        val = records.open_dataset(val_dir) if val_dir and not held_out and exists(val_dir) else None
        return self._train(spark, train, own, dataset, val, RunStore(storage.normalize(own.run_dir)), where)

    def _train(self, spark, train: TrainSection, own: EstimatorSection, dataset: records.PublishedDataset,
               val: Optional[records.PublishedDataset], store: RunStore,
               where: str = WHERE) -> Tuple[CNNModel, dict]:
        augment = None
        if own.augmentation is not None:
            augment = Pipeline.parse(own.augmentation, own.augmentation_seed, where=f"{where}.augmentation").spec()
        logger.info(f"[fit] run directory {storage.redact(store.root)}")
        history = train_records(spark, train, dataset, val, store, augment=augment,
                                row_group_mb=own.row_group_mb, where=where)
        return CNNModel.from_file(store.model_path, inputCol=own.input_col, inputFormat=own.input_format,
                                  classNames=[str(n) for n in dataset.meta.class_names], resizeMode=own.resize_mode,
                                  predictionCol=own.prediction_col, probabilityCol=own.probability_col,
                                  maxPixels=own.max_pixels), history


CNNEstimator.__init__.__signature__ = declared.signature()
CNNEstimator.setParams.__signature__ = declared.signature()


def settings_key(train: TrainSection, own: EstimatorSection) -> str:
    """What decides the trained model besides the data: the computing train settings and the augmentation."""
    key = {"train": computing_settings(train), "augmentation": own.augmentation, "seed": own.augmentation_seed}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]
