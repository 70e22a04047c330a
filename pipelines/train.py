"""Driver side of training: validate, resume, launch Horovod workers as Spark tasks, store the results.

The workers return the model as bytes to this process, which writes it (and
a TF SavedModel) into the run directory atomically.  A run started again
with the same training setup continues from the last epoch checkpoint: the
final epoch count is the configured one and the history carries on, so a
killed or failed training costs at most one epoch.  A changed setup (model,
optimizer, batch size, workers, data) starts afresh.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import time
from typing import Callable, Optional

from . import records
from .augment import augment_spec
from .config import Config
from .errors import SparkcnnError
from .models import check_model_name
from .session import is_local_master
from .store import RunStore, atomic_dir, read_json, write_bytes_atomic, write_json_atomic
from .train_remote import TrainSpec, train_worker
from .validation_split import held_out_dirs


class TrainError(SparkcnnError, RuntimeError):
    """Training cannot start or did not produce a model; the message says why."""


def make_spec(cfg: Config, train_dir: Optional[str] = None, val_dir: Optional[str] = None) -> TrainSpec:
    """The workers' spec; train_dir/val_dir default to the dataset's train.split and 'val' splits."""
    t = cfg.train
    try:
        check_model_name(t.model)
    except (KeyError, FileNotFoundError) as exc:
        raise TrainError(f"{cfg.source}: {exc.args[0]}") from None
    train_dir = train_dir or cfg.dataset_dir(t.split)
    meta = records.read_meta(train_dir)
    val_dir = val_dir or cfg.dataset_dir("val")
    val_rows = records.read_meta(val_dir).num_rows if os.path.exists(val_dir) else 0
    if meta.num_rows < t.batch_size * t.num_proc:
        raise TrainError(f"{train_dir}: {meta.num_rows} rows is less than one batch of {t.batch_size} "
                         f"for each of {t.num_proc} workers; lower train.batch_size or train.num_proc")
    return TrainSpec(
        train_path=os.path.realpath(train_dir),   # pin the version being read, whatever ingest does meanwhile
        val_path=os.path.realpath(val_dir) if val_rows else None,
        input_shape=meta.shape, num_classes=meta.num_classes,
        train_rows=meta.num_rows, val_rows=val_rows,
        model=t.model, epochs=t.epochs, batch_size=t.batch_size, optimizer=t.optimizer,
        learning_rate=t.learning_rate, scale_lr=t.scale_lr, seed=t.seed,
        reader_workers=t.reader_workers, shuffle_buffer=t.shuffle_buffer,
        threads_per_worker=t.threads_per_worker, warmup_epochs=t.warmup_epochs, lr_decay=t.lr_decay,
        early_stopping_patience=t.early_stopping_patience, deterministic=t.deterministic,
        export_saved_model=t.export_saved_model,
        augment=augment_spec(cfg) if t.augment else None,
    )


def setup_fingerprint(spec: TrainSpec, num_proc: int, meta: records.DatasetMeta) -> str:
    """What must match for a checkpoint to be continued (epochs may grow: that extends a run)."""
    key = {"model": spec.model, "shape": list(spec.input_shape), "classes": meta.class_names,
           "train_rows": spec.train_rows, "val_rows": spec.val_rows, "batch": spec.batch_size, "optimizer": spec.optimizer,
           "lr": spec.learning_rate, "scale_lr": spec.scale_lr, "workers": num_proc, "seed": spec.seed,
           "augment": spec.augment, "lr_decay": spec.lr_decay}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def plan_resume(spec: TrainSpec, store: RunStore, cfg: Config, log) -> TrainSpec:
    """Point the spec at the checkpoint to continue from, or clear stale checkpoints."""
    if not cfg.train.checkpoint:
        return spec
    fingerprint = setup_fingerprint(spec, cfg.train.num_proc, records.read_meta(cfg.dataset_dir(cfg.train.split)))
    spec = dataclasses.replace(spec, checkpoint_dir=store.checkpoint_dir, fingerprint=fingerprint)
    state_path = os.path.join(store.checkpoint_dir, "state.json")
    state = read_json(state_path) if os.path.exists(state_path) else None
    if state and cfg.train.resume and state.get("fingerprint") == fingerprint \
            and os.path.exists(state["prefix"] + ".index"):
        log(f"[train] resuming from the checkpoint after epoch {state['epoch']} ({state['prefix']})")
        return dataclasses.replace(spec, resume_prefix=state["prefix"], initial_epoch=state["epoch"],
                                   prior_history={"metrics": state["history"],
                                                  "epoch_seconds": state.get("epoch_seconds", [])})
    if state:
        why = "train.resume is false" if not cfg.train.resume else "the training setup changed"
        log(f"[train] not resuming ({why}): starting from epoch 0")
    shutil.rmtree(store.checkpoint_dir, ignore_errors=True)
    os.makedirs(store.checkpoint_dir, exist_ok=True)
    return spec


def run_horovod(spark, spec: TrainSpec, num_proc: int, nics, start_timeout: int) -> dict:
    """Run train_worker on num_proc Spark tasks; returns rank 0's result."""
    slots = spark.sparkContext.defaultParallelism
    if num_proc > slots:
        raise TrainError(f"train.num_proc={num_proc} but Spark offers {slots} task slots; Horovod needs all "
                         "its workers running at once (lower num_proc or add executor cores)")
    import horovod.spark  # deferred: pulls in heavy modules only the train stage needs

    # Unbuffered so per-epoch progress streams to the driver; Petastorm's pyarrow
    # deprecation warnings (one per row group) are noise for users.
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore::FutureWarning")
    results = horovod.spark.run(train_worker, args=(spec,), num_proc=num_proc, use_gloo=True,
                                nics=nics, start_timeout=start_timeout, verbose=1, env=env,
                                stdout=sys.stdout, stderr=sys.stderr)
    result = results[0]
    if not result or "model_keras" not in result:
        raise TrainError("Horovod rank 0 returned no model")
    return result


def _resume_hint(store: RunStore) -> str:
    state_path = os.path.join(store.checkpoint_dir, "state.json")
    if os.path.exists(state_path):
        return (f"run the same command again to resume after epoch {read_json(state_path)['epoch']} "
                f"(checkpoint in {store.checkpoint_dir})")
    return "no epoch had finished, so a rerun starts from the beginning"


def _write_saved_model(tar_bytes: Optional[bytes], dest: str) -> None:
    if not tar_bytes:
        return
    with atomic_dir(dest) as staging:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            tar.extractall(staging + ".unpack", filter="data")
        os.rename(os.path.join(staging + ".unpack", "saved_model"), staging)
        os.rmdir(staging + ".unpack")


def train(spark, cfg: Config, store: RunStore, log: Callable[[str], None] = print) -> dict:
    train_dir, val_dir = held_out_dirs(spark, cfg, store, log)
    spec = plan_resume(make_spec(cfg, train_dir, val_dir), store, cfg, log)
    nics = set(cfg.train.nics) if cfg.train.nics else ({"lo"} if is_local_master(spark.sparkContext.master) else None)
    log(f"[train] {spec.model} on {spec.train_rows} rows ({spec.val_rows} validation), "
        f"{cfg.train.num_proc} Horovod workers, {spec.epochs} epochs")
    t0 = time.perf_counter()
    try:
        result = run_horovod(spark, spec, cfg.train.num_proc, nics, cfg.train.start_timeout)
    except RuntimeError as exc:
        if "Horovod detected" not in str(exc):
            raise
        # One worker died (killed, OOM, lost executor): the others abort within seconds.
        raise TrainError(f"a Horovod worker process died, so training stopped ({str(exc).splitlines()[0][:200]}); "
                         + _resume_hint(store)) from None
    wall = time.perf_counter() - t0
    write_bytes_atomic(store.model_path, result["model_keras"])
    _write_saved_model(result.get("saved_model_tar"), store.saved_model_dir)
    history = {
        "model": spec.model, "epochs": spec.epochs, "workers": result["workers"],
        "threads_per_worker": result["threads_per_worker"], "batch_size_per_worker": spec.batch_size,
        "samples_per_epoch": result["samples_per_epoch"], "epoch_seconds": result["epoch_seconds"],
        "resumed_after_epoch": spec.initial_epoch, "wall_seconds": wall, "metrics": result["history"],
    }
    write_json_atomic(store.history_path, history)
    log(f"[train] model -> {store.model_path} ({wall:.1f}s)")
    return history
