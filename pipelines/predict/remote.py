"""Executor side of `sparkcnn predict`: read a task's files, and commit its share of the table.

A task is one chunk of the plan (a run of files, sorted by path, balanced by bytes).  `read_chunks`
fetches the chunk's files with a few threads (object-store GETs are latency-bound) and yields them
in small Arrow batches; the model runs in between (CNNModel, or a saved PipelineModel); then
`commit_chunks` writes the chunk's rejects and predictions as one part file each
(pipelines.predict.layout) and yields one summary row.  Nothing here imports the driver side.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core import storage
from pipelines.core.worker_remote import tune_worker
from pipelines.ingest.decode import Reject, open_image, to_channels
from pipelines.predict import layout
from pipelines.predict.cnn_model_remote import top_k_arrays

CHUNK, CONTENT, READ_ERROR = "_chunk", "content", "_read_error"
READ_THREADS = 8
READ_BATCH_ROWS = 16
SUMMARY_DDL = "chunk INT, scored LONG, rejected LONG"


@dataclass(frozen=True)
class TaskPlan:
    """What every task of one run shares (small: pickled into each task)."""
    output: str
    digest: str
    batch: str                   # this run's id, part of every part file's name
    storage_options: dict
    top_k: int
    class_names: tuple
    probabilities: bool
    embedding: bool
    decode_records: bool = False  # PipelineModel input: decode to sparkcnn record columns in the read step
    max_pixels: int = 89_478_485


def _identity_arrays(rows):
    """path, size, modified (int64 µs: Spark's rows carry it as a LONG), etag of listed (path, size, seconds, etag)."""
    return [pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.int64()),
            pa.array([None if r[2] is None else int(round(r[2] * 1e6)) for r in rows], pa.int64()),
            pa.array([r[3] for r in rows], pa.string())]


def _as_schema(columns: list, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([pc.cast(c, f.type) for c, f in zip(columns, schema)], schema=schema)


def _fetch(path: str):
    try:
        return storage.read_bytes(path), None
    except FileNotFoundError:
        return None, "file vanished after it was listed"
    except OSError as exc:
        return None, f"unreadable file: {exc.strerror or exc}"


def _decoded_record(data: bytes, max_pixels: int):
    image, _ = open_image(data, max_pixels, "predict.max_pixels")
    image = to_channels(image, 1 if image.mode == "L" else 3)
    arr = np.asarray(image, np.uint8)
    return arr.tobytes(), arr.shape[0], arr.shape[1], 1 if arr.ndim == 2 else arr.shape[2]


def read_chunks(plan: TaskPlan, files_bc, offsets: list, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """spark.range(chunks) -> rows (_chunk, path, size, modified, etag, content, _read_error) per file.

    `files_bc`: the run's to-do listing (Arrow IPC), sorted by chunk; chunk c is rows
    offsets[c]:offsets[c + 1].  With `decode_records`, content is decoded to sparkcnn's record
    columns (image, height, width, channels) and undecodable files are committed as rejects here.
    """
    tune_worker()
    storage.configure(plan.storage_options)
    files = pa.ipc.open_stream(files_bc.value).read_all()
    for batch in batches:
        for chunk in batch.column(0).to_pylist():
            rows = files.slice(offsets[chunk], offsets[chunk + 1] - offsets[chunk]).to_pylist()
            listed = [(r["path"], r["size"], r["modified"], r["etag"]) for r in rows]
            rejects = []
            with ThreadPoolExecutor(READ_THREADS) as pool:
                fetched = pool.map(_fetch, [r[0] for r in listed])
                for lo in range(0, len(listed), READ_BATCH_ROWS):
                    group = listed[lo:lo + READ_BATCH_ROWS]
                    contents, errors = zip(*[next(fetched) for _ in group])
                    if plan.decode_records:
                        yield from _record_batch(plan, chunk, group, contents, errors, rejects)
                        continue
                    yield pa.RecordBatch.from_arrays(
                        [pa.array([chunk] * len(group), pa.int32()), *_identity_arrays(group),
                         pa.array(contents, pa.binary()), pa.array(errors, pa.string())],
                        names=[CHUNK, *layout.IDENTITY_COLUMNS, CONTENT, READ_ERROR])
            if rejects:
                _commit_rejects(plan, chunk, rejects, tag="read")


def _record_batch(plan, chunk, group, contents, errors, rejects):
    good, decoded = [], []
    for row, data, error in zip(group, contents, errors):
        if error is None:
            try:
                decoded.append(_decoded_record(data, plan.max_pixels))
                good.append(row)
                continue
            except Reject as exc:
                error = str(exc)
        rejects.append((*row, error))
    if good:
        pixels, heights, widths, channels = zip(*decoded)
        yield pa.RecordBatch.from_arrays(
            [pa.array([chunk] * len(good), pa.int32()), *_identity_arrays(good), pa.array(pixels, pa.binary()),
             pa.array(heights, pa.int32()), pa.array(widths, pa.int32()), pa.array(channels, pa.int32()),
             pa.array([None] * len(good), pa.string())],
            names=[CHUNK, *layout.IDENTITY_COLUMNS, "image", "height", "width", "channels", READ_ERROR])


def _now(n: int) -> pa.Array:
    import time
    return pc.cast(pa.array([int(time.time() * 1e6)] * n, pa.int64()), layout.TIMESTAMP)


def _commit_rejects(plan: TaskPlan, chunk: int, rows: list, tag: str = "") -> None:
    n = len(rows)
    table = _as_schema([*_identity_arrays(rows), pa.array([r[4] for r in rows], pa.string()),
                        pa.array([plan.digest] * n, pa.string()), _now(n)], layout.REJECTS_SCHEMA)
    layout.commit_table(storage.join(layout.rejects_dir(plan.output, plan.digest),
                                     layout.part_name(plan.batch, chunk, tag)), table)


def _top_k_column(probabilities: pa.ChunkedArray, k: int, class_names) -> pa.Array:
    """top_k structs from a probability list column (a PipelineModel's output)."""
    values = [np.asarray(p, np.float32) for p in probabilities.to_pylist()]
    probs = np.stack(values) if values else np.zeros((0, 1), np.float32)
    index, best = top_k_arrays(probs, k, class_names)
    return pa.array([[{"classIndex": int(j), "className": class_names[j] if j < len(class_names) else None,
                       "probability": float(p)} for j, p in zip(row_i, row_p)] for row_i, row_p in zip(index, best)],
                    layout.TOP_K_TYPE)


def commit_chunks(plan: TaskPlan, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Model output rows of one task -> its rejects and predictions part files; one summary row per chunk."""
    tune_worker()
    storage.configure(plan.storage_options)
    keep = [layout.IDENTITY_COLUMNS, ["image_height", "image_width", "prediction", "top_k", "probabilities",
                                      "embedding", "error", READ_ERROR, CHUNK]]
    wanted = set(keep[0] + keep[1])
    pieces: dict = {}
    for batch in batches:
        table = pa.Table.from_batches([batch])
        table = table.select([n for n in table.column_names if n in wanted])
        for chunk in pc.unique(table[CHUNK]).to_pylist():
            pieces.setdefault(chunk, []).append(table.filter(pc.equal(table[CHUNK], chunk)))
    schema = layout.predictions_schema(plan.probabilities, plan.embedding)
    for chunk, tables in sorted(pieces.items()):
        rows = pa.concat_tables(tables)
        error = rows["error"] if "error" in rows.column_names else pa.nulls(rows.num_rows, pa.string())
        reason = pc.coalesce(rows[READ_ERROR], error)
        bad = pc.invert(pc.is_null(reason))
        rejected = rows.filter(bad)
        if rejected.num_rows:
            ident = [rejected[c] for c in layout.IDENTITY_COLUMNS]
            table = _as_schema([*ident, pc.filter(reason, bad), pa.array([plan.digest] * rejected.num_rows,
                                                                          pa.string()), _now(rejected.num_rows)],
                               layout.REJECTS_SCHEMA)
            layout.commit_table(storage.join(layout.rejects_dir(plan.output, plan.digest),
                                             layout.part_name(plan.batch, chunk)), table)
        scored = rows.filter(pc.invert(bad))
        n = scored.num_rows
        if n:
            top_k = (scored["top_k"] if "top_k" in scored.column_names
                     else _top_k_column(scored["probabilities"], plan.top_k, plan.class_names))
            columns = {c: scored[c] for c in layout.IDENTITY_COLUMNS}
            columns.update(height=scored["image_height"] if "image_height" in scored.column_names else pa.nulls(n, pa.int32()),
                           width=scored["image_width"] if "image_width" in scored.column_names else pa.nulls(n, pa.int32()),
                           prediction=scored["prediction"], top_k=top_k)
            if plan.probabilities:
                columns["probabilities"] = scored["probabilities"]
            if plan.embedding:
                columns["embedding"] = scored["embedding"]
            columns.update(model_digest=pa.array([plan.digest] * n, pa.string()), scored_at=_now(n))
            table = _as_schema([columns[f.name] for f in schema], schema)
            layout.commit_table(storage.join(layout.model_dir(plan.output, plan.digest),
                                             layout.part_name(plan.batch, chunk)), table)
        yield pa.RecordBatch.from_arrays([pa.array([chunk], pa.int32()), pa.array([n], pa.int64()),
                                          pa.array([rejected.num_rows], pa.int64())],
                                         names=["chunk", "scored", "rejected"])
