"""Reader for the IDX format of MNIST and Fashion-MNIST (raw or gzip).

The header is validated against the file size before any row is read, so a
truncated download or a labels file paired with the wrong images file fails
with a message naming the file, rather than as a reshape error deep in a
Spark task.  Rows are read by range so Spark tasks can each read their own
slice of one file without loading the whole file anywhere.
"""
from __future__ import annotations

import gzip
import os
import shutil
import struct
from dataclasses import dataclass

import numpy as np

from pipelines.core import storage
from pipelines.core.errors import DataError

# IDX type byte -> numpy dtype (big-endian as stored)
_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class IdxFormatError(DataError, ValueError):
    """The file is not a well-formed IDX file; the message names the file and what was expected."""


@dataclass(frozen=True)
class IdxHeader:
    path: str
    dtype: np.dtype
    dims: tuple          # (count, *row_shape)
    data_offset: int

    @property
    def count(self) -> int:
        return self.dims[0]

    @property
    def row_shape(self) -> tuple:
        return self.dims[1:]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize


def is_gzip(path: str) -> bool:
    with storage.open_file(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def read_header(path: str, expect_ndim: int | None = None) -> IdxHeader:
    """Parse and validate the header of an uncompressed IDX file."""
    if not storage.exists(path):
        raise IdxFormatError(f"{path}: file not found")
    size = storage.size(path)
    with storage.open_file(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4:
            raise IdxFormatError(f"{path}: {size} bytes is too short for an IDX header (needs at least 4)")
        zero1, zero2, type_code, ndim = head
        if zero1 != 0 or zero2 != 0 or type_code not in _DTYPES or ndim == 0:
            raise IdxFormatError(
                f"{path}: wrong magic number 0x{head.hex()}; an IDX file starts with 0x0000 then a type "
                f"byte in {sorted(hex(t) for t in _DTYPES)} and a dimension count "
                "(MNIST images: 0x00000803, labels: 0x00000801)"
            )
        if expect_ndim is not None and ndim != expect_ndim:
            raise IdxFormatError(f"{path}: has {ndim} dimensions, expected {expect_ndim}")
        raw_dims = f.read(4 * ndim)
        if len(raw_dims) < 4 * ndim:
            raise IdxFormatError(f"{path}: header truncated (needs {4 + 4 * ndim} bytes, file has {size})")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    header = IdxHeader(path, _DTYPES[type_code], tuple(int(d) for d in dims), 4 + 4 * ndim)
    expected = header.data_offset + header.count * header.row_bytes
    if size != expected:
        raise IdxFormatError(
            f"{path}: header says {header.count} items of shape {header.row_shape} "
            f"({expected} bytes in all) but the file has {size} bytes"
            + (" (truncated?)" if size < expected else " (trailing data?)")
        )
    return header


def ensure_uncompressed(path: str, scratch_dir: str) -> str:
    """Return a path to an uncompressed copy (gzip cannot be read by byte range).

    Decompression streams in chunks, so memory does not depend on file size.
    The copy is reused when it is newer than the source.  A remote .gz is downloaded into
    scratch first, so the uncompressed copy is on the driver's disk (see pipelines.ingest.arrays).
    """
    if not is_gzip(path):
        return path
    path = storage.local_copy(path, scratch_dir)
    os.makedirs(scratch_dir, exist_ok=True)
    base = os.path.basename(path)
    target = os.path.join(scratch_dir, base[:-3] if base.endswith(".gz") else base + ".raw")
    if os.path.exists(target) and os.path.getmtime(target) >= os.path.getmtime(path):
        return target
    tmp = f"{target}.part-{os.getpid()}"
    try:
        with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError) as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise IdxFormatError(f"{path}: corrupt gzip stream ({exc})") from None
    os.replace(tmp, target)
    return target


def read_rows(header: IdxHeader, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) as a native-endian array of shape (stop-start, *row_shape)."""
    if not 0 <= start <= stop <= header.count:
        raise IndexError(f"{header.path}: rows [{start}, {stop}) outside [0, {header.count})")
    n = stop - start
    with storage.open_file(header.path, "rb") as f:
        f.seek(header.data_offset + start * header.row_bytes)
        buf = f.read(n * header.row_bytes)
    if len(buf) != n * header.row_bytes:
        raise IdxFormatError(f"{header.path}: file changed while reading rows [{start}, {stop})")
    arr = np.frombuffer(buf, dtype=header.dtype).reshape((n, *header.row_shape))
    return arr.astype(header.dtype.newbyteorder("="), copy=False)


def check_pair(images: IdxHeader, labels: IdxHeader) -> None:
    """An images file and its labels file must describe the same number of items."""
    if len(labels.row_shape) != 0:
        raise IdxFormatError(f"{labels.path}: labels must be 1-D, got item shape {labels.row_shape}")
    if images.count != labels.count:
        raise IdxFormatError(
            f"{labels.path}: {labels.count} labels but {images.path} has {images.count} images"
        )


def write_idx(path: str, array: np.ndarray) -> None:
    """Write an array as IDX, gzipped when the name ends in .gz (tests build real IDX files with it)."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"dtype {array.dtype} has no IDX type code")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(bytes([0, 0, code, array.ndim]))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(_DTYPES[code], copy=False).tobytes())
