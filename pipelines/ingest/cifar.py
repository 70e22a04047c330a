"""Finding CIFAR-10/100 files (binary or python version, folder or .tar.gz) and their class names.

Users point data.path at whatever they downloaded: the tarball, the folder
it unpacks to, or its parent.  Which version it is follows from the file
names, so one setting covers all four layouts.
"""
from __future__ import annotations

import logging

from pipelines.core import storage
from pipelines.ingest.safe_pickle import load_data_pickle
from pipelines.ingest.sources import (
    SourceError,
    open_cifar_binary,
    open_cifar_pickles,
    unpack_archive,
)

logger = logging.getLogger("sparkcnn.ingest")

# version -> (train files, test files, class-name file)
LAYOUTS = {
    ("cifar10", "binary"): ([f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], "batches.meta.txt"),
    ("cifar10", "python"): ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    ("cifar100", "binary"): (["train.bin"], ["test.bin"], "fine_label_names.txt"),
    ("cifar100", "python"): (["train"], ["test"], "meta"),
}


def _find_dir(root: str, dataset: str) -> tuple:
    candidates = [root] + [storage.join(root, d) for d, is_dir in storage.entries(root) if is_dir]
    for folder in candidates:
        for version in ("binary", "python"):
            train, test, _ = LAYOUTS[(dataset, version)]
            if all(storage.exists(storage.join(folder, f)) for f in train[:1] + test):
                return folder, version
    expected = "; ".join(f"{v}: {', '.join(LAYOUTS[(dataset, v)][0][:1] + LAYOUTS[(dataset, v)][1])}"
                         for v in ("binary", "python"))
    raise SourceError(f"{root}: no {dataset} files found (looked in it and its subfolders for {expected})")


def _class_names(folder: str, dataset: str, version: str, coarse: bool) -> list:
    name_file = storage.join(folder, LAYOUTS[(dataset, version)][2])
    if version == "binary":
        if coarse:
            name_file = storage.join(folder, "coarse_label_names.txt")
        text = storage.read_bytes(name_file).decode("utf-8")
        return [line.strip() for line in text.splitlines() if line.strip()]
    meta = load_data_pickle(name_file)
    key = "label_names" if dataset == "cifar10" else ("coarse_label_names" if coarse else "fine_label_names")
    names = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(names, list):
        raise SourceError(f"{name_file}: no '{key}' list of class names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def open_cifar(path: str, dataset: str, scratch: str, coarse: bool = False) -> tuple:
    """-> ({'train': source, 'test': source}, class_names) for CIFAR-10 or CIFAR-100 at `path`."""
    if not storage.exists(path):
        raise SourceError(f"{path}: not found (data.path for {dataset})")
    if storage.isfile(path):
        logger.info(f"[ingest] unpacking {path}")
        path = unpack_archive(storage.local_copy(path, scratch), scratch)
    folder, version = _find_dir(path, dataset)
    train_files, test_files, _ = LAYOUTS[(dataset, version)]
    present_train = [storage.join(folder, f) for f in train_files if storage.exists(storage.join(folder, f))]
    if len(present_train) != len(train_files):
        missing = sorted(set(train_files) - {storage.basename(p) for p in present_train})
        raise SourceError(f"{folder}: missing {', '.join(missing)} of the {dataset} training batches")
    test_paths = [storage.join(folder, f) for f in test_files]
    if version == "binary":
        label_bytes = 1 if dataset == "cifar10" else 2
        label_offset = 0 if dataset == "cifar10" or coarse else 1
        sources = {"train": open_cifar_binary(present_train, label_bytes, label_offset),
                   "test": open_cifar_binary(test_paths, label_bytes, label_offset)}
    else:
        key = "labels" if dataset == "cifar10" else ("coarse_labels" if coarse else "fine_labels")
        sources = {"train": open_cifar_pickles(present_train, key), "test": open_cifar_pickles(test_paths, key)}
    names = _class_names(folder, dataset, version, coarse)
    expected = 10 if dataset == "cifar10" else (20 if coarse else 100)
    if len(names) != expected:
        raise SourceError(f"{folder}: {len(names)} class names for {dataset}, expected {expected}")
    return sources, names
