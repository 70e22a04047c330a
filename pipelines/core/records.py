"""The image-record contract: the one place that says what a row of a sparkcnn dataset holds.

Every dataset is a directory of Parquet files plus a small JSON sidecar
(`_sparkcnn_dataset.json`). Ingest writes this contract, augmentation,
training and scoring read it; none of them restate column names or dtypes.

Why raw bytes rather than PNG or an array<int> column: decoding is then a
reshape of one Arrow buffer (no per-row work), Parquet's dictionary/RLE
encoding + snappy still shrinks mostly-black digits ~4x, and Spark, pyarrow
and Petastorm all read a plain `binary` column.  Height/width/channels are
stored per row (they cost nothing after RLE) so a row is self-describing and
maps directly onto Spark's image struct; the sidecar records the dataset-wide
shape that training needs.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from pipelines.core import storage
from pipelines.core.errors import DataError
from pipelines.core.published import published, remember, remembered

ID = "id"            # int64: position of the image in its source (stable across reruns)
LABEL = "label"      # int32: class index into DatasetMeta.class_names
HEIGHT = "height"    # int32
WIDTH = "width"      # int32
CHANNELS = "channels"  # int32: 1 (grayscale) or 3 (RGB)
IMAGE = "image"      # binary: uint8 pixels, row-major HWC, len == height*width*channels

COLUMNS = (ID, LABEL, HEIGHT, WIDTH, CHANNELS, IMAGE)

ARROW_SCHEMA = pa.schema([
    pa.field(ID, pa.int64(), nullable=False),
    pa.field(LABEL, pa.int32(), nullable=False),
    pa.field(HEIGHT, pa.int32(), nullable=False),
    pa.field(WIDTH, pa.int32(), nullable=False),
    pa.field(CHANNELS, pa.int32(), nullable=False),
    pa.field(IMAGE, pa.binary(), nullable=False),
])

# Spark DDL of the same schema; a string so that importing this module does not
# need a JVM (it is imported inside executors and by plain pyarrow tools).
SPARK_DDL = "id LONG, label INT, height INT, width INT, channels INT, image BINARY"

# Optional lineage columns, written by the augment stage after the core columns.  Readers that
# select the core columns (training, scoring, the report) read augmented datasets unchanged.
SOURCE_ID = "source_id"  # int64: id of the source image the row was made from
SAMPLE = "sample"        # int32: 0 = the source image itself, 1..n = augmented samples
OPS = "ops"              # string: JSON list of the ops applied, with their drawn parameters

LINEAGE_COLUMNS = (SOURCE_ID, SAMPLE, OPS)

AUGMENTED_ARROW_SCHEMA = pa.schema(list(ARROW_SCHEMA) + [
    pa.field(SOURCE_ID, pa.int64(), nullable=False),
    pa.field(SAMPLE, pa.int32(), nullable=False),
    pa.field(OPS, pa.string(), nullable=False),
])
AUGMENTED_SPARK_DDL = SPARK_DDL + ", source_id LONG, sample INT, ops STRING"

# Predictions of a trained model (runs/<run>/predictions): the record's id and label, then these.
PREDICTION = "prediction"          # int32: the predicted class index
PROBABILITIES = "probabilities"    # array<float32>: one probability per class
PREDICTIONS_DDL = "id LONG, label INT, prediction INT, probabilities ARRAY<FLOAT>"

META_FILE = "_sparkcnn_dataset.json"  # leading underscore: Spark and pyarrow skip it


class RecordError(DataError, ValueError):
    """A row or batch that does not follow the record contract."""


@dataclass
class DatasetMeta:
    """Dataset-wide facts that readers need before touching a row."""
    name: str
    split: str
    num_rows: int
    height: int
    width: int
    channels: int
    class_names: list
    source: str = ""
    class_counts: dict = field(default_factory=dict)  # str(label) -> rows
    rejected: int = 0
    contract_version: int = 1
    augmentation: dict = field(default_factory=dict)  # augment stage: source, seed, pipeline, scramble permutation

    @property
    def shape(self) -> tuple:
        return (self.height, self.width, self.channels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


@dataclass(frozen=True)
class PublishedDataset:
    """A dataset as one command reads it: where it is configured, the version it pins, its sidecar.

    Made once by `open_dataset` (on a store: one manifest read, one sidecar read) and handed to
    everything that needs one of these facts, so they all describe the same version.
    """
    location: str              # as configured: <datasets_dir>/<name>/<split>, or a run's validation split
    url: str                   # the pinned version: what readers open, whatever is published meanwhile
    version: Optional[str]     # what stage keys record (None: a plain folder, not published by this project)
    meta: DatasetMeta


def write_meta(dataset_dir: str, meta: DatasetMeta) -> None:
    """The sidecar, into a dataset's staging folder or prefix (published with the part files)."""
    location = storage.join(dataset_dir, META_FILE)
    if storage.is_remote(location):
        storage.put_bytes(location, meta.to_json().encode())
        remember("sidecar", dataset_dir, json.loads(meta.to_json()))    # a staging prefix is its published url
        return
    with open(location, "w") as f:
        f.write(meta.to_json())


def _read_sidecar(url: str, dataset_dir: str) -> dict:
    try:
        return json.loads(storage.read_bytes(storage.join(url, META_FILE)))
    except FileNotFoundError:
        raise RecordError(
            f"{storage.redact(dataset_dir)}: not a sparkcnn dataset (no {META_FILE}); run `sparkcnn ingest` first"
        ) from None


def open_dataset(dataset_dir: str) -> PublishedDataset:
    """A published dataset (through its link or manifest) or a staging folder, with its sidecar.

    A published version's sidecar never changes, so within a command (pipelines/core/published.py) it
    is read once; a plain folder's is read every time."""
    current = published(dataset_dir)
    if current.version is None:
        raw = _read_sidecar(current.url, dataset_dir)
    else:
        raw = remembered("sidecar", current.url, lambda: _read_sidecar(current.url, dataset_dir))
    known = {k: copy.deepcopy(raw[k]) for k in DatasetMeta.__dataclass_fields__ if k in raw}
    return PublishedDataset(dataset_dir, current.url, current.version, DatasetMeta(**known))


def read_meta(dataset_dir: str) -> DatasetMeta:
    """The sidecar of a published dataset (through its link or manifest) or of a staging folder."""
    return open_dataset(dataset_dir).meta


def encode_batch(ids: np.ndarray, labels: np.ndarray, images: np.ndarray) -> pa.RecordBatch:
    """Build a record batch from N images shaped (N, H, W) or (N, H, W, C), dtype uint8."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise RecordError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4:
        raise RecordError(f"images must be (N,H,W) or (N,H,W,C), got shape {images.shape}")
    n, h, w, c = images.shape
    if len(ids) != n or len(labels) != n:
        raise RecordError(f"{n} images but {len(ids)} ids and {len(labels)} labels")
    row_bytes = h * w * c
    flat = np.ascontiguousarray(images).reshape(-1)
    offsets = np.arange(0, (n + 1) * row_bytes, row_bytes, dtype=np.int32)
    image_arr = pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(flat)])

    def const(v):
        return pa.array(np.full(n, v, dtype=np.int32))

    return pa.RecordBatch.from_arrays(
        [pa.array(np.asarray(ids, dtype=np.int64)), pa.array(np.asarray(labels, dtype=np.int32)),
         const(h), const(w), const(c), image_arr],
        schema=ARROW_SCHEMA,
    )


def with_lineage(batch: pa.RecordBatch, source_ids, samples, ops) -> pa.RecordBatch:
    """A core record batch plus the lineage columns (see AUGMENTED_ARROW_SCHEMA)."""
    return pa.RecordBatch.from_arrays(
        list(batch.columns) + [pa.array(np.asarray(source_ids, dtype=np.int64)),
                               pa.array(np.asarray(samples, dtype=np.int32)), pa.array(ops, pa.string())],
        schema=AUGMENTED_ARROW_SCHEMA)


def decode_images(column, shape: Sequence[int]) -> np.ndarray:
    """Turn a binary column (pyarrow Array/ChunkedArray or a sequence of bytes) into (N, H, W, C) uint8.

    For an Arrow array this is a zero-copy view of its data buffer when every
    row has the expected size, which is what keeps scoring and training input
    from spending time per row.
    """
    h, w, c = (int(s) for s in shape)
    row_bytes = h * w * c
    if isinstance(column, pa.ChunkedArray):
        parts = [decode_images(chunk, shape) for chunk in column.chunks]
        return np.concatenate(parts) if parts else np.zeros((0, h, w, c), np.uint8)
    if isinstance(column, pa.Array):
        n = len(column)
        if n == 0:
            return np.zeros((0, h, w, c), np.uint8)
        if column.null_count:
            raise RecordError("image column holds nulls")
        if pa.types.is_large_binary(column.type):
            offsets_dtype = np.int64
        elif pa.types.is_binary(column.type):
            offsets_dtype = np.int32
        else:
            raise RecordError(f"image column must be binary, got {column.type}")
        _, offsets_buf, data_buf = column.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=offsets_dtype)[column.offset:column.offset + n + 1]
        lengths = np.diff(offsets)
        if not np.all(lengths == row_bytes):
            bad = int(np.flatnonzero(lengths != row_bytes)[0])
            raise RecordError(
                f"image row {bad} has {int(lengths[bad])} bytes, expected {row_bytes} for shape {h}x{w}x{c}"
            )
        data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0]:offsets[-1]]
        return data.reshape(n, h, w, c)
    rows = list(column)
    for i, blob in enumerate(rows):
        if len(blob) != row_bytes:
            raise RecordError(f"image row {i} has {len(blob)} bytes, expected {row_bytes} for shape {h}x{w}x{c}")
    if not rows:
        return np.zeros((0, h, w, c), np.uint8)
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), h, w, c)


def stable_id(relpath: str) -> int:
    """63-bit id from the path relative to the dataset root (uniqueness is checked after writing)."""
    return int.from_bytes(hashlib.blake2b(relpath.encode("utf-8"), digest_size=8).digest(), "big") >> 1
