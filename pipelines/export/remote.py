"""Executor side of export: each task writes its rows as PNG files into the staging folder."""
from __future__ import annotations

import os
from typing import Iterator

import pyarrow as pa

from pipelines.core import records, storage


def write_pngs(out_dir: str, folders: list, shape: tuple, context: storage.StorageContext,
               batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side: write each row as out_dir/<folder>/<id>.png; yields (id, path) per file written.

    On a remote store each PNG is one PUT into the staging prefix (`context`: the driver's storage context).
    """
    return storage.iterate_using(context, _pngs_written(out_dir, folders, shape, batches))


def _pngs_written(out_dir: str, folders: list, shape: tuple, batches: Iterator[pa.RecordBatch]):
    import io

    from PIL import Image
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
