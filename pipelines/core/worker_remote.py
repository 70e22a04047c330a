"""Making a reused PySpark Python worker cheap to hand the next task (Python 3.11).

Before every task a PySpark worker calls `importlib.invalidate_caches()`, and
between tasks the daemon calls `gc.collect()`.  On Python 3.11 the first
re-reads the central directory of every zip on sys.path once per zipimporter
(pyspark.zip, py4j's zip, python311.zip, and the library's own --py-files zip
on a cluster: 11 importers, 45-75 ms per task measured on this machine); the
second walks every object the worker's imports made (numpy, pyarrow: ~40k
objects, 15-20 ms).  Together that was ~80 ms between two tasks of the same
worker, more than half the time of a whole ingest task at MNIST sizes.

`tune_worker()` is called at the start of an executor function; it acts once
per process:
  - a zip is re-read only when its file changed (size, mtime, inode), which is
    what invalidation is for: Spark fetches --py-files once per executor, and a
    changed file is still picked up;
  - the objects alive after the imports are moved out of the collector's
    sight (`gc.freeze()`); they live as long as the worker anyway.
"""
from __future__ import annotations

import gc
import os
import sys
import zipimport

_TUNED = False
_STAMPS: dict = {}      # archive path -> (size, mtime_ns, inode) when its directory was last read


def _stamp(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _invalidate_if_changed(importer, _original=zipimport.zipimporter.invalidate_caches):
    archive = importer.archive
    stamp = _stamp(archive)
    cached = zipimport._zip_directory_cache.get(archive)
    if stamp is not None and cached is not None and _STAMPS.get(archive) == stamp:
        importer._files = cached
        return
    _original(importer)
    _STAMPS[archive] = stamp


def tune_worker() -> None:
    """Idempotent; a no-op outside Python 3.11-style zipimport (it only patches what exists)."""
    global _TUNED
    if _TUNED:
        return
    _TUNED = True
    if sys.version_info[:2] == (3, 11) and hasattr(zipimport.zipimporter, "invalidate_caches"):
        for archive in list(zipimport._zip_directory_cache):
            _STAMPS[archive] = _stamp(archive)
        zipimport.zipimporter.invalidate_caches = _invalidate_if_changed
    gc.collect()
    gc.freeze()
