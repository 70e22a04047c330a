"""`sparkcnn predict`: score raw image files (or a table of images) with any model, resumably and incrementally.

Driver side, top to bottom: resolve the model (its digest names its partition of the output);
list the input (pipelines.images.listing); compare with what this model has already written
(pipelines.predict.ledger: the table is its own ledger) and drop superseded rows of changed files;
deal the rest into chunks (runs of files by path, at most `files_per_task` files and `task_mb`
MB each); one Spark task per chunk reads its files, the model scores them, and the task commits its
part files (pipelines.predict.remote).  A killed run leaves whole part files only; the same
command again scores what is missing.  At the end the table is read back and checked:
`listed N = scored S + rejected R + unchanged U`, every listed file with exactly one row.
"""
from __future__ import annotations

import functools
import logging
import time
import uuid

import pyarrow as pa

from pipelines.core import storage
from pipelines.core.arrow_batches import arrow_batch_rows
from pipelines.core.config import Config, ConfigError
from pipelines.core.errors import RetryableError
from pipelines.core.parquet_io import read_frame
from pipelines.core.progress import expect_rows
from pipelines.core.store import RunStore, write_json_atomic
from pipelines.core.tf_runtime import threads_per_task
from pipelines.images.listing import PATH, SIZE, list_inputs
from pipelines.inference.models import ResolvedModel, resolve
from pipelines.predict import layout, ledger, table_input
from pipelines.predict.remote import (
    CHUNK,
    SUMMARY_DDL,
    TaskPlan,
    commit_chunks,
    read_chunks,
    score_chunks,
)

logger = logging.getLogger("sparkcnn.predict")

RECORDS_DDL = (f"{CHUNK} INT, path STRING, size LONG, modified LONG, etag STRING, image BINARY, height INT, "
               f"width INT, channels INT")


class AccountingError(RetryableError, RuntimeError):
    """The table read back does not hold exactly one row per listed file."""


def chunk_offsets(sizes: list, files_per_task: int, task_bytes: int) -> list:
    """Row offsets cutting the (path-sorted) to-do list into runs of <= files_per_task files and ~task_bytes."""
    offsets, count, volume = [0], 0, 0
    for i, size in enumerate(sizes):
        if count and (count >= files_per_task or volume + (size or 0) > task_bytes):
            offsets.append(i)
            count, volume = 0, 0
        count += 1
        volume += size or 0
    if count:
        offsets.append(len(sizes))
    return offsets


def files_per_task(files: int, most: int, slots: int, waves: int = 4) -> int:
    """At most `most` files per task, and few enough that every task slot gets `waves` tasks: the
    last wave's stragglers then cost a fraction of a task, not a third of the job (3 tasks on 2 slots)."""
    return max(1, min(most, -(-files // (waves * max(1, slots)))))


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _table_columns(cnn, section):
    """A copy of the CNN stage adding the columns the predictions table keeps (see layout.predictions_schema)."""
    cnn = cnn.copy()
    cnn._set(imageHeightCol="image_height", imageWidthCol="image_width", embeddingCol="embedding",
             probabilityCol="probabilities" if section.probabilities else "")
    return cnn


def _run_tasks(spark, model: ResolvedModel, section, task: TaskPlan, files_bc, offsets: list) -> None:
    """One Spark task per chunk: a CNN scores in one Python worker per task (score_chunks); a saved
    PipelineModel runs as Spark stages between our read and commit steps."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType
    chunks = len(offsets) - 1
    plan = spark.range(0, chunks, 1, chunks)
    if model.cnn is not None:
        from pipelines.inference.cnn_model_remote import ENCODED
        cnn = _table_columns(model.cnn, section)
        payload_bc = spark.sparkContext.broadcast(cnn.payload) if cnn.payload is not None else None
        body = functools.partial(score_chunks, task, files_bc, offsets, cnn.network, payload_bc,
                                 cnn.columns("content", ENCODED), section.batch_size, threads_per_task(spark))
        plan.mapInArrow(body, SUMMARY_DDL).collect()
        if payload_bc is not None:
            payload_bc.unpersist()
        return
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array
    records = plan.mapInArrow(functools.partial(read_chunks, task, files_bc, offsets), RECORDS_DDL)
    scored = PipelineModel.load(model.pipeline_dir).transform(records)
    if "probability" not in scored.columns or "prediction" not in scored.columns:
        raise ConfigError(f"predict.model: {model.description} adds no prediction/probability columns "
                          "(a classifier as its last stage)")
    scored = scored.select(CHUNK, "path", "size", "modified", "etag", F.col("height").alias("image_height"),
                           F.col("width").alias("image_width"),
                           F.col("prediction").cast(IntegerType()).alias("prediction"),
                           vector_to_array("probability", "float32").alias("probabilities"))
    scored.mapInArrow(functools.partial(commit_chunks, task), SUMMARY_DDL).collect()


def _score_table(spark, model: ResolvedModel, section, task: TaskPlan, rows, image_column: str) -> None:
    """A table's rows: CNNModel on its image column, then one committed part file per Spark partition."""
    from pyspark.sql import functions as F
    cnn = _table_columns(model.cnn, section).setInputCol(image_column)
    rows = rows.withColumn(CHUNK, F.spark_partition_id()) \
        .withColumn("modified", F.round(F.col("modified") * 1e6).cast("long"))   # µs, as the ledger rounds them
    keep = [CHUNK, "path", "size", "modified", "etag"]
    scored = cnn.transform_keeping(rows.select(*keep, *[c for c in rows.columns if c not in keep]), keep)
    scored.mapInArrow(functools.partial(commit_chunks, task), SUMMARY_DDL).collect()


def _scored(output: str, digest: str) -> pa.Table:
    """This model's identity rows, after dropping the extra rows of files scored twice (two runs on one
    output at once)."""
    done = ledger.scored_identities(output, digest)
    extra = ledger.duplicates(done)
    if not extra:
        return done
    dropped = ledger.drop_rows(extra)
    logger.info(f"[predict] {dropped} rows of files scored twice (another run on this output at the same time?) "
                "removed: each file keeps one row")
    return ledger.scored_identities(output, digest)


def _this_run(done: pa.Table, output: str, digest: str, batch: str) -> tuple:
    """(scored, rejected) rows committed by this run, counted from the part files themselves."""
    import pyarrow.compute as pc
    tag = f"part-{batch}-"
    parts = pc.match_substring(done[ledger.PART], tag)
    rejected_dir = layout.rejects_dir(output, digest)
    in_rejects = pc.starts_with(done[ledger.PART], rejected_dir)
    rejected = pc.sum(pc.and_(parts, in_rejects)).as_py() or 0
    scored = pc.sum(pc.and_(parts, pc.invert(in_rejects))).as_py() or 0
    return scored, rejected


def predict_files(spark, section, where: str = "predict") -> dict:
    """Score everything `section.input` lists that this model has not scored as it is now; -> the run's summary."""
    if not section.output:
        raise ConfigError(f"{where}.output is empty: name the predictions table (a folder or URL)")
    t0 = time.perf_counter()
    model = resolve(section, where)
    table = None
    if section.input_column:
        if model.cnn is None:
            raise ConfigError(f"{where}.input_column: a table input is scored by a CNN model, not a PipelineModel "
                              "(apply the PipelineModel to the table with transform())")
        table, image_column = table_input.identified(read_frame(spark, storage.normalize(section.input)),
                                                     section, where)
        listing = table_input.listing_of(table)
    else:
        listing = list_inputs(section.input, section.path_column)
    output = storage.normalize(section.output)
    logger.info(f"[predict] {listing.num_rows} {'rows' if table is not None else 'files'} listed in "
                f"{storage.redact(section.input)}; model {model.description} "
                f"(digest {model.digest[:layout.DIGEST_CHARS]})")
    plan, drops = ledger.plan(listing, _scored(output, model.digest))
    if drops:
        logger.info(f"[predict] {plan.changed} files changed since they were scored: their old rows are dropped")
        ledger.drop_rows(drops)
    batch = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    todo = plan.todo
    expect_rows(todo.num_rows)                           # for the progress lines
    task = TaskPlan(output=output, digest=model.digest, batch=batch, storage=storage.active_context(),
                    top_k=section.top_k, class_names=model.class_names, probabilities=section.probabilities,
                    embedding=bool(section.embedding_layer), max_pixels=section.max_pixels)
    if todo.num_rows:
        with arrow_batch_rows(spark, max(section.batch_size, 16)):   # photos are 0.1-3 MB each
            if table is not None:
                logger.info(f"[predict] scoring {todo.num_rows} rows ({plan.unchanged} already scored)")
                _score_table(spark, model, section, task, table_input.rows_to_score(spark, table, todo), image_column)
            else:
                offsets = chunk_offsets(todo[SIZE].to_pylist(),
                                        files_per_task(todo.num_rows, section.files_per_task,
                                                       spark.sparkContext.defaultParallelism),
                                        section.task_mb << 20)
                logger.info(f"[predict] scoring {todo.num_rows} files in {len(offsets) - 1} tasks "
                            f"({plan.unchanged} already scored)")
                files_bc = spark.sparkContext.broadcast(_ipc_bytes(todo.select([PATH, SIZE, "modified", "etag"])))
                _run_tasks(spark, model, section, task, files_bc, offsets)
                files_bc.unpersist()
    else:
        logger.info(f"[predict] up to date: all {listing.num_rows} files already scored by this model")
    seconds = time.perf_counter() - t0
    done = _scored(output, model.digest)
    after, _ = ledger.plan(listing, done)
    scored_now, rejected_now = _this_run(done, output, model.digest, batch)
    summary = {"batch": batch, "input": storage.redact(section.input), "output": storage.redact(output),
               "model": model.description, "model_digest": model.digest, "listed": listing.num_rows,
               "scored": scored_now, "rejected": rejected_now, "unchanged": plan.unchanged,
               "changed": plan.changed, "seconds": round(seconds, 3),
               "images_per_second": round(todo.num_rows / seconds, 2) if todo.num_rows else None}
    logger.info(f"[predict] listed {listing.num_rows} = scored {scored_now} + rejected {rejected_now} + unchanged "
                f"{plan.unchanged} ({seconds:.1f}s) -> {storage.redact(layout.model_dir(output, model.digest))}")
    if after.todo.num_rows or scored_now + rejected_now + plan.unchanged != listing.num_rows:
        missing = after.todo[PATH].to_pylist()[:3]
        raise AccountingError(f"{storage.redact(output)}: after scoring, {after.todo.num_rows} listed files have no "
                              f"row of this model (e.g. {', '.join(missing)}); run the same command again")
    if todo.num_rows:
        write_json_atomic(storage.join(layout.runs_dir(output), f"{batch}.json"), summary)
    return summary


def predict(spark, cfg: Config, store: RunStore) -> dict:
    """The `sparkcnn predict` stage; the run directory gets a copy of the last run's summary."""
    summary = predict_files(spark, cfg.predict, f"{cfg.source}: predict" if cfg.source else "predict")
    write_json_atomic(storage.join(store.root, "predict_summary.json"), summary)
    return summary
