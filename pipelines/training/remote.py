"""Executor side of training: the function each Horovod worker runs inside a Spark task.

Everything it needs arrives in one small, picklable TrainSpec; it imports
TensorFlow and Horovod itself (never the driver), reads its own shard of the
Parquet datasets through Petastorm, and rank 0 returns the trained model as
bytes so the driver, not the executor, decides where the final outputs live.

Checkpoints are the exception: they must be written while training runs, so
rank 0 writes them into the run's checkpoint folder, through pipelines.core.storage:
after every epoch it writes the model and optimizer state to local disk, copies the
epoch's files to the checkpoint folder (local or a remote store), then replaces
`state.json` (epoch reached, checkpoint prefix, history so far) -- the commit point,
written last, one PUT on an object store.  A run started again reads that file and
continues from there; on a remote store every rank first downloads the checkpoint.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

from pipelines.augmentation.on_the_fly import augment_tf_dataset
from pipelines.core import storage
from pipelines.core.line_relay import RelayAddress, relayed
from pipelines.core.store import write_json_atomic
from pipelines.core.tf_runtime import Placement, configure_threads, cores_per_local_worker, model_to_bytes, place
from pipelines.training.petastorm_input import open_reader, to_tf_dataset
from pipelines.training.section import TrainSection
from pipelines.training.step import StepClock, clock_callback, gradient_bytes, hands_tensor_logs
from pipelines.training.step import install as install_step
from pipelines.training.timeline import GRADIENTS, read_timeline
from pipelines.training.networks import build_model
from pipelines.training.zoo import make_optimizer

KEEP_CHECKPOINTS = 2
logger = logging.getLogger("sparkcnn.training")


@dataclass(frozen=True)
class TrainSpec:
    """What every Horovod worker needs: the train section as configured, plus what the driver found.

    The settings travel as the section itself (one declaration: pipelines/training/section.py),
    so a new setting reaches the workers without being listed again here.
    """
    settings: TrainSection
    train_path: str
    val_path: Optional[str]
    input_shape: tuple
    num_classes: int
    train_rows: int
    val_rows: int
    augment: Optional[dict] = None           # an augment pipeline spec: augment training batches on the fly
    checkpoint_dir: Optional[str] = None     # None: no checkpoints
    resume_prefix: Optional[str] = None      # checkpoint to start from
    initial_epoch: int = 0
    prior_history: Optional[dict] = None     # history of the epochs before initial_epoch
    fingerprint: str = ""
    storage: storage.StorageContext = storage.StorageContext()   # the driver's, for remote datasets and checkpoints
    log_relay: Optional[RelayAddress] = None  # the ranks' log records reach the driver's loggers through it, as written


def _callbacks(tf, hvd, spec: TrainSpec, model, lr: float, steps: int, clock: StepClock, epoch_seconds: list,
               history: dict):
    """Order matters: the step clock first (it times Keras's steps), metrics averaged over workers before
    anything reads them, rank 0's epoch line last."""
    rank, t = hvd.rank(), spec.settings

    class EpochClock(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.t0)
            for key, value in (logs or {}).items():
                history.setdefault(key, []).append(float(value))

    class EpochCheckpoint(tf.keras.callbacks.Callback):
        """Rank 0: model + optimizer state, then state.json replaced atomically (the commit point)."""

        def on_epoch_end(self, epoch, logs=None):
            done = epoch + 1
            folder = storage.join(spec.checkpoint_dir, f"epoch-{done:04d}")
            with tempfile.TemporaryDirectory(prefix="sparkcnn-ckpt-") as tmp:
                tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(os.path.join(tmp, "ckpt"))
                storage.remove(folder)                 # a half-copied epoch of a killed attempt
                storage.upload_dir(tmp, folder)
            write_json_atomic(storage.join(spec.checkpoint_dir, "state.json"), {
                "epoch": done, "prefix": storage.join(folder, "ckpt"), "fingerprint": spec.fingerprint,
                "history": history, "epoch_seconds": epoch_seconds})
            for name in storage.listdir(spec.checkpoint_dir):
                if name.startswith("epoch-") and int(name[6:]) <= done - KEEP_CHECKPOINTS:
                    storage.remove(storage.join(spec.checkpoint_dir, name))

    # Horovod's batch hooks read no logs: marked, so Keras does not copy every step's loss to the host for them.
    callbacks = [hands_tensor_logs(hvd.callbacks.BroadcastGlobalVariablesCallback(0)),
                 hvd.callbacks.MetricAverageCallback()]
    if t.warmup_epochs:
        callbacks.append(hands_tensor_logs(hvd.callbacks.LearningRateWarmupCallback(
            initial_lr=lr, warmup_epochs=t.warmup_epochs, steps_per_epoch=steps, verbose=1 if rank == 0 else 0)))
    if t.lr_decay != 1.0:
        # Epoch numbers are absolute, so a resumed run continues the same schedule.
        def decayed(epoch, current):
            return current if epoch < t.warmup_epochs else lr * t.lr_decay ** (epoch - int(t.warmup_epochs))
        callbacks.append(tf.keras.callbacks.LearningRateScheduler(decayed))
    callbacks.append(EpochClock())
    if t.early_stopping_patience is not None:
        # Every rank sees the same averaged val_loss, so all stop at the same epoch.
        callbacks.append(tf.keras.callbacks.EarlyStopping(
            monitor="val_loss" if spec.val_path else "loss", patience=t.early_stopping_patience,
            restore_best_weights=True, verbose=1 if rank == 0 else 0))
    if spec.checkpoint_dir and rank == 0:
        callbacks.append(EpochCheckpoint())
    callbacks.insert(0, clock_callback(tf, clock, log_epochs=rank == 0))
    if rank == 0:
        callbacks.append(_epoch_line(tf, t.epochs, epoch_seconds))   # last: sees the metrics averaged over workers
    return callbacks


def _saved_model_tar(tf, model) -> bytes:
    """A TF SavedModel (for TF Serving and other runtimes) as tar bytes for the driver to unpack."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "saved_model")
        tf.saved_model.save(model, path)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(path, arcname="saved_model")
        return buf.getvalue()


def _place_rank():
    """This rank's GPU, made visible before TensorFlow starts (the import below starts it).

    Spark's assignment reaches a rank through Horovod's task service (the rank runs in a child
    process of the Spark task, where TaskContext is empty); without one, the local rank picks a
    GPU when the host has any, as in Horovod's own Spark estimator.
    """
    from horovod.spark.task import get_available_devices
    rank = int(os.environ.get("HOROVOD_RANK", "0"))
    local_rank = int(os.environ.get("HOROVOD_LOCAL_RANK", "0"))
    assigned = get_available_devices()[:1]             # one GPU per rank
    return place(f"rank {rank}", assigned, fallback_index=local_rank)


def _epoch_line(tf, epochs: int, epoch_seconds: list):
    """Rank 0's line per epoch (Keras's own verbose output would reach the driver only at the end).
    Its time is the one EpochClock (in _callbacks, earlier in the list) has just appended."""
    class EpochLine(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            metrics = " ".join(f"{k} {float(v):.4f}" for k, v in sorted((logs or {}).items())
                               if k.endswith(("loss", "accuracy")))
            logger.info(f"[train] epoch {epoch + 1}/{epochs}: {metrics} ({epoch_seconds[-1]:.1f} s)")
    return EpochLine()


def _precision_policy(tf, name: Optional[str], warn: bool) -> None:
    """Keras's global dtype policy for the layers built next (None: float32); Keras itself warns about
    mixed_float16 without a GPU, and `warn` (rank 0) says when bfloat16 is emulated."""
    tf.keras.mixed_precision.set_global_policy(name or "float32")
    if warn and name == "mixed_bfloat16" and not _cpu_has_bfloat16() and not tf.config.list_logical_devices("GPU"):
        logger.warning("[train] mixed_bfloat16 on a CPU without bfloat16 instructions (avx512_bf16/amx_bf16): "
                       "emulated, expect it slower than float32")


def _cpu_has_bfloat16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _optimizer(tf, t: TrainSection, lr: float):
    """The optimizer itself: Horovod's allreduce is a phase of the train step (pipelines/training/step.py),
    which reduces the *scaled* gradients under float16 and unscales them after, so the
    loss-scale optimizer's finiteness check sees the same averaged gradients on every rank and all
    ranks skip or apply a step together (float16 only; bfloat16 has float32's range)."""
    optimizer = make_optimizer(t.optimizer, lr)
    if t.mixed_precision == "mixed_float16":
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


# Horovod's background thread coordinates the workers every cycle (1 ms by default: a gloo round
# trip each time).  On CPU workers that steals cores from the training itself: measured with
# `make bench-levers` on 2 cores, 1-thread workers computed 11-22% faster with a 20 ms cycle than
# with 1 ms (two runs), and 50 ms added allreduce latency without computing reliably faster.  GPU workers leave the
# CPU idle, so there Horovod's own default stays.
CPU_CYCLE_TIME_MS = 20.0


def _horovod_env(t: TrainSection, timeline_path: Optional[str], on_gpu: bool) -> dict:
    """Horovod reads its tuning knobs from the environment at hvd.init(): set what was configured,
    the CPU cycle time when none was; returns what was set (for the worker's log line)."""
    knobs = {}
    if t.fusion_threshold_mb is not None:
        knobs["HOROVOD_FUSION_THRESHOLD"] = str(int(t.fusion_threshold_mb * 1024 * 1024))
    cycle = t.cycle_time_ms if t.cycle_time_ms is not None else (None if on_gpu else CPU_CYCLE_TIME_MS)
    if cycle is not None:
        knobs["HOROVOD_CYCLE_TIME"] = f"{cycle:g}"
    if timeline_path:
        knobs["HOROVOD_TIMELINE"] = timeline_path
    os.environ.update(knobs)
    return knobs


def _allreduce(size: int, overlap: bool):
    """Horovod's average of all gradients, or None with one worker (nothing to reduce): one grouped
    reduction, or (overlap) one per tensor so each starts when its gradient is ready."""
    if size == 1:
        return None
    import horovod.tensorflow as hvd_tf
    if overlap:
        return lambda grads: [hvd_tf.allreduce(g, op=hvd_tf.Average, name=f"{GRADIENTS}_{i}")
                              for i, g in enumerate(grads)]
    return lambda grads: hvd_tf.grouped_allreduce(grads, op=hvd_tf.Average, name=GRADIENTS)


@dataclass
class RankRuntime:
    """What this process is in the training: its rank of `size`, its GPU, the TF threads it got, the Horovod
    knobs it set (for the start line) and, with train.timeline, the folder Horovod writes the timeline in."""
    placement: Placement
    rank: int
    size: int
    threads: int
    knobs: dict
    timeline_dir: Optional[tempfile.TemporaryDirectory]
    timeline_path: Optional[str]


def _start_rank(spec: TrainSpec) -> RankRuntime:
    """GPU, Horovod's knobs, Horovod, threads and seeds of this rank, in the order they must be set
    (the GPU before TensorFlow starts, the knobs before hvd.init, the seeds before the model is built)."""
    placement = _place_rank()
    t = spec.settings
    timeline_dir = tempfile.TemporaryDirectory(prefix="sparkcnn-timeline-") if t.timeline else None
    timeline_path = os.path.join(timeline_dir.name, "timeline.json") if timeline_dir else None
    knobs = _horovod_env(t, timeline_path, on_gpu=placement.tf_gpus > 0)
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    threads = t.threads_per_worker or cores_per_local_worker(hvd.local_size())
    threads = configure_threads(threads, inter_op=min(2, threads))
    tf.keras.utils.set_random_seed(t.seed + rank + 1000 * spec.initial_epoch)  # dropout differs per rank
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    return RankRuntime(placement, rank, size, threads, knobs, timeline_dir, timeline_path)


def _compiled_model(tf, spec: TrainSpec, rank: RankRuntime) -> tuple:
    """(the model compiled with its optimizer, the learning rate it got: scaled by the workers and the
    backward passes per update when train.scale_lr)."""
    t = spec.settings
    _precision_policy(tf, t.mixed_precision, warn=rank.rank == 0)    # rank 0 speaks for all
    model = build_model(t.model, spec.input_shape, spec.num_classes)
    lr = t.learning_rate * (rank.size * t.backward_passes_per_step if t.scale_lr else 1)
    model.compile(optimizer=_optimizer(tf, t, lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, lr


def _overlaps(t: TrainSection) -> bool:
    """Whether gradients are reduced as they are ready.  Deterministic training reduces all gradients as one
    group (Horovod's deterministic fusion; TF's op determinism also refuses the graph timestamps that
    measure an overlapped reduction)."""
    return t.overlap and not t.deterministic


def _restore_checkpoint(tf, model, resume_prefix: Optional[str]) -> Optional[tempfile.TemporaryDirectory]:
    """Read the checkpoint to continue from into the model and its optimizer; every rank reads the same one.

    Restoring is deferred (optimizer slots are created in fit and restored then), so a copy downloaded
    from a remote store must outlive this call: it is returned, for the caller to remove after training.
    """
    if not resume_prefix:
        return None
    downloaded = None
    local_prefix = resume_prefix
    folder, name = storage.split(resume_prefix)
    if storage.is_remote(folder):
        downloaded = tempfile.TemporaryDirectory(prefix="sparkcnn-resume-")
        storage.download_dir(folder, downloaded.name)
        local_prefix = os.path.join(downloaded.name, name)
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).read(local_prefix).expect_partial()
    return downloaded


def _steps_per_epoch(spec: TrainSpec, size: int) -> tuple:
    """(training steps, validation steps) per epoch and worker.  Whole updates per epoch: accumulated
    gradients never carry over an epoch's end (or a checkpoint)."""
    t = spec.settings
    passes = t.backward_passes_per_step
    steps = spec.train_rows // (t.batch_size * size * passes) * passes
    if steps < 1:
        raise ValueError(f"{spec.train_path}: {spec.train_rows} rows is less than {passes} batch(es) of "
                         f"{t.batch_size} for each of {size} workers")
    val_steps = spec.val_rows // (t.batch_size * size) if spec.val_path else 0
    return steps, val_steps


def _announce_start(spec: TrainSpec, rank: RankRuntime, steps: int, lr: float) -> None:
    """Rank 0's line before the first epoch: workers, threads, steps and the levers in force."""
    t, size = spec.settings, rank.size
    passes = t.backward_passes_per_step
    resumed = f", resuming after epoch {spec.initial_epoch}" if spec.initial_epoch else ""
    precision = f", {t.mixed_precision}" if t.mixed_precision else ""
    levers = (f", {passes} backward passes per allreduce" if passes > 1 else "") + \
        (f", {t.compression} compression" if t.compression != "none" else "") + \
        (", overlapped allreduce" if _overlaps(t) and size > 1 else "")
    cycle = f", Horovod cycle {rank.knobs['HOROVOD_CYCLE_TIME']} ms" \
        if size > 1 and "HOROVOD_CYCLE_TIME" in rank.knobs else ""
    logger.info(f"[train] {size} workers x {rank.threads} threads, {steps} steps/epoch of {t.batch_size}, "
                f"lr {lr:g}{precision}{levers}{cycle}{resumed}")


def _fit(tf, model, spec: TrainSpec, rank: RankRuntime, steps: int, val_steps: int, callbacks: list) -> None:
    """Keras fit over this rank's shard of the Parquet datasets (Petastorm readers, closed after), from
    spec.initial_epoch to train.epochs; the callbacks say each epoch as it ends."""
    t = spec.settings
    with contextlib.ExitStack() as readers:
        # Seeds depend on the epoch we start from, so a resumed run does not replay the same order.
        seed = t.seed + rank.rank + 1000 * spec.initial_epoch
        train_reader = readers.enter_context(
            open_reader(spec.train_path, rank.rank, rank.size, seed, t.reader_workers, storage_options=spec.storage.options))
        train_ds = to_tf_dataset(train_reader, spec.input_shape, t.batch_size, t.shuffle_buffer, seed)
        if spec.augment:
            train_ds = augment_tf_dataset(train_ds, spec.augment, stream=rank.rank + 1000 * spec.initial_epoch)
        fit_kwargs = {}
        if val_steps:
            val_reader = readers.enter_context(
                open_reader(spec.val_path, rank.rank, rank.size, t.seed, t.reader_workers, shuffle=False,
                            storage_options=spec.storage.options))
            fit_kwargs = dict(validation_data=to_tf_dataset(val_reader, spec.input_shape, t.batch_size, 0, 0),
                              validation_steps=val_steps)
        model.fit(train_ds, steps_per_epoch=steps, epochs=t.epochs, initial_epoch=spec.initial_epoch,
                  callbacks=callbacks, verbose=0, **fit_kwargs)   # _epoch_line says it, as it happens


def _step_breakdown(model, t: TrainSection, clock: StepClock, size: int) -> dict:
    """This rank's per-epoch step phases and the levers they were measured with (for history.json)."""
    return {"epochs": clock.epochs, "allreduce_bytes": gradient_bytes(model.trainable_variables, t.compression)
            if size > 1 else 0, "backward_passes_per_step": t.backward_passes_per_step,
            "compression": t.compression, "overlap": _overlaps(t)}


def _rank0_result(tf, hvd, model, spec: TrainSpec, rank: RankRuntime, steps: int, history: dict,
                  epoch_seconds: list, breakdown: dict) -> dict:
    """What rank 0 hands the driver: the model as bytes (and a SavedModel), the history, the timeline."""
    t = spec.settings
    timeline = None
    if rank.timeline_dir:
        hvd.stop_timeline()      # flushed and closed before it is read
        timeline = read_timeline(rank.timeline_path)
        rank.timeline_dir.cleanup()
    # Export a clean float32 copy: no Horovod or loss-scale optimizer inside, so it loads anywhere in
    # safe mode; mixed precision keeps float32 variables, so the weights carry over as they are.
    tf.keras.mixed_precision.set_global_policy("float32")
    clean = build_model(t.model, spec.input_shape, spec.num_classes)
    clean.set_weights(model.get_weights())
    return {
        "model_keras": model_to_bytes(clean),
        "saved_model_tar": _saved_model_tar(tf, clean) if t.export_saved_model else None,
        "history": history,
        "epoch_seconds": epoch_seconds,
        "samples_per_epoch": steps * t.batch_size * rank.size,
        "workers": rank.size,
        "threads_per_worker": rank.threads,
        "placement": rank.placement.as_dict(),
        "breakdown": breakdown,
        "timeline": timeline,
    }


def train_worker(spec: TrainSpec) -> Optional[dict]:
    """One Horovod rank's training, under the driver's storage context (datasets, checkpoints, resume); its
    log records (rank 0's epoch lines) are relayed to the driver.

    Every rank returns its placement and step breakdown; rank 0 also the model and the history.
    """
    with storage.using(spec.storage), relayed(spec.log_relay):
        rank = _start_rank(spec)
        import horovod.tensorflow.keras as hvd    # started by _start_rank, on this rank's GPU
        import tensorflow as tf

        t = spec.settings
        model, lr = _compiled_model(tf, spec, rank)
        clock = StepClock()
        install_step(tf, model, _allreduce(rank.size, _overlaps(t)), clock, t.backward_passes_per_step,
                     t.compression, _overlaps(t))
        downloaded = _restore_checkpoint(tf, model, spec.resume_prefix)
        steps, val_steps = _steps_per_epoch(spec, rank.size)
        history = {k: list(v) for k, v in (spec.prior_history or {}).get("metrics", {}).items()}
        epoch_seconds = list((spec.prior_history or {}).get("epoch_seconds", []))
        callbacks = _callbacks(tf, hvd, spec, model, lr, steps, clock, epoch_seconds, history)
        if rank.rank == 0:
            _announce_start(spec, rank, steps, lr)
        if spec.initial_epoch < t.epochs:
            _fit(tf, model, spec, rank, steps, val_steps, callbacks)
        if downloaded is not None:
            downloaded.cleanup()
        breakdown = _step_breakdown(model, t, clock, rank.size)
        if rank.rank != 0:
            return {"placement": rank.placement.as_dict(), "breakdown": breakdown}
        return _rank0_result(tf, hvd, model, spec, rank, steps, history, epoch_seconds, breakdown)
