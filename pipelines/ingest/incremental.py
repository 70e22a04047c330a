"""Incremental ingest of image folders: decode only what is new or changed, carry the rest over.

Every folder ingest publishes, together with its splits and rejects, the dataset's file index
`<datasets_dir>/<dataset>/files/`: one row per file it saw (path, split, id, label, size,
modification time, ETag, and what became of it: `row`, `rejected` with the reason, or `removed`
for a file gone since the previous ingest), plus `_ingest_settings.json` (the settings, classes
and image shape that decided those rows).  The next ingest of the same folder with the same
settings compares its listing with that index:

- new files and files whose size, time or ETag changed are decoded by the ingest's Spark tasks
  into new part files (ids are a hash of the path, so a changed file keeps its id);
- rows of unchanged files are carried over: a previous part file none of whose rows leaves is
  linked (locally) or copied server-side (stores) into the new version; a part file holding rows
  of changed or removed files is rewritten without them by a Spark task;
- unchanged files that were rejected stay rejected, with their reason.

The result is a new version published atomically like any ingest, with the same content as a full
ingest of the folder would give (test: tests/test_scheduling.py).  Different settings, classes or
image size make the next ingest a full one; so does `--set ingest.incremental=false`.
"""
from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import records, storage
from pipelines.core.errors import IngestCheckError
from pipelines.core.records import stable_id
from pipelines.core.store import published_files, resolve
from pipelines.datasets.publish import SplitWritten
from pipelines.ingest.folder_remote import file_key, reject_path, split_of
from pipelines.ingest.incremental_remote import filter_parts, part_index

logger = logging.getLogger("sparkcnn.ingest")

SETTINGS_FILE = "_ingest_settings.json"
INDEX_SCHEMA = pa.schema([("path", pa.string()), ("split_folder", pa.string()), ("rel", pa.string()),
                          ("split", pa.string()), ("id", pa.int64()), ("label", pa.int64()),
                          ("status", pa.string()), ("reason", pa.string()), ("bytes", pa.int64()),
                          ("mtime", pa.float64()), ("etag", pa.string())])
ROW, REJECTED, REMOVED = "row", "rejected", "removed"


def read_previous(index_dest: str, settings: dict) -> Optional[dict]:
    """{(split folder, rel): index row} of the previous ingest, when it used these settings; else None."""
    try:
        before = json.loads(storage.read_bytes(storage.join(resolve(index_dest), SETTINGS_FILE)))
    except FileNotFoundError:
        return None
    if before != settings:
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        logger.info(f"[ingest] {', '.join(changed)} changed since the last ingest of this dataset: every file is read")
        return None
    rows = []
    for location in published_files(index_dest):
        with storage.open_file(location, "rb") as f:
            rows.extend(pq.read_table(f).to_pylist())
    return {(r["split_folder"], r["rel"]): r for r in rows if r["status"] != REMOVED}


@dataclass
class Plan:
    """What this ingest decodes (`todo`) and what it carries over from the previous one."""
    todo: list                                      # [(split folder, rel)]: new or changed files
    unchanged: list = field(default_factory=list)   # index rows of files as they were
    removed: list = field(default_factory=list)     # index rows of files gone since
    dropped: dict = field(default_factory=dict)     # split -> ids of rows that leave (changed or removed files)
    changed: int = 0

    def unchanged_rows(self, split: str) -> list:
        return [r for r in self.unchanged if r["status"] == ROW and r["split"] == split]

    def unchanged_rejects(self) -> list:
        return [(r["path"], r["split"], r["reason"]) for r in self.unchanged if r["status"] == REJECTED]


def plan(previous: Optional[dict], files: list, identities: dict) -> Plan:
    if previous is None:
        return Plan(todo=list(files))
    out = Plan(todo=[])
    dropped: dict = {}
    for key in files:
        old = previous.get(key)
        if old is not None and (old["bytes"], old["mtime"], old["etag"]) == identities[key]:
            out.unchanged.append(old)
            continue
        out.todo.append(key)
        if old is not None:
            out.changed += 1
            if old["status"] == ROW:
                dropped.setdefault(old["split"], []).append(old["id"])
    listed = set(files)
    for key, old in previous.items():
        if key not in listed:
            out.removed.append(dict(old, status=REMOVED))
            if old["status"] == ROW:
                dropped.setdefault(old["split"], []).append(old["id"])
    out.dropped = {split: np.array(ids, np.int64) for split, ids in dropped.items()}
    return out


def previous_parts(dests: dict) -> dict:
    """{split: [part file locations]} of the published versions this ingest builds on (one listing each)."""
    return {split: published_files(dest) if storage.exists(dest) else [] for split, dest in dests.items()}


def next_task_index(parts: dict) -> int:
    """New part files are numbered after every previous part file (whose names are kept)."""
    found = [part_index(storage.basename(loc)) for locations in parts.values() for loc in locations]
    return max(found) + 1 if found else 0


def carry_over(spark, the_plan: Plan, dests: dict, parts: dict, folders: dict, group_rows: int) -> dict:
    """Put the previous rows of unchanged files into this ingest's staging folders -> {split: SplitWritten}.
    `parts`: previous_parts(dests)."""
    carried: dict = {}
    expected: dict = {}
    tasks = []
    for split, folder in folders.items():
        keep = the_plan.unchanged_rows(split)
        if not keep:
            continue
        expected[split] = len(keep)
        if not parts.get(split):
            raise IngestCheckError(f"{storage.redact(dests[split])}: the file index lists {len(keep)} rows of "
                                   "this split but it is not published; ingest again with --set ingest.incremental=false")
        acc = carried.setdefault(split, SplitWritten())
        acc.class_counts.update(Counter(int(r["label"]) for r in keep))
        acc.ids.append(np.array([r["id"] for r in keep], np.int64))
        dropped = the_plan.dropped.get(split, np.zeros(0, np.int64))
        for location in parts[split]:
            with storage.open_file(location, "rb") as f:
                part = pq.ParquetFile(f)
                rows = part.metadata.num_rows
                leaving = dropped.size and np.isin(part.read(columns=[records.ID]).column(records.ID).to_numpy(),
                                                   dropped).any()
            if leaving:
                tasks.append((split, location, dropped))
                continue
            name = storage.basename(location)
            storage.copy_file(location, storage.join(folder, name))
            acc.files.append(name)
            acc.rows += rows
    if tasks:
        rewrite = functools.partial(filter_parts, folders, group_rows, storage.active_context())
        for done in spark.sparkContext.parallelize(tasks, len(tasks)).mapPartitions(rewrite).collect():
            acc = carried[done["split"]]
            if done["rows"]:
                acc.files.append(done["file"])
                acc.rows += done["rows"]
    for split, acc in carried.items():
        if acc.rows != expected[split]:
            raise IngestCheckError(f"{storage.redact(dests[split])}: {acc.rows} rows carried over but the file index "
                                   f"lists {expected[split]} unchanged files; ingest again with --set ingest.incremental=false")
    return carried


def index_table(roots: dict, files: list, identities: dict, class_index: dict, test_fraction: float,
                rejects: list, the_plan: Plan) -> pa.Table:
    """The file index of this ingest: every listed file's fate, plus the files removed since the last one."""
    reasons = {path: reason for path, _, reason in rejects}
    carried = {(r["split_folder"], r["rel"]): r for r in the_plan.unchanged}
    rows = []
    for split_folder, rel in files:
        if (split_folder, rel) in carried:
            rows.append(carried[(split_folder, rel)])
            continue
        path = reject_path(roots, split_folder, rel)
        size, mtime, tag = identities[(split_folder, rel)]
        reason = reasons.get(path)
        rows.append({"path": path, "split_folder": split_folder, "rel": rel,
                     "split": split_of(split_folder, rel, test_fraction),
                     "id": stable_id(file_key(split_folder, rel)),
                     "label": -1 if reason is not None else class_index[rel.split("/")[0]],
                     "status": REJECTED if reason is not None else ROW, "reason": reason,
                     "bytes": size, "mtime": mtime, "etag": tag})
    return pa.Table.from_pylist(rows + the_plan.removed, INDEX_SCHEMA)


def write_index(folder: str, table: pa.Table, settings: dict) -> None:
    with storage.open_file(storage.join(folder, "part-00000.parquet"), "wb") as f:
        pq.write_table(table, f)
    with storage.open_file(storage.join(folder, SETTINGS_FILE), "wb") as f:
        f.write(json.dumps(settings, sort_keys=True).encode())
