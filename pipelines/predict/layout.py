"""The predictions table's layout and how one task's share of it is committed (driver and executors).

    <output>/model=<digest16>/part-<batch>-<chunk>.parquet           one row per scored file
    <output>/_rejects/model=<digest16>/part-<batch>-<chunk>.parquet  one row per file that could not be
    <output>/_runs/<batch>.json                                      what each run listed, scored, rejected

`model=` is a Hive-style partition: `spark.read.parquet(output)` reads every model's predictions
with a `model` column (and skips `_rejects` and `_runs`, as Spark skips names starting with `_`);
a new model's digest scores everything again into its own partition.  A part file is the unit
of commit: written whole to a hidden temporary name and renamed on a local disk, one PUT (atomic
by the store's contract) on an object store, so a reader or a rerun sees a task's files entirely
or not at all.  A task writes its rejects before its predictions: killed in between, its scored
files are simply not there yet and the rerun scores them; nothing is ever in both.
"""
from __future__ import annotations

import io
import os

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import storage
from pipelines.core.store import write_bytes_atomic

MODEL_PREFIX = "model="
REJECTS_DIR = "_rejects"
RUNS_DIR = "_runs"
DIGEST_CHARS = 16

TOP_K_TYPE = pa.list_(pa.struct([pa.field("classIndex", pa.int32()), pa.field("className", pa.string()),
                                 pa.field("probability", pa.float32())]))
TIMESTAMP = pa.timestamp("us", tz="UTC")
IDENTITY_FIELDS = [pa.field("path", pa.string(), nullable=False), pa.field("size", pa.int64()),
                   pa.field("modified", TIMESTAMP), pa.field("etag", pa.string())]
IDENTITY_COLUMNS = [f.name for f in IDENTITY_FIELDS]


def predictions_schema(probabilities: bool, embedding: bool) -> pa.Schema:
    fields = IDENTITY_FIELDS + [
        pa.field("height", pa.int32()), pa.field("width", pa.int32()),
        pa.field("prediction", pa.int32()), pa.field("top_k", TOP_K_TYPE)]
    if probabilities:
        fields.append(pa.field("probabilities", pa.list_(pa.float32())))
    if embedding:
        fields.append(pa.field("embedding", pa.list_(pa.float32())))
    return pa.schema(fields + [pa.field("model_digest", pa.string()), pa.field("scored_at", TIMESTAMP)])


REJECTS_SCHEMA = pa.schema(IDENTITY_FIELDS + [pa.field("reason", pa.string()), pa.field("model_digest", pa.string()),
                                              pa.field("scored_at", TIMESTAMP)])


def model_dir(output: str, digest: str) -> str:
    return storage.join(output, MODEL_PREFIX + digest[:DIGEST_CHARS])


def rejects_dir(output: str, digest: str) -> str:
    return storage.join(output, REJECTS_DIR, MODEL_PREFIX + digest[:DIGEST_CHARS])


def runs_dir(output: str) -> str:
    return storage.join(output, RUNS_DIR)


def part_name(batch: str, chunk: int, tag: str = "") -> str:
    return f"part-{batch}-{chunk:06d}{'-' + tag if tag else ''}.parquet"


def is_part(name: str) -> bool:
    return name.startswith("part-") and name.endswith(".parquet")


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="snappy")
    return buffer.getvalue()


def commit_table(location: str, table: pa.Table) -> None:
    """A part file, whole or not at all (pipelines.core.store.write_bytes_atomic)."""
    write_bytes_atomic(location, parquet_bytes(table))


def remove_stale_temporaries(folder: str, older_than_seconds: float) -> int:
    """Hidden temporaries a killed task left in a local partition folder (object stores have none)."""
    import time
    if storage.is_remote(folder) or not os.path.isdir(folder):
        return 0
    removed = 0
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(".part-") and ".tmp-" in name and time.time() - os.path.getmtime(path) > older_than_seconds:
            os.remove(path)
            removed += 1
    return removed


def part_files(folder: str) -> list:
    """The committed part files of one partition folder, sorted (hidden temporaries are not parts)."""
    return [storage.join(folder, name) for name in storage.listdir(folder) if is_part(name)]


def read_part(location: str, columns=None) -> pa.Table:
    with storage.open_file(location) as f:
        return pq.read_table(io.BytesIO(f.read()), columns=columns)
