"""`sparkcnn train`: the conf file's train section, as a CNNEstimator fitted on the ingested dataset.

One code path: the estimator (pipelines/training/estimator.py) trains a DataFrame by materialising
it and calling its fit_dataset; the CLI has the records already, so it calls fit_dataset on
<datasets_dir>/<dataset>/<train.split> with the dataset's 'val' split, into the run directory.
"""
from __future__ import annotations

from pipelines.core.config import Config
from pipelines.core.store import RunStore
from pipelines.training.estimator import CNNEstimator


def estimator_for(cfg: Config, store: RunStore) -> CNNEstimator:
    """The estimator a conf file describes, writing into the run directory `store`."""
    augmentation = (cfg.augment.pipeline or []) if cfg.train.augment else None
    return CNNEstimator.from_section(cfg.train, runDir=store.root, augmentation=augmentation,
                                     augmentationSeed=cfg.augment.seed, rowGroupMb=cfg.ingest.row_group_mb)


def train(spark, cfg: Config, store: RunStore) -> dict:
    estimator = estimator_for(cfg, store)
    _, history = estimator.fit_dataset(spark, cfg.dataset_dir(cfg.train.split), cfg.dataset_dir("val"),
                                       where=cfg.source)
    return history
