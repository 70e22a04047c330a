"""Executor side of training: the function each Horovod worker runs inside a Spark task.

Everything it needs arrives in one small, picklable TrainSpec; it imports
TensorFlow and Horovod itself (never the driver), reads its own shard of the
Parquet datasets through Petastorm, and rank 0 returns the trained model as
bytes so the driver, not the executor, decides where outputs live.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

from .augment_remote import augment_tf_dataset
from .models import build_model, make_optimizer
from .petastorm_input import open_reader, to_tf_dataset


@dataclass(frozen=True)
class TrainSpec:
    train_path: str
    val_path: Optional[str]
    input_shape: tuple
    num_classes: int
    train_rows: int
    val_rows: int
    model: str
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    scale_lr: bool
    seed: int
    reader_workers: int
    shuffle_buffer: int
    threads_per_worker: Optional[int]
    augment: Optional[dict] = None   # an augment pipeline spec: augment training batches on the fly


def _configure_threads(tf, hvd, threads: Optional[int]) -> int:
    """Split the host's cores between the workers on it instead of oversubscribing them."""
    threads = threads or max(1, (os.cpu_count() or 1) // hvd.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    return threads


def train_worker(spec: TrainSpec) -> Optional[dict]:
    import tensorflow as tf
    import horovod.tensorflow.keras as hvd

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    threads = _configure_threads(tf, hvd, spec.threads_per_worker)
    tf.keras.utils.set_random_seed(spec.seed + rank)  # dropout differs per rank; weights come from rank 0

    model = build_model(spec.model, spec.input_shape, spec.num_classes)
    lr = spec.learning_rate * (size if spec.scale_lr else 1)
    model.compile(optimizer=hvd.DistributedOptimizer(make_optimizer(spec.optimizer, lr)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    steps = spec.train_rows // (spec.batch_size * size)
    if steps < 1:
        raise ValueError(f"{spec.train_path}: {spec.train_rows} rows is less than one batch of "
                         f"{spec.batch_size} for each of {size} workers")
    val_steps = spec.val_rows // (spec.batch_size * size) if spec.val_path else 0

    epoch_seconds = []

    class EpochClock(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.t0)

    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0),
                 hvd.callbacks.MetricAverageCallback(), EpochClock()]
    if rank == 0:
        print(f"[train] {size} workers x {threads} threads, {steps} steps/epoch of {spec.batch_size}, "
              f"lr {lr:g}", flush=True)

    with contextlib.ExitStack() as readers:
        train_reader = readers.enter_context(
            open_reader(spec.train_path, rank, size, spec.seed + rank, spec.reader_workers))
        train_ds = to_tf_dataset(train_reader, spec.input_shape, spec.batch_size, spec.shuffle_buffer, spec.seed + rank)
        if spec.augment:
            train_ds = augment_tf_dataset(train_ds, spec.augment, stream=rank)
        fit_kwargs = {}
        if val_steps:
            val_reader = readers.enter_context(
                open_reader(spec.val_path, rank, size, spec.seed, spec.reader_workers, shuffle=False))
            fit_kwargs = dict(validation_data=to_tf_dataset(val_reader, spec.input_shape, spec.batch_size, 0, 0),
                              validation_steps=val_steps)
        history = model.fit(train_ds, steps_per_epoch=steps, epochs=spec.epochs, callbacks=callbacks,
                            verbose=2 if rank == 0 else 0, **fit_kwargs)

    if rank != 0:
        return None
    # Export a clean copy: no Horovod optimizer class inside, so it loads anywhere in safe mode.
    clean = build_model(spec.model, spec.input_shape, spec.num_classes)
    clean.set_weights(model.get_weights())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        clean.save(path)
        with open(path, "rb") as f:
            model_bytes = f.read()
    return {
        "model_keras": model_bytes,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "epoch_seconds": epoch_seconds,
        "samples_per_epoch": steps * spec.batch_size * size,
        "workers": size,
        "threads_per_worker": threads,
    }
