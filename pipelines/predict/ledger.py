"""What has been scored already: the predictions table is its own ledger (driver side).

There is no separate state file to lose or to disagree with the data: the files a model has
scored are exactly the rows of the committed part files under its `model=` partition (and its
rejects).  A run reads only their identity columns (path, size, modified, etag: a few percent of
the bytes), compares them with the listing and scores what is missing or changed; a changed
file's old row is first removed from its part file (rewritten whole, committed like any part),
so the table keeps exactly one row per file.  Files no longer listed keep their rows: predictions
are history, and a listing of a slice (one day's folder) must not erase the others.
Cost at 10M files: the identity columns are about 0.5 GB of Arrow on the driver, read from the
part files with a pool of threads (about 40k files of 256 rows); see README "Batch scoring".
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core import storage
from pipelines.core.context_threads import ContextThreadPool
from pipelines.images.listing import ETAG, MODIFIED, PATH, SIZE
from pipelines.predict import layout

PART = "_part"
READ_THREADS = 16


@dataclass
class Plan:
    todo: pa.Table          # the listing's rows still to score (listing schema)
    unchanged: int          # listed files already scored (or rejected) as they are now
    changed: int            # listed files scored before but different now: their old rows are dropped
    scored_before: int      # rows of this model before the run (including files no longer listed)


def _micros(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Times as int64 microseconds (the table's timestamp unit), from float seconds or timestamps."""
    if pa.types.is_timestamp(column.type):
        return pc.cast(column, pa.int64())
    return pc.cast(pc.round(pc.multiply(column, 1e6)), pa.int64())


def _equal(a, b):
    """Element-wise a == b, where two nulls are equal (a listed path that was missing, and still is)."""
    return pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b)))


def scored_identities(output: str, digest: str) -> pa.Table:
    """(path, size, modified µs, etag, part file) of every row this model has written, scored or rejected."""
    folders = (layout.model_dir(output, digest), layout.rejects_dir(output, digest))
    for folder in folders:
        layout.remove_stale_temporaries(folder, storage.active_context().policy.stale_after_hours * 3600)
    parts = [part for folder in folders for part in layout.part_files(folder)]

    def read(location):
        table = layout.read_part(location, columns=layout.IDENTITY_COLUMNS)
        return table.append_column(PART, pa.array([location] * table.num_rows, pa.string()))
    threads = READ_THREADS if storage.is_remote(output) else 4
    with ContextThreadPool(threads) as pool:
        tables = list(pool.map(read, parts))
    schema = pa.schema([(PATH, pa.string()), (SIZE, pa.int64()), (MODIFIED, pa.int64()), (ETAG, pa.string()),
                        (PART, pa.string())])
    if not tables:
        return schema.empty_table()
    table = pa.concat_tables(tables)
    return pa.table([table[PATH], table[SIZE], _micros(table[MODIFIED]), table[ETAG], table[PART]], schema=schema)


def duplicates(done: pa.Table) -> dict:
    """{part file: [paths]} of the rows to drop so each path keeps one row (the one in the first part file).

    Two runs on one output at the same time can score the same file twice (a run lock is the
    scheduler's job: see README); the next run, or the run's own final check, heals the table.
    """
    counts = pc.value_counts(done[PATH])       # a plain kernel: no Acero plan (see plan())
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if not len(repeated):
        return {}
    rows = done.filter(pc.is_in(done[PATH], value_set=repeated)).sort_by([(PATH, "ascending"), (PART, "ascending")])
    drops, seen = {}, set()
    for path, part in zip(rows[PATH].to_pylist(), rows[PART].to_pylist()):
        if path in seen:
            drops.setdefault(part, []).append(path)
        seen.add(path)
    return drops


def plan(listing: pa.Table, done: pa.Table) -> tuple:
    """-> (Plan, {part file: [paths whose rows it must drop]}).

    `done` holds one row per path (duplicates are healed first: see duplicates()).  Matching is
    a hash lookup (pc.index_in) and gathers, not Table.join: pyarrow 10's Acero hash join hung
    here once in a full test run (0% CPU, no Spark job; apache/arrow#39582 reports such random
    hangs) and gave wrong results on large inputs before 12 (apache/arrow#34474).
    """
    if done.num_rows == 0:
        return Plan(listing, 0, 0, 0), {}
    match = pc.index_in(listing[PATH], value_set=done[PATH].combine_chunks())   # done row per listed path
    seen = pc.is_valid(match)

    def theirs(name):
        return pc.take(done[name], match)          # null where the path was never scored

    l_etag, d_etag = listing[ETAG], theirs(ETAG)
    no_tag = pc.or_(pc.is_null(l_etag), pc.is_null(d_etag))
    same = pc.and_(seen, pc.and_(_equal(listing[SIZE], theirs(SIZE)),
                                 pc.or_(pc.and_(pc.invert(no_tag), _equal(l_etag, d_etag)),
                                        pc.and_(no_tag, _equal(_micros(listing[MODIFIED]), theirs(MODIFIED))))))
    changed = pc.and_(seen, pc.invert(same))
    todo = listing.filter(pc.invert(same))
    drops: dict = {}
    for path, part in zip(pc.filter(listing[PATH], changed).to_pylist(), pc.filter(theirs(PART), changed).to_pylist()):
        drops.setdefault(part, []).append(path)
    unchanged = pc.sum(same).as_py() or 0
    return Plan(todo, unchanged, len(set(p for paths in drops.values() for p in paths)), done.num_rows), drops


def drop_rows(drops: dict) -> int:
    """Remove the given paths' rows from their part files (each rewritten whole, or removed when emptied)."""
    removed = 0
    for part, paths in sorted(drops.items()):
        table = layout.read_part(part)
        keep = pc.invert(pc.is_in(table[PATH], value_set=pa.array(paths, pa.string())))
        kept = table.filter(keep)
        removed += table.num_rows - kept.num_rows
        if kept.num_rows:
            layout.commit_table(part, kept)
        else:
            storage.remove(part)
    return removed
