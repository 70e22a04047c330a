"""Export a dataset back to image files: <out>/<class folder>/<id>.png, lossless.

Executors write the PNGs (the output folder must be reachable from them, as
for any Spark output); the export is staged and published atomically like
every other output.  Class folder names come from the dataset's class names
made safe for a file system (no separators, no '.'/'..', no control
characters), so a name taken from data can never write outside the output
folder; `_classes.json` records the original names and indices, and folder
ingest reads it back, so export -> ingest returns identical labels.
"""
from __future__ import annotations

import functools
import json
import logging

from pipelines.core import records, storage
from pipelines.core.arrow_batches import arrow_batch_rows, rows_within
from pipelines.core.config import Config
from pipelines.core.parquet_io import read_frame
from pipelines.core.store import atomic_dir, published_url
from pipelines.export.remote import write_pngs
from pipelines.images.class_folders import CLASS_MANIFEST, class_manifest

logger = logging.getLogger("sparkcnn.export")


def export_dataset(spark, dataset_dir: str, out_dir: str) -> int:
    """Write every image of a dataset as PNG under out_dir; returns the number written."""
    meta = records.read_meta(dataset_dir)
    manifest = class_manifest(meta.class_names)
    folders = [e["folder"] for e in manifest]
    frame = read_frame(spark, dataset_dir, [records.ID, records.LABEL, records.IMAGE])
    with atomic_dir(out_dir) as staging:
        storage.makedirs(staging)
        with storage.open_file(storage.join(staging, CLASS_MANIFEST), "wb") as f:
            f.write(json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8"))
        writer = functools.partial(write_pngs, staging, folders, meta.shape, storage.active_context())
        with arrow_batch_rows(spark, rows_within(meta.height * meta.width * meta.channels)):   # photos: by bytes
            written = frame.mapInArrow(writer, "id LONG, path STRING").count()
        if written != meta.num_rows:
            raise RuntimeError(f"{out_dir}: wrote {written} PNGs for {meta.num_rows} rows of {dataset_dir}")
    logger.info(f"[export] {dataset_dir}: {written} PNG files in {len(folders)} class folders -> "
                f"{published_url(out_dir)}")
    return written


def export_stage(spark, cfg: Config, store) -> dict:
    """Export the configured splits to <export.out_dir>/<split>/<class>/<id>.png."""
    out_root = storage.normalize(cfg.export.out_dir or storage.join(store.root, "export"))
    counts = {}
    for split in cfg.export.splits:
        dataset_dir = cfg.dataset_dir(split)
        counts[split] = export_dataset(spark, dataset_dir, storage.join(out_root, split))
    return counts
