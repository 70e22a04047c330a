"""Executor side of image-folder ingest: a task reads its share of the files, decodes them and
writes Parquet part files per split (pipelines.ingest.remote), returning reject rows.

The driver hands each task a list of files (it walked the folder anyway, to account for every
file); the task reads them with plain file reads, so pixels never pass through the JVM.  The
rules for which split a file goes to, its id and its label live here, in one place, because
they must be identical wherever a file is looked at.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Iterator

import numpy as np

from pipelines.core import records, storage
from pipelines.core.records import stable_id
from pipelines.core.worker_remote import tune_worker
from pipelines.images.decode import EMPTY_FILE, Reject, decode_image
from pipelines.ingest.remote import TaskOutput, rows_per_row_group

SKIPPED_BY_SPARK = "skipped by Spark's file listing: a name in the path starts with '.' or '_'"


def file_key(split_folder, rel: str) -> str:
    """The path an image's id is made from: relative to the dataset root, split folder included."""
    return rel if split_folder is None else f"{split_folder}/{rel}"


def reject_path(roots: dict, split_folder, rel: str) -> str:
    """How the rejects table names a file: its URL on a store, `file:<path>` locally."""
    local = storage.join(roots[split_folder], rel)
    return local if storage.is_remote(local) else "file:" + local


def hash_fraction(relpath: str) -> float:
    return int.from_bytes(hashlib.blake2b(b"split:" + relpath.encode("utf-8"), digest_size=8).digest(), "big") / 2 ** 64


def split_of(split_folder, rel: str, test_fraction: float) -> str:
    """The split of a file: its split folder, or, in a folder without them, a hash of its path."""
    if split_folder is not None:
        return split_folder
    return "test" if test_fraction > 0 and hash_fraction(rel) < test_fraction else "train"


def is_hidden(rel: str) -> bool:
    """Names Spark's file listing skips; they are rejected so that Spark's view and the dataset agree."""
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def write_files(roots: dict, class_index: dict, shape: tuple, resize: str, max_pixels: int, test_fraction: float,
                folders: dict, row_group_mb: float, context: storage.StorageContext,
                tasks: Iterable[tuple]) -> Iterator[dict]:
    """Each task (index, [(split folder or None, path relative to it), ...]) -> part files + rejects.

    Files are read with plain reads locally and through pipelines.core.storage on a remote
    store (`context`: the driver's storage context).
    """
    tune_worker()
    return storage.iterate_using(context, _files_written(roots, class_index, shape, resize, max_pixels, test_fraction,
                                                         folders, row_group_mb, tasks))


def _files_written(roots: dict, class_index: dict, shape: tuple, resize: str, max_pixels: int, test_fraction: float,
                   folders: dict, row_group_mb: float, tasks: Iterable[tuple]) -> Iterator[dict]:
    h, w, c = shape
    group = rows_per_row_group(h * w * c, row_group_mb)
    for task, files in tasks:
        def body(out: TaskOutput):
            pending = {}      # split -> (ids, labels, images) not yet written

            def flush(split):
                ids, labels, images = pending.pop(split)
                out.writer(split).write(records.encode_batch(np.array(ids, np.int64), np.array(labels, np.int64),
                                                             np.stack(images)))
            for split_folder, rel in files:
                split = split_of(split_folder, rel, test_fraction)
                local = storage.join(roots[split_folder], rel)
                parts = rel.split("/")
                image, reason = None, None
                if is_hidden(rel):
                    reason = EMPTY_FILE if storage.size(local) == 0 else SKIPPED_BY_SPARK
                elif len(parts) < 2:
                    reason = "not inside a class folder"
                elif parts[0] not in class_index:
                    reason = f"folder '{parts[0]}' is not one of the dataset's classes"
                else:
                    try:
                        image = decode_image(storage.read_bytes(local), h, w, c, resize, max_pixels)
                    except Reject as exc:
                        reason = str(exc)
                    except OSError as exc:         # gone or unreadable since the driver listed it
                        reason = f"unreadable file: {exc.strerror or exc}"
                if reason is not None:
                    out.rejects.append((reject_path(roots, split_folder, rel), split, reason))
                    continue
                ids, labels, images = pending.setdefault(split, ([], [], []))
                ids.append(stable_id(file_key(split_folder, rel)))
                labels.append(class_index[parts[0]])
                images.append(image)
                if len(ids) >= group:
                    flush(split)
            for split in list(pending):
                flush(split)
        yield TaskOutput(folders, task, group, keep_ids=True).run(body)
