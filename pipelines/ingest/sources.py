"""Array-like image sources that Spark tasks read by row range: IDX, CIFAR (binary and python), .npz.

Each source is a small frozen dataclass (pickled to executors) that knows its
row count and shape, validated on the driver before any task starts, and
reads rows [start, stop) as (uint8 images NHWC, int64 labels) without ever
loading the whole dataset in one process.  Whole-file problems (wrong
magic, sizes that disagree, unsafe pickles) are raised here, naming the file.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from pipelines.core import storage
from pipelines.core.errors import DataError
from pipelines.ingest import idx
from pipelines.ingest.safe_pickle import load_data_pickle

CIFAR_SHAPE = (32, 32, 3)
CIFAR_PIXELS = 32 * 32 * 3


class SourceError(DataError, ValueError):
    """An input file that cannot be read as the format it claims; the message names it."""


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    return images[..., np.newaxis] if images.ndim == 3 else images


@dataclass(frozen=True)
class IdxPairSource:
    images: idx.IdxHeader
    labels: idx.IdxHeader

    @property
    def rows(self) -> int:
        return self.images.count

    @property
    def shape(self) -> tuple:
        rs = self.images.row_shape
        return (rs[0], rs[1], rs[2] if len(rs) == 3 else 1)

    def describe(self) -> str:
        return storage.basename(self.images.path)

    def paths(self) -> tuple:
        return (self.images.path, self.labels.path)

    def read(self, start: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
        images = idx.read_rows(self.images, start, stop)
        if images.dtype != np.uint8:
            raise SourceError(f"{self.images.path}: pixels are {images.dtype}, expected unsigned bytes")
        return _as_nhwc(images), self.read_labels(start, stop)

    def read_labels(self, start: int, stop: int) -> np.ndarray:
        return idx.read_rows(self.labels, start, stop).astype(np.int64)


def open_idx_pair(images_path: str, labels_path: str, scratch: str) -> IdxPairSource:
    images = idx.read_header(idx.ensure_uncompressed(images_path, scratch))
    labels = idx.read_header(idx.ensure_uncompressed(labels_path, scratch), expect_ndim=1)
    if len(images.row_shape) not in (2, 3):
        raise idx.IdxFormatError(f"{images_path}: expected images (count, rows, cols[, channels]), got dims {images.dims}")
    idx.check_pair(images, labels)
    return IdxPairSource(images, labels)


def _locate(files: tuple, start: int, stop: int):
    """Yield (file index, local start, local stop, global offset) for rows [start, stop) across files."""
    offset = 0
    for i, (_, count) in enumerate(files):
        lo, hi = max(start, offset), min(stop, offset + count)
        if lo < hi:
            yield i, lo - offset, hi - offset, lo - start
        offset += count


@dataclass(frozen=True)
class _CifarFiles:
    """Rows spread over several CIFAR batch files, numbered across them in file order."""
    files: tuple            # ((path, row count), ...)

    shape = CIFAR_SHAPE

    @property
    def rows(self) -> int:
        return sum(c for _, c in self.files)

    def describe(self) -> str:
        return ",".join(storage.basename(p) for p, _ in self.files)

    def paths(self) -> tuple:
        return tuple(p for p, _ in self.files)


@dataclass(frozen=True)
class CifarBinarySource(_CifarFiles):
    """CIFAR's binary version: fixed-size records of label byte(s) then 3072 planar (CHW) pixels."""
    label_bytes: int = 1    # 1 for CIFAR-10, 2 (coarse, fine) for CIFAR-100
    label_offset: int = 0   # which label byte to use

    def read(self, start: int, stop: int):
        rec = self.label_bytes + CIFAR_PIXELS
        images = np.empty((stop - start, *CIFAR_SHAPE), np.uint8)
        labels = np.empty(stop - start, np.int64)
        for i, lo, hi, out in _locate(self.files, start, stop):
            path = self.files[i][0]
            with storage.open_file(path, "rb") as f:
                f.seek(lo * rec)
                raw = f.read((hi - lo) * rec)
            if len(raw) != (hi - lo) * rec:
                raise SourceError(f"{path}: file changed while reading records [{lo}, {hi})")
            arr = np.frombuffer(raw, np.uint8).reshape(hi - lo, rec)
            labels[out:out + hi - lo] = arr[:, self.label_offset]
            images[out:out + hi - lo] = arr[:, self.label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, labels


def open_cifar_binary(paths: list, label_bytes: int, label_offset: int) -> CifarBinarySource:
    rec = label_bytes + CIFAR_PIXELS
    files = []
    for path in paths:
        size = storage.size(path)
        if size == 0 or size % rec:
            raise SourceError(f"{path}: {size} bytes is not a whole number of {rec}-byte CIFAR records "
                              f"({label_bytes} label byte(s) + 3072 pixels); truncated or not this format?")
        files.append((path, size // rec))
    return CifarBinarySource(tuple(files), label_bytes, label_offset)


_BATCH_CACHE: dict = {}


def _load_cifar_batch(path: str, label_key: str):
    """One python-version batch, checked; the last one read is kept per process (tasks read ranges)."""
    if path not in _BATCH_CACHE:
        batch = load_data_pickle(path)
        if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
            keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise SourceError(f"{path}: expected a CIFAR batch dict with 'data' and '{label_key}', got {keys}")
        data = np.asarray(batch["data"])
        labels = np.asarray(batch[label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
            raise SourceError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
        if len(labels) != len(data):
            raise SourceError(f"{path}: {len(labels)} labels for {len(data)} images")
        _BATCH_CACHE.clear()
        _BATCH_CACHE[path] = (data, labels)
    return _BATCH_CACHE[path]


@dataclass(frozen=True)
class CifarPickleSource(_CifarFiles):
    """CIFAR's python version: pickled dicts of a (N, 3072) uint8 array and a label list, per file."""
    label_key: str = "labels"

    def read(self, start: int, stop: int):
        images = np.empty((stop - start, *CIFAR_SHAPE), np.uint8)
        labels = np.empty(stop - start, np.int64)
        for i, lo, hi, out in _locate(self.files, start, stop):
            data, lab = _load_cifar_batch(self.files[i][0], self.label_key)
            images[out:out + hi - lo] = data[lo:hi].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels[out:out + hi - lo] = lab[lo:hi]
        return images, labels


def open_cifar_pickles(paths: list, label_key: str) -> CifarPickleSource:
    files = []
    for path in paths:
        data, _ = _load_cifar_batch(path, label_key)   # validates on the driver, once
        files.append((path, len(data)))
    _BATCH_CACHE.clear()
    return CifarPickleSource(tuple(files), label_key)


@dataclass(frozen=True)
class NpySource:
    """x/y arrays extracted from an .npz to plain .npy files, memory-mapped by each task."""
    images_path: str
    labels_path: str
    rows: int
    shape: tuple

    def describe(self) -> str:
        return os.path.basename(self.images_path)

    def paths(self) -> tuple:
        return (self.images_path, self.labels_path)

    def read(self, start: int, stop: int):
        images = np.load(self.images_path, mmap_mode="r", allow_pickle=False)[start:stop]
        return _as_nhwc(np.ascontiguousarray(images)), self.read_labels(start, stop)

    def read_labels(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(np.load(self.labels_path, mmap_mode="r", allow_pickle=False)[start:stop], dtype=np.int64)


def _extract_member(zf: zipfile.ZipFile, member: str, dest: str) -> str:
    tmp = f"{dest}.part-{os.getpid()}"
    with zf.open(member) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, dest)
    return dest


def open_npz(path: str, scratch: str) -> dict:
    """{split: NpySource} from an .npz holding x/y (-> train) or x_train/y_train/x_test/y_test (Keras' layout).

    The arrays are extracted to plain .npy files in scratch (a remote .npz is downloaded first).
    """
    path = storage.local_copy(path, scratch)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{path}: not a readable .npz ({exc})") from None
    with zf:
        names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        pairs = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")} if "x_train" in names \
            else {"train": ("x", "y")}
        missing = [k for pair in pairs.values() for k in pair if k not in names]
        if missing:
            raise SourceError(f"{path}: missing array(s) {', '.join(missing)}; expected x and y, "
                              f"or x_train, y_train, x_test, y_test (found {', '.join(sorted(names)) or 'none'})")
        os.makedirs(scratch, exist_ok=True)
        stem = os.path.splitext(os.path.basename(path))[0]
        out = {}
        for split, (xk, yk) in pairs.items():
            xp = _extract_member(zf, xk + ".npy", os.path.join(scratch, f"{stem}-{xk}.npy"))
            yp = _extract_member(zf, yk + ".npy", os.path.join(scratch, f"{stem}-{yk}.npy"))
            x = np.load(xp, mmap_mode="r", allow_pickle=False)
            y = np.load(yp, mmap_mode="r", allow_pickle=False)
            if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
                raise SourceError(f"{path}: '{xk}' is {x.dtype} {x.shape}; expected uint8 (N, H, W) or (N, H, W, 1|3)")
            if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
                raise SourceError(f"{path}: '{yk}' is {y.dtype} {y.shape}; expected {len(x)} integer labels")
            shape = (x.shape[1], x.shape[2], x.shape[3] if x.ndim == 4 else 1)
            out[split] = NpySource(xp, yp, len(x), shape)
        return out


def unpack_archive(path: str, scratch: str) -> str:
    """A .tar.gz as downloaded (e.g. cifar-10-python.tar.gz), unpacked once; members may not escape."""
    target = os.path.join(scratch, os.path.basename(path).split(".tar")[0])
    if os.path.isdir(target) and os.path.getmtime(target) >= os.path.getmtime(path):
        return target
    tmp = f"{target}.part-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(path) as tf:
            tf.extractall(tmp, filter="data")   # refuses absolute paths, '..', links out, devices
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SourceError(f"{path}: cannot unpack ({exc})") from None
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target
