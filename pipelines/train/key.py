"""What a training's model depends on: the train section (and augmentation when it is on the fly),
the train and val datasets' published versions, and the model file when train.model names one."""
from __future__ import annotations

import dataclasses

from pipelines.core.stage_cache import StageKey, identity
from pipelines.inference.model_refs import TRAINABLE, classify


def inputs(cfg, store) -> dict:
    t = cfg.train
    out = {"train section": dataclasses.asdict(t), "row_group_mb": cfg.ingest.row_group_mb,
           "dataset " + t.split: identity(cfg.dataset_dir(t.split)), "dataset val": identity(cfg.dataset_dir("val"))}
    if t.augment:
        out["augment section"] = dataclasses.asdict(cfg.augment)
    ref = classify(t.model, TRAINABLE, "train.model")
    if ref.location:                                           # a file or a run's model.keras: its identity
        out["model file"] = identity(ref.location)
    return out


def outputs(cfg, store, result) -> list:
    return [store.model_path, store.history_path]


TRAIN_KEY = StageKey(inputs, outputs, lambda cfg, store: store.root)
