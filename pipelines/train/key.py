"""What a training's model depends on: the train section (and augmentation when it is on the fly),
the train and val datasets' published versions, and the model file when train.model names one."""
from __future__ import annotations

import dataclasses

from pipelines.core.stage_cache import StageKey, identity


def inputs(cfg, store) -> dict:
    t = cfg.train
    out = {"train section": dataclasses.asdict(t), "row_group_mb": cfg.ingest.row_group_mb,
           "dataset " + t.split: identity(cfg.dataset_dir(t.split)), "dataset val": identity(cfg.dataset_dir("val"))}
    if t.augment:
        out["augment section"] = dataclasses.asdict(cfg.augment)
    if ":" not in t.model and ("/" in t.model or t.model.endswith((".keras", ".h5"))):
        out["model file"] = identity(t.model)                  # None when missing
    return out


def outputs(cfg, store, result) -> list:
    return [store.model_path, store.history_path]


TRAIN_KEY = StageKey(inputs, outputs, lambda cfg, store: store.root)
