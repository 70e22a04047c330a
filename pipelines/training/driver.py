"""Driver side of training over record-contract datasets: validate, resume, launch, store the results.

The one code path of training: `CNNEstimator.fit` (a DataFrame, materialised first) and the
CLI's `sparkcnn train` (an ingested dataset) both end here, with the train section's
settings, a training dataset, an optional validation dataset and the run directory.

The workers return the model as bytes to this process, which writes it (and a TF
SavedModel) into the run directory atomically.  A run started again with the same training
setup continues from the last epoch checkpoint: the final epoch count is the configured one
and the history carries on, so a killed or failed training costs at most one epoch.  A
changed setup (any train setting not declared runtime, or other data: see
pipelines/training/resume.py) starts afresh.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import tarfile
import time
from typing import Optional

from pipelines.core import records, storage
from pipelines.core.session import is_local_master
from pipelines.core.store import RunStore, atomic_dir, write_bytes_atomic, write_json_atomic
from pipelines.inference.model_refs import TRAINABLE, classify
from pipelines.training.launch import TrainError, WorkerLostError, resolve_num_proc, run_horovod
from pipelines.training.remote import TrainSpec
from pipelines.training.resume import plan_resume, resume_hint
from pipelines.training.section import TrainSection
from pipelines.training.step import summarise
from pipelines.training.validation_split import held_out_datasets

logger = logging.getLogger("sparkcnn.training")


def make_spec(settings: TrainSection, train: records.PublishedDataset, val: Optional[records.PublishedDataset],
              augment: Optional[dict] = None, where: str = "train") -> TrainSpec:
    """The workers' spec for training on `train` (validating on `val` when there is one and it has rows)."""
    classify(settings.model, TRAINABLE, f"{where}.model")
    meta = train.meta
    val_rows = val.meta.num_rows if val else 0
    if meta.num_rows < settings.batch_size * settings.num_proc:
        raise TrainError(f"{storage.redact(train.location)}: {meta.num_rows} rows is less than one batch of "
                         f"{settings.batch_size} for each of {settings.num_proc} workers; lower the batch size "
                         "or the number of workers")
    return TrainSpec(
        settings=settings,
        train_path=train.url,   # the version pinned when it was opened, whatever ingest does meanwhile
        val_path=val.url if val_rows else None,
        input_shape=meta.shape, num_classes=meta.num_classes,
        train_rows=meta.num_rows, val_rows=val_rows,
        augment=augment,
        storage=storage.active_context(),
    )


def _write_saved_model(tar_bytes: Optional[bytes], dest: str) -> None:
    if not tar_bytes:
        return
    with atomic_dir(dest, local_build=True) as staging:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            tar.extractall(staging + ".unpack", filter="data")
        os.rename(os.path.join(staging + ".unpack", "saved_model"), staging)
        os.rmdir(staging + ".unpack")


def breakdown_summary(ranks: list) -> dict:
    """Where a step's time went (ms per step, mean over ranks) with the levers the workers applied, and
    each rank's per-epoch numbers: a rank whose compute is longer is the one the others wait for."""
    per_rank = [r.get("breakdown") for r in ranks if r and r.get("breakdown")]
    if not per_rank:
        return {}
    first = per_rank[0]
    return {"ms_per_step": summarise(per_rank), "allreduce_bytes": first["allreduce_bytes"],
            "backward_passes_per_step": first["backward_passes_per_step"], "compression": first["compression"],
            "overlap": first["overlap"], "ranks": [b["epochs"] for b in per_rank]}


def train_records(spark, settings: TrainSection, source: records.PublishedDataset,
                  val: Optional[records.PublishedDataset], store: RunStore, *,
                  augment: Optional[dict] = None, row_group_mb: float = 4.0, where: str = "train") -> dict:
    """Train on the dataset `source` (held-out rows per settings.validation); returns the history."""
    settings = dataclasses.replace(settings, num_proc=resolve_num_proc(spark, settings.num_proc))
    train, val = held_out_datasets(spark, settings, source, val, store, row_group_mb)
    spec = plan_resume(make_spec(settings, train, val, augment, where), train.meta, store)
    nics = set(settings.nics) if settings.nics else ({"lo"} if is_local_master(spark.sparkContext.master) else None)
    logger.info(f"[train] {settings.model} on {spec.train_rows} rows ({spec.val_rows} validation), "
                f"{settings.num_proc} Horovod workers, {settings.epochs} epochs")
    t0 = time.perf_counter()
    try:
        ranks = run_horovod(spark, spec, settings.num_proc, nics, settings.start_timeout)
    except RuntimeError as exc:
        if "Horovod detected" not in str(exc):
            raise
        # One worker died (killed, OOM, lost executor): the others abort within seconds.
        raise WorkerLostError(f"a Horovod worker process died, so training stopped ({str(exc).splitlines()[0][:200]}); "
                         + resume_hint(store)) from None
    wall = time.perf_counter() - t0
    result = ranks[0]
    write_bytes_atomic(store.model_path, result["model_keras"])
    _write_saved_model(result.get("saved_model_tar"), store.saved_model_dir)
    history = {
        "model": settings.model, "epochs": settings.epochs, "workers": result["workers"],
        "threads_per_worker": result["threads_per_worker"], "batch_size_per_worker": settings.batch_size,
        "samples_per_epoch": result["samples_per_epoch"], "epoch_seconds": result["epoch_seconds"],
        "resumed_after_epoch": spec.initial_epoch, "wall_seconds": wall, "metrics": result["history"],
        "mixed_precision": settings.mixed_precision,
        "devices": [r["placement"] for r in ranks if r and "placement" in r],   # per rank: GPU assigned, visible
        "step_breakdown": breakdown_summary(ranks),
    }
    timeline = result.get("timeline")
    if timeline:
        write_bytes_atomic(storage.join(store.root, "horovod_timeline.json"), timeline["text"].encode())
        history["horovod_timeline"] = timeline["summary"]
    write_json_atomic(store.history_path, history)
    logger.info(f"[train] model -> {store.model_path} ({wall:.1f}s)")
    return history
