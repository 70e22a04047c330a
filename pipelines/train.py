"""Driver side of training: validate, launch Horovod workers as Spark tasks, store the results.

The workers return the model as bytes to this process, which writes it into
the run directory atomically; executors never need write access to it.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

from . import records
from .augment import augment_spec
from .config import Config
from .errors import SparkcnnError
from .models import MODELS
from .session import is_local_master
from .store import RunStore, write_bytes_atomic, write_json_atomic
from .train_remote import TrainSpec, train_worker


class TrainError(SparkcnnError, RuntimeError):
    """Training cannot start or did not produce a model; the message says why."""


def make_spec(cfg: Config) -> TrainSpec:
    t = cfg.train
    if t.model not in MODELS:
        raise TrainError(f"{cfg.source}: train.model '{t.model}' is not in the zoo ({', '.join(sorted(MODELS))})")
    train_dir = cfg.dataset_dir(t.split)
    meta = records.read_meta(train_dir)
    val_dir = cfg.dataset_dir("val")
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
        threads_per_worker=t.threads_per_worker,
        augment=augment_spec(cfg) if t.augment else None,
    )


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


def train(spark, cfg: Config, store: RunStore, log: Callable[[str], None] = print) -> dict:
    spec = make_spec(cfg)
    nics = set(cfg.train.nics) if cfg.train.nics else ({"lo"} if is_local_master(spark.sparkContext.master) else None)
    log(f"[train] {spec.model} on {spec.train_rows} rows ({spec.val_rows} validation), "
        f"{cfg.train.num_proc} Horovod workers, {spec.epochs} epochs")
    t0 = time.perf_counter()
    result = run_horovod(spark, spec, cfg.train.num_proc, nics, cfg.train.start_timeout)
    wall = time.perf_counter() - t0
    write_bytes_atomic(store.model_path, result["model_keras"])
    history = {
        "model": spec.model, "epochs": spec.epochs, "workers": result["workers"],
        "threads_per_worker": result["threads_per_worker"], "batch_size_per_worker": spec.batch_size,
        "samples_per_epoch": result["samples_per_epoch"], "epoch_seconds": result["epoch_seconds"],
        "wall_seconds": wall, "metrics": result["history"],
    }
    write_json_atomic(store.history_path, history)
    log(f"[train] model -> {store.model_path} ({wall:.1f}s)")
    return history
