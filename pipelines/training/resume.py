"""Resuming a training run: which checkpoint may be continued, and what to tell the user.

Every epoch rank 0 checkpoints into <run>/checkpoints and then replaces state.json
(train.remote); a run started again continues from there when the training setup's
fingerprint is unchanged, and starts afresh (clearing stale checkpoints) otherwise.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

from pipelines.core import records, storage
from pipelines.core.config import computing_settings
from pipelines.core.store import RunStore, read_json
from pipelines.training.remote import TrainSpec

logger = logging.getLogger("sparkcnn.training")


def setup_fingerprint(spec: TrainSpec, meta: records.DatasetMeta) -> str:
    """What must match for a checkpoint to be continued.

    Every train setting that is not declared `runtime=True` (pipelines/training/section.py), the
    on-the-fly augmentation pipeline, and the data's shape, classes and row counts.  Runtime
    settings (more epochs, threads, timeouts) continue the checkpointed run.
    """
    key = {"settings": computing_settings(spec.settings), "augment": spec.augment,
           "shape": list(spec.input_shape), "classes": meta.class_names,
           "train_rows": spec.train_rows, "val_rows": spec.val_rows}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_resume(spec: TrainSpec, train_meta: records.DatasetMeta, store: RunStore) -> TrainSpec:
    """Point the spec at the checkpoint to continue from, or clear stale checkpoints (`train_meta`: the
    sidecar of the dataset the spec trains on)."""
    settings = spec.settings
    if not settings.checkpoint:
        return spec
    fingerprint = setup_fingerprint(spec, train_meta)
    spec = dataclasses.replace(spec, checkpoint_dir=store.checkpoint_dir, fingerprint=fingerprint)
    state_path = storage.join(store.checkpoint_dir, "state.json")
    state = read_json(state_path) if storage.exists(state_path) else None
    if state and settings.resume and state.get("fingerprint") == fingerprint \
            and storage.exists(state["prefix"] + ".index"):
        logger.info(f"[train] resuming from the checkpoint after epoch {state['epoch']} ({state['prefix']})")
        return dataclasses.replace(spec, resume_prefix=state["prefix"], initial_epoch=state["epoch"],
                                   prior_history={"metrics": state["history"],
                                                  "epoch_seconds": state.get("epoch_seconds", [])})
    if state:
        why = "train.resume is false" if not settings.resume else "the training setup changed"
        logger.info(f"[train] not resuming ({why}): starting from epoch 0")
    storage.remove(store.checkpoint_dir)
    storage.makedirs(store.checkpoint_dir)
    return spec


def resume_hint(store: RunStore) -> str:
    state_path = storage.join(store.checkpoint_dir, "state.json")
    if storage.exists(state_path):
        return (f"run the same command again to resume after epoch {read_json(state_path)['epoch']} "
                f"(checkpoint in {store.checkpoint_dir})")
    return "no epoch had finished, so a rerun starts from the beginning"
