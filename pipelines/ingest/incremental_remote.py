"""Executor side of an incremental folder ingest: rewrite a previous part file without the rows of
files that changed or were removed (the rows of files that did not change are kept as they are)."""
from __future__ import annotations

from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core import records, storage
from pipelines.core.worker_remote import tune_worker
from pipelines.ingest.remote import PartWriter


def part_index(name: str) -> int:
    """The task number in a part file's name (`part-<split>-<NNNNN>.parquet`)."""
    return int(name.rsplit("-", 1)[1].split(".")[0])


def filter_parts(folders: dict, group_rows: int, context: storage.StorageContext,
                 tasks: Iterable[tuple]) -> Iterator[dict]:
    """Each task (split, source part location, ids to drop) -> the part rewritten into folders[split],
    under the same name, one row group at a time (memory: about one row group); under `context`, the
    driver's storage context."""
    tune_worker()
    return storage.iterate_using(context, _parts_filtered(folders, group_rows, tasks))


def _parts_filtered(folders: dict, group_rows: int, tasks: Iterable[tuple]) -> Iterator[dict]:
    for split, source, dropped in tasks:
        name = storage.basename(source)
        writer = PartWriter(folders[split], split, part_index(name), group_rows, keep_ids=False)
        dropped = pa.array(dropped, pa.int64())
        try:
            with storage.open_file(source, "rb") as f:
                part = pq.ParquetFile(f)
                source_rows = part.metadata.num_rows
                for g in range(part.num_row_groups):
                    table = part.read_row_group(g)
                    keep = pc.invert(pc.is_in(table.column(records.ID), value_set=dropped))
                    for batch in table.filter(keep).to_batches():
                        writer.write(batch)
            summary = writer.close()
        except BaseException:
            writer.abort()
            raise
        yield {"split": split, "source": name, "file": summary.get("file"), "rows": summary.get("rows", 0),
               "source_rows": source_rows}
