"""How many rows go in each Arrow batch between Spark's JVM and its Python workers.

Spark counts rows (spark.sql.execution.arrow.maxRecordsPerBatch); a job over images counts bytes,
since a row is 784 bytes for an MNIST digit and 0.15-3 MB for a photo.  No pyspark import here:
executor-side code (pipelines.augment.remote) sizes its own batches with rows_within too.
"""
from __future__ import annotations

from contextlib import contextmanager

# Arrow batches of this many rows feed mapInArrow (ingest, scoring).
ARROW_BATCH_ROWS = 4096
# ... unless their rows are photos: a job over images sizes its batches by bytes (rows_within), since
# 4096 rows of 512x512 RGB would be a 3 GB batch in each Python worker.
ARROW_BATCH_BYTES = 64 << 20


def rows_within(row_bytes: int, budget: int = ARROW_BATCH_BYTES, most: int = ARROW_BATCH_ROWS) -> int:
    """How many rows of row_bytes each fit in budget bytes: at least 1, at most `most`."""
    return max(1, min(most, budget // max(1, int(row_bytes))))


@contextmanager
def arrow_batch_rows(spark, rows: int):
    """Arrow batches of `rows` rows between the JVM and Python for the jobs run inside (a runtime SQL
    setting, read when a job starts); the previous value is restored after."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key, None)
    spark.conf.set(key, str(rows))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)
