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
import os
import re
import unicodedata
from typing import Callable, Iterator

import pyarrow as pa

from pipelines.core import records, storage
from pipelines.core.arrow_batches import arrow_batch_rows, rows_within
from pipelines.core.config import Config
from pipelines.core.parquet_io import read_frame
from pipelines.core.store import atomic_dir, published_url
from pipelines.ingest.folder import CLASS_MANIFEST


def safe_folder_name(name: str, index: int) -> str:
    """A class name as one path component that stays inside its parent."""
    cleaned = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C")
    cleaned = re.sub(r"[/\\\\:]", "_", cleaned).strip()
    if cleaned in ("", ".", "..") or cleaned.startswith((".", "_")):
        cleaned = f"class_{index}" + (f"_{cleaned.strip('._')}" if cleaned.strip("._") else "")
    return cleaned[:200]


def class_manifest(class_names: list) -> list:
    folders, out = set(), []
    for k, name in enumerate(class_names):
        folder = safe_folder_name(name, k)
        if folder in folders:            # two names that clean to the same folder
            folder = f"{folder}_{k}"
        folders.add(folder)
        out.append({"index": k, "name": name, "folder": folder})
    return out


def _write_pngs(out_dir: str, folders: list, shape: tuple, options,
                batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side: write each row as out_dir/<folder>/<id>.png; yields (id, path) per file written.

    On a remote store each PNG is one PUT into the staging prefix (`options`: the driver's storage options).
    """
    import io

    from PIL import Image
    storage.configure(options)
    remote = storage.is_remote(out_dir)
    root = out_dir if remote else os.path.realpath(out_dir)
    for batch in batches:
        images = records.decode_images(batch.column(records.IMAGE), shape)
        ids = batch.column(records.ID).to_numpy()
        labels = batch.column(records.LABEL).to_numpy()
        paths = []
        for img, i, label in zip(images, ids, labels):
            path = storage.join(root, folders[int(label)], f"{int(i)}.png")     # folder names are cleaned
            if not remote and os.path.commonpath([root, os.path.realpath(path)]) != root:
                raise ValueError(f"refusing to write {path}: outside {root}")
            buf = io.BytesIO()
            Image.fromarray(img[..., 0] if shape[2] == 1 else img).save(buf, format="PNG")
            if remote:
                storage.put_bytes(path, buf.getvalue())
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(buf.getvalue())
            paths.append(path)
        yield pa.RecordBatch.from_arrays([pa.array(ids), pa.array(paths, pa.string())], names=["id", "path"])


def export_dataset(spark, dataset_dir: str, out_dir: str, log: Callable[[str], None] = print) -> int:
    """Write every image of a dataset as PNG under out_dir; returns the number written."""
    meta = records.read_meta(dataset_dir)
    manifest = class_manifest(meta.class_names)
    folders = [e["folder"] for e in manifest]
    frame = read_frame(spark, dataset_dir, [records.ID, records.LABEL, records.IMAGE])
    with atomic_dir(out_dir) as staging:
        storage.makedirs(staging)
        with storage.open_file(storage.join(staging, CLASS_MANIFEST), "wb") as f:
            f.write(json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8"))
        writer = functools.partial(_write_pngs, staging, folders, meta.shape, storage.current_options())
        with arrow_batch_rows(spark, rows_within(meta.height * meta.width * meta.channels)):   # photos: by bytes
            written = frame.mapInArrow(writer, "id LONG, path STRING").count()
        if written != meta.num_rows:
            raise RuntimeError(f"{out_dir}: wrote {written} PNGs for {meta.num_rows} rows of {dataset_dir}")
    log(f"[export] {dataset_dir}: {written} PNG files in {len(folders)} class folders -> {published_url(out_dir)}")
    return written


def export_stage(spark, cfg: Config, store, log: Callable[[str], None] = print) -> dict:
    """Export the configured splits to <export.out_dir>/<split>/<class>/<id>.png."""
    out_root = storage.normalize(cfg.export.out_dir or storage.join(store.root, "export"))
    counts = {}
    for split in cfg.export.splits:
        dataset_dir = cfg.dataset_dir(split)
        counts[split] = export_dataset(spark, dataset_dir, storage.join(out_root, split), log)
    return counts
