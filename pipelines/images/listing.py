"""What `predict.input` names, as one Arrow table of files: path, size, modification time, ETag.

Driver side.  A folder or a glob is listed with the store's own listing calls, which already
carry size, time and ETag (S3: 1,000 keys per request), so no file is stat-ed one by one; only a
text or Parquet *list* of paths (pipelines/images/path_lists.py) needs a stat per path (a HEAD on an object store), done by a pool
of threads.  The table is what the ledger compares with the files already scored and what the
planner deals into tasks; at 10M files it is about 1 GB of Arrow memory on the driver.
"""
from __future__ import annotations

from typing import Iterable

import pyarrow as pa

from pipelines.core import storage
from pipelines.core.context_threads import ContextThreadPool
from pipelines.core.errors import SparkcnnError
from pipelines.images.path_lists import is_path_list, read_path_list

PATH, SIZE, MODIFIED, ETAG = "path", "size", "modified", "etag"
LISTING_SCHEMA = pa.schema([
    pa.field(PATH, pa.string(), nullable=False),
    pa.field(SIZE, pa.int64()),
    pa.field(MODIFIED, pa.float64()),      # epoch seconds
    pa.field(ETAG, pa.string()),
])
GLOB_CHARS = set("*?[")
STAT_THREADS = 16


class InputError(SparkcnnError, ValueError):
    """predict.input names nothing usable; the message names it and why."""


def _table(rows: Iterable[tuple]) -> pa.Table:
    paths, sizes, times, tags = [], [], [], []
    for path, size, modified, tag in rows:
        paths.append(path)
        sizes.append(size)
        times.append(modified)
        tags.append(tag)
    table = pa.table([paths, sizes, times, tags], schema=LISTING_SCHEMA)
    return table.sort_by(PATH)


def stat_all(paths: list) -> Iterable[tuple]:
    def one(path):
        try:
            return (path, *storage.stat(path))
        except FileNotFoundError:
            return path, None, None, None      # listed but missing: a reject row, not a crash
    with ContextThreadPool(STAT_THREADS if any(storage.is_remote(p) for p in paths[:1]) else 1) as pool:
        yield from pool.map(one, paths)


def list_inputs(location: str, path_column: str = PATH) -> pa.Table:
    """The files `location` names (folder, glob, list file or single file), sorted by path."""
    if not location:
        raise InputError("predict.input is empty: name a folder, a glob, a list of paths or a table")
    location = storage.normalize(location)     # local paths absolute: a file's identity must not depend on the cwd
    origin = storage.redact(location)
    if GLOB_CHARS & set(location.split("://", 1)[-1]):
        return _table(storage.glob_details(location))
    if is_path_list(location):
        return _table(stat_all(read_path_list(location, path_column, "predict.input")))
    if storage.isdir(location):
        return _table((storage.join(location, rel), size, modified, tag)
                      for rel, size, modified, tag in storage.walk_details(location))
    if storage.isfile(location):
        return _table([(location, *storage.stat(location))])
    raise InputError(f"predict.input: {origin} does not exist (a folder, a glob, a .txt/.parquet list or a file)")
