"""Settings of `sparkcnn train`: the one declaration of a training setup.

The executor spec carries this section as it is (TrainSpec.settings), and the resume
fingerprint is every setting here not declared `runtime=True` (plus the data's shape,
classes and row counts): a changed setting that shapes the training starts afresh, a
runtime one (threads, timeouts, more epochs) continues the checkpointed run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pipelines.core.config import ConfigError, setting
from pipelines.training.step import COMPRESSIONS
from pipelines.training.zoo import OPTIMIZERS

MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class TrainSection:
    model: str = setting("mnist_cnn")
    epochs: int = setting(4, min=1, runtime=True, doc="total epochs; raising it continues a finished run")
    batch_size: int = setting(128, min=1, doc="per Horovod worker")
    optimizer: str = setting("adam", choices=OPTIMIZERS)
    learning_rate: float = setting(0.001, min=1e-9)
    scale_lr: bool = setting(True, doc="multiply learning_rate by the number of workers")
    num_proc: Optional[int] = setting(2, min=1, doc=(
        "Horovod worker processes (Spark tasks); null: one per task slot, i.e. per GPU when "
        "resources.gpus_per_task > 0"))
    seed: int = setting(42)
    reader_workers: int = setting(1, min=1, max=16, runtime=True, doc="Petastorm reader threads per worker")
    shuffle_buffer: int = setting(10000, min=0, doc="rows in each worker's shuffle buffer")
    threads_per_worker: Optional[int] = setting(None, min=1, runtime=True,
                                          doc="TF threads per worker (default: cores / local workers)")
    nics: Optional[list] = setting(None, runtime=True,
                                  doc="network interfaces for Horovod (default: 'lo' under a local master)")
    start_timeout: int = setting(600, min=10, runtime=True, doc="seconds to wait for all workers to start")
    warmup_epochs: float = setting(0.0, min=0.0, doc="ramp the (worker-scaled) learning rate up over this many epochs")
    lr_decay: float = setting(1.0, min=0.01, max=1.0, doc="multiply the learning rate by this every epoch after warm-up")
    validation: Optional[Any] = setting(None, raw=True,
                                     doc="null: the dataset's 'val' split if any; a fraction such as 0.1: that share "
                                         "of the training rows (by id hash) held out; a column name: rows where "
                                         "that column of the training split is true or 1")
    early_stopping_patience: Optional[int] = setting(None, min=0, doc="stop after N epochs without val_loss improvement")
    checkpoint: bool = setting(True, runtime=True,
                              doc="checkpoint every epoch into <run>/checkpoints (a shared filesystem on clusters)")
    resume: bool = setting(True, runtime=True, doc="continue from the last checkpoint of the same training setup")
    mixed_precision: Optional[str] = setting(None, choices=MIXED_PRECISION, doc=(
        "Keras mixed precision: mixed_float16 on GPUs (with dynamic loss scaling), mixed_bfloat16 on CPUs "
        "with bfloat16 instructions; the softmax and the saved model stay float32"))
    # Horovod's levers (pipelines/training/step.py applies them; README "Horovod scaling" has the measurements)
    backward_passes_per_step: int = setting(1, min=1, max=64, doc=(
        "batches whose gradients each worker accumulates (their mean) before one allreduce; with scale_lr "
        "the learning rate also grows by this factor, as for a batch this many times larger"))
    compression: str = setting("none", choices=COMPRESSIONS, doc="fp16: gradients travel as float16 (half the bytes)")
    overlap: bool = setting(True, runtime=True, doc=(
        "reduce each gradient as soon as the backward pass has made it, overlapping transfer and compute "
        "(false: one grouped reduction after the backward pass); the breakdown's allreduce is then the part "
        "not hidden; off under deterministic (the grouped reduction is Horovod's deterministic one)"))
    fusion_threshold_mb: Optional[float] = setting(None, min=0.0, runtime=True, doc=(
        "Horovod's fusion buffer in MB (HOROVOD_FUSION_THRESHOLD; 0 turns fusion off); null: Horovod's default"))
    cycle_time_ms: Optional[float] = setting(None, min=0.1, runtime=True, doc=(
        "Horovod's background cycle in ms (HOROVOD_CYCLE_TIME); null: 20 on CPU workers (measured: Horovod's "
        "1 ms cycle costs CPU workers compute time), Horovod's own 1 ms on GPU workers"))
    timeline: bool = setting(False, runtime=True, doc=(
        "record Horovod's timeline (rank 0) into <run>/horovod_timeline.json, summarised in history.json"))
    deterministic: bool = setting(False, runtime=True, doc="TF op determinism (slower); seeds are always fixed")
    export_saved_model: bool = setting(True, runtime=True, doc="also write <run>/saved_model (TF SavedModel)")
    # augmentation (pipelines/augment/): train on an augmented split, or augment batches on the fly
    split: str = setting("train", doc="split to train on, e.g. train_aug written by `sparkcnn augment`")
    augment: bool = setting(False, doc="augment every training batch on the fly with the augment section's pipeline")

    def check(self, where: str) -> None:
        v = self.validation
        if v is None or (isinstance(v, str) and v.isidentifier()):
            return
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1:
            return
        raise ConfigError(f"{where}.validation: expected null, a fraction between 0 and 1 (e.g. 0.1) "
                          f"or a column name, got {v!r}")
