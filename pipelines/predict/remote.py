"""Executor side of `sparkcnn predict`: a task reads its chunk of files, scores them and commits them.

A task is one chunk of the plan (a run of files, sorted by path, balanced by bytes).  For a CNN
(CNNModel's engine) one function does it all in one Python worker (`score_chunks`): fetch and
decode in threads ahead of the model, score, and commit the chunk's rejects and predictions as one
part file each (pipelines.predict.layout).  A saved PipelineModel runs as Spark stages between two
of ours: `read_chunks` decodes the files into sparkcnn record columns (rejecting what does not
decode), the pipeline transforms them, `commit_chunks` commits.  Nothing here imports the driver side.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core import storage
from pipelines.core.context_threads import ContextThreadPool
from pipelines.core.worker_remote import tune_worker
from pipelines.images import pixels
from pipelines.images.decode import Reject, open_image, to_channels
from pipelines.inference.cnn_model_remote import predict_batch, stack_decoded, top_k_column
from pipelines.inference.network import load_network
from pipelines.predict import layout

CHUNK = "_chunk"
READ_THREADS = 8          # fetch+decode threads per task: object-store GETs wait on the network
READ_BATCH_ROWS = 16
LOOKAHEAD = 2          # batches fetched and decoded ahead of the model
SUMMARY_DDL = "chunk INT, scored LONG, rejected LONG"


@dataclass(frozen=True)
class TaskPlan:
    """What every task of one run shares (small: pickled into each task)."""
    output: str
    digest: str
    batch: str                   # this run's id, part of every part file's name
    storage: storage.StorageContext     # the driver's: every task runs under it
    top_k: int
    class_names: tuple
    probabilities: bool
    embedding: bool
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


def _chunk_files(files_bc, offsets: list, batches: Iterator[pa.RecordBatch]):
    """(chunk, [(path, size, modified seconds, etag)]) for each chunk index spark.range hands this task.

    `files_bc`: the run's to-do listing (Arrow IPC), sorted by chunk; chunk c is rows offsets[c]:offsets[c + 1].
    """
    files = pa.ipc.open_stream(files_bc.value).read_all()
    for batch in batches:
        for chunk in batch.column(0).to_pylist():
            rows = files.slice(offsets[chunk], offsets[chunk + 1] - offsets[chunk]).to_pylist()
            yield chunk, [(r["path"], r["size"], r["modified"], r["etag"]) for r in rows]


def read_chunks(plan: TaskPlan, files_bc, offsets: list, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """spark.range(chunks) -> sparkcnn record rows (_chunk, path, size, modified, etag, image, height, width,
    channels) for a PipelineModel; files that do not decode are committed as rejects here."""
    tune_worker()
    return storage.iterate_using(plan.storage, _read_chunks(plan, files_bc, offsets, batches))


def _read_chunks(plan: TaskPlan, files_bc, offsets: list, batches: Iterator[pa.RecordBatch]):
    for chunk, listed in _chunk_files(files_bc, offsets, batches):
        rejects = []
        with ContextThreadPool(READ_THREADS) as pool:
            fetched = pool.map(_fetch, [r[0] for r in listed])
            for lo in range(0, len(listed), READ_BATCH_ROWS):
                group = listed[lo:lo + READ_BATCH_ROWS]
                contents, errors = zip(*[next(fetched) for _ in group])
                yield from _record_batch(chunk, group, contents, errors, rejects, plan.max_pixels)
        if rejects:
            _commit_rejects(plan, chunk, _identity_arrays(rejects), pa.array([r[4] for r in rejects], pa.string()),
                            tag="read")


def _record_batch(chunk, group, contents, errors, rejects, max_pixels: int):
    """The decodable files of `group` as one batch of record rows; the others appended to `rejects`."""
    good, decoded = [], []
    for row, data, error in zip(group, contents, errors):
        if error is None:
            try:
                decoded.append(_decoded_record(data, max_pixels))
                good.append(row)
                continue
            except Reject as exc:
                error = str(exc)
        rejects.append((*row, error))
    if good:
        pixels, heights, widths, channels = zip(*decoded)
        yield pa.RecordBatch.from_arrays(
            [pa.array([chunk] * len(good), pa.int32()), *_identity_arrays(good), pa.array(pixels, pa.binary()),
             pa.array(heights, pa.int32()), pa.array(widths, pa.int32()), pa.array(channels, pa.int32())],
            names=[CHUNK, *layout.IDENTITY_COLUMNS, "image", "height", "width", "channels"])


def _now(n: int) -> pa.Array:
    import time
    return pc.cast(pa.array([int(time.time() * 1e6)] * n, pa.int64()), layout.TIMESTAMP)


def _commit_rejects(plan: TaskPlan, chunk: int, identity: list, reasons, tag: str = "") -> None:
    """The rejects part file of a chunk: the files' identity columns and why each was rejected."""
    n = len(reasons)
    table = _as_schema([*identity, reasons, pa.array([plan.digest] * n, pa.string()), _now(n)],
                       layout.REJECTS_SCHEMA)
    layout.commit_table(storage.join(layout.rejects_dir(plan.output, plan.digest),
                                     layout.part_name(plan.batch, chunk, tag)), table)


def _top_k_from(probabilities: pa.ChunkedArray, k: int, class_names) -> pa.Array:
    """The top_k column from a probability list column (a PipelineModel's output)."""
    values = [np.asarray(p, np.float32) for p in probabilities.to_pylist()]
    probs = np.stack(values) if values else None
    return top_k_column(len(values), list(range(len(values))), probs, k, class_names)


def _commit_chunk(plan: TaskPlan, chunk: int, rows: pa.Table) -> tuple:
    """One chunk's model output -> its rejects part, then its predictions part; -> (scored, rejected)."""
    reason = rows["error"] if "error" in rows.column_names else pa.nulls(rows.num_rows, pa.string())
    bad = pc.invert(pc.is_null(reason))
    rejected = rows.filter(bad)
    if rejected.num_rows:
        _commit_rejects(plan, chunk, [rejected[c] for c in layout.IDENTITY_COLUMNS], pc.filter(reason, bad))
    scored = rows.filter(pc.invert(bad))
    n = scored.num_rows
    if n:
        names = scored.column_names
        top_k = scored["top_k"] if "top_k" in names else _top_k_from(scored["probabilities"], plan.top_k,
                                                                     plan.class_names)
        columns = {c: scored[c] for c in layout.IDENTITY_COLUMNS}
        columns.update(height=scored["image_height"] if "image_height" in names else pa.nulls(n, pa.int32()),
                       width=scored["image_width"] if "image_width" in names else pa.nulls(n, pa.int32()),
                       prediction=scored["prediction"], top_k=top_k)
        if plan.probabilities:
            columns["probabilities"] = scored["probabilities"]
        if plan.embedding:
            columns["embedding"] = scored["embedding"]
        columns.update(model_digest=pa.array([plan.digest] * n, pa.string()), scored_at=_now(n))
        schema = layout.predictions_schema(plan.probabilities, plan.embedding)
        layout.commit_table(storage.join(layout.model_dir(plan.output, plan.digest),
                                         layout.part_name(plan.batch, chunk)),
                            _as_schema([columns[f.name] for f in schema], schema))
    return n, rejected.num_rows


def _summary(chunk: int, scored: int, rejected: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([chunk], pa.int32()), pa.array([scored], pa.int64()),
                                       pa.array([rejected], pa.int64())], names=["chunk", "scored", "rejected"])


def commit_chunks(plan: TaskPlan, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Model output rows (a PipelineModel's) -> each chunk's part files; one summary row per chunk."""
    tune_worker()
    return storage.iterate_using(plan.storage, _commit_chunks(plan, batches))


def _commit_chunks(plan: TaskPlan, batches: Iterator[pa.RecordBatch]):
    wanted = set(layout.IDENTITY_COLUMNS) | {"image_height", "image_width", "prediction", "top_k", "probabilities",
                                             "embedding", "error", CHUNK}
    pieces: dict = {}
    for batch in batches:
        table = pa.Table.from_batches([batch])
        table = table.select([n for n in table.column_names if n in wanted])
        for chunk in pc.unique(table[CHUNK]).to_pylist():
            pieces.setdefault(chunk, []).append(table.filter(pc.equal(table[CHUNK], chunk)))
    for chunk, tables in sorted(pieces.items()):
        yield _summary(chunk, *_commit_chunk(plan, chunk, pa.concat_tables(tables)))


def _fetch_decoded(spec, max_pixels: int, path: str):
    """A file's pixels for the network and its stored size, or the reason it has none."""
    data, error = _fetch(path)
    if error is not None:
        return error
    try:
        return pixels.from_encoded(data, spec, max_pixels)
    except Reject as exc:
        return str(exc)


def score_chunks(plan: TaskPlan, files_bc, offsets: list, spec, payload_bc, cols, batch_size: int, threads: int,
                 batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """spark.range(chunks) -> each chunk read, decoded, scored and committed in this one Python worker.

    The CNNModel engine (cnn_model_remote.predict_batch) in one task: a pool of threads fetches and
    decodes up to LOOKAHEAD batches ahead of the model (object-store GETs wait on the network, PIL
    releases the GIL), and the worker's one cached network scores them; no image crosses the JVM.
    One Python worker per task also means the model is loaded once per worker, not once per
    worker per step of a chain of UDFs.
    """
    tune_worker()
    return storage.iterate_using(plan.storage, _score_chunks(plan, files_bc, offsets, spec, payload_bc, cols,
                                                             batch_size, threads, batches))


def _score_chunks(plan: TaskPlan, files_bc, offsets: list, spec, payload_bc, cols, batch_size: int, threads: int,
                  batches: Iterator[pa.RecordBatch]):
    from collections import deque
    run = load_network(spec, lambda: payload_bc.value if payload_bc is not None else None, threads)
    decode = functools.partial(_fetch_decoded, spec, plan.max_pixels)
    for chunk, listed in _chunk_files(files_bc, offsets, batches):
        outputs = []
        with ContextThreadPool(READ_THREADS) as pool:
            pending = deque()
            ahead = iter(listed)
            for row in itertools.islice(ahead, LOOKAHEAD * batch_size):
                pending.append(pool.submit(decode, row[0]))
            for lo in range(0, len(listed), batch_size):
                group = listed[lo:lo + batch_size]
                results = [pending.popleft().result() for _ in group]
                for row in itertools.islice(ahead, len(group)):
                    pending.append(pool.submit(decode, row[0]))
                identity = pa.RecordBatch.from_arrays(_identity_arrays(group), names=layout.IDENTITY_COLUMNS)
                outputs.append(predict_batch(run, identity, spec, cols, batch_size, plan.top_k, plan.max_pixels,
                                             decoded=stack_decoded(results, spec)))
        yield _summary(chunk, *_commit_chunk(plan, chunk, pa.Table.from_batches(outputs)))
