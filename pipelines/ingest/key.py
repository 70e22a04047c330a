"""What an ingest's datasets depend on: the data and ingest settings and the raw files' identities.

Raw files are identified without reading them: a folder (image folders, IDX/CIFAR folders, an
.npz file) by a digest of its listing (names, sizes, times, ETags); a list of image files by the
list and a digest of every listed file's size, time and ETag; fetched datasets by the verified
files in the download cache.  The record lives beside the datasets (<datasets_dir>/<dataset>/),
not in a run directory: two runs on the same dataset and settings share it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from pipelines.core import storage
from pipelines.core.sections import FORMATS_READING_PATH
from pipelines.core.stage_cache import StageKey, identity, listing_identity
from pipelines.images.path_lists import is_path_list
from pipelines.ingest.file_list import listed_files


def raw_identity(cfg) -> dict:
    d = cfg.data
    if d.format == "folder" and is_path_list(d.path):      # the listed files, not just the list
        root, found = listed_files(d.path)
        digest = hashlib.sha256(json.dumps(sorted(found.items()), default=str).encode()).hexdigest()
        return {"path": d.path, "list": identity(d.path), "root": root, "files": digest}
    if d.format in FORMATS_READING_PATH or d.source == "dir":
        return {"path": d.path, "listing": listing_identity(d.path)}
    from pipelines.ingest.fetch import fetch_idx_dataset
    files = fetch_idx_dataset(d.format, d.cache_dir, d.source, d.path, announce=False)
    return {role: identity(path) for role, path in sorted(files.items())}


def inputs(cfg, store) -> dict:
    data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in ("cache_dir", "datasets_dir")}
    return {"data section": data, "ingest section": dataclasses.asdict(cfg.ingest), "raw files": raw_identity(cfg)}


def outputs(cfg, store, result) -> list:
    written = [cfg.dataset_dir(split) for split in (result or {})]
    rejects = storage.join(cfg.dataset_root, "rejects")
    return written + ([rejects] if cfg.data.format == "folder" and identity(rejects) else [])


INGEST_KEY = StageKey(inputs, outputs, lambda cfg, store: cfg.dataset_root)
