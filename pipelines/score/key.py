"""What a run's predictions and metrics depend on: the score section, the model, the scored split."""
from __future__ import annotations

import dataclasses

from pipelines.core.stage_cache import StageKey, identity


def inputs(cfg, store) -> dict:
    return {"score section": dataclasses.asdict(cfg.score), "model": identity(store.model_path),
            "dataset " + cfg.score.split: identity(cfg.dataset_dir(cfg.score.split))}


def outputs(cfg, store, result) -> list:
    return [store.predictions_dir, store.metrics_path]


SCORE_KEY = StageKey(inputs, outputs, lambda cfg, store: store.root)
