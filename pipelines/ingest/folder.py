"""Ingest a folder of images (one subfolder per class): one Spark job whose tasks read, decode and
write the files (pipelines.ingest.folder_remote), and the driver side that plans and checks it.

Layouts: `root/<class>/<file>` (split by a hash of the path: data.test_fraction
goes to test) or `root/{train,val,test}/<class>/<file>`.  Class indices are
the sorted class-folder names, unless the folder carries the `_classes.json`
manifest that `sparkcnn export` writes, which restores the original names
and indices.  Ids are a hash of the path relative to the root, so reruns,
repartitioning and added files never renumber existing images.

Nothing is dropped silently: the driver walks the folder, hands every file
to a task, and each file comes back either as a row of a split or as a row
of the rejects table (path, split, reason) — including names starting with
'.' or '_', which Spark's own file listing skips and which are therefore
rejected rather than made part of a dataset Spark tools would not see the
same way.  Files are dealt out to tasks in turn, as many tasks as the data size asks
for (estimated from a sample of file sizes, not Spark's ~4 MB per-file open
cost, which made 157 tasks for 5k small PNGs).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import records, storage
from pipelines.core.config import Config
from pipelines.core.errors import IngestCheckError, IngestError, IngestSetupError
from pipelines.core.progress import expect_rows
from pipelines.core.store import atomic_dirs, published_url
from pipelines.datasets.publish import SplitWritten, check_part_files, partition_count, run_ingest_tasks
from pipelines.images.class_folders import CLASS_MANIFEST, SPLIT_FOLDERS, class_folders, folder_layout
from pipelines.images.decode import probe_shape
from pipelines.images.path_lists import LIST_SUFFIXES, is_path_list
from pipelines.ingest import incremental
from pipelines.ingest.file_list import listed_files
from pipelines.ingest.folder_remote import write_files
from pipelines.ingest.remote import rows_per_row_group

logger = logging.getLogger("sparkcnn.ingest")
REJECTS_SCHEMA = pa.schema([("path", pa.string()), ("split", pa.string()), ("reason", pa.string())])


def walk_files(folder: str) -> list:
    """Every file under folder, as a path relative to it, in sorted order: the accounting list.

    Like os.walk (symlinked folders are listed, not entered), without a stat per file:
    the directory scan says what is a folder.  Local folders only: a remote one is listed
    once, with its sizes, by storage.walk_sizes.
    """
    out = []

    def scan(path: str, prefix: str) -> None:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            if entry.is_dir():
                if not entry.is_symlink():
                    subdirs.append(entry)
            else:
                out.append(prefix + entry.name)
        for entry in subdirs:
            scan(entry.path, prefix + entry.name + "/")
    scan(folder, "")
    return out


def estimated_bytes(layout: dict, files: list, listed: dict, sample: int = 1000) -> int:
    """Total size of `files` from the sizes of up to `sample` of them, evenly spread.

    Only the task count depends on it; a stat of every file cost the driver ~0.15 s per 60k files,
    a tenth of a whole ingest's time.  `listed`: {split folder: {file: size}} of remote folders,
    from their listing.
    """
    picks = files[::max(1, len(files) // sample)]
    sizes = []
    for split_folder, rel in picks:
        if split_folder in listed:
            sizes.append(listed[split_folder].get(rel, 0))
            continue
        try:
            sizes.append(os.path.getsize(os.path.join(layout[split_folder], rel)))
        except OSError:
            continue           # a dangling link: its task rejects or reports it
    return int(np.mean(sizes) * len(files)) if sizes else 0


def interleaved_shares(files: list, n_parts: int) -> list:
    """`files` dealt out to n_parts tasks like cards (task k gets files k, k+n, k+2n, ...).

    Contiguous runs gave one task a whole class folder of cheaper images (MNIST's ones decode
    faster than its eights): the other task then ran 30% longer, and the job waits for the last.
    """
    return [files[k::n_parts] for k in range(min(n_parts, len(files)))]


def _first_shape(folder: str, files: list, limit: int = 50) -> tuple:
    for rel in files[:limit]:
        try:
            return probe_shape(storage.read_bytes(storage.join(folder, rel)))
        except Exception:
            continue
    raise IngestError(f"{folder}: none of the first {min(limit, len(files))} files is a readable image; "
                      "set ingest.image_size and ingest.channels")


def _walked(root: str) -> tuple:
    """A folder's layout, its files [(split folder or None, rel)] and their {file: (size, mtime, ETag)}."""
    layout = folder_layout(root)
    details = {s: {rel: (size, mtime, tag) for rel, size, mtime, tag in storage.walk_details(f)}
               for s, f in layout.items() if storage.is_remote(f)}
    files = [(split_folder, rel) for split_folder, folder in layout.items()
             for rel in (details[split_folder] if split_folder in details else walk_files(folder))
             if rel != CLASS_MANIFEST]                                       # the manifest is not data
    identities = {(s, rel): details[s][rel] if s in details else _local_identity(layout[s], rel) for s, rel in files}
    return layout, files, identities


def _listed(list_path: str) -> tuple:
    """The same for the files a list names (pipelines.images.file_list), laid out as a folder would be."""
    root, found = listed_files(list_path)
    if all(rel.partition("/")[0] in SPLIT_FOLDERS and "/" in rel for rel in found):
        items = [(*rel.split("/", 1), stats) for rel, stats in found.items()]
        layout = {s: storage.join(root, s) for s in SPLIT_FOLDERS if any(split == s for split, _, _ in items)}
    else:
        items = [(None, rel, stats) for rel, stats in found.items()]
        layout = {None: root}
    files = [(s, rel) for s, rel, _ in items if rel != CLASS_MANIFEST]
    return layout, files, {(s, rel): stats for s, rel, stats in items}


@dataclass(frozen=True)
class FolderSource:
    """The files an ingest reads: the root, its split folders (None: one folder split by hash), every file
    [(split folder, rel)] with its identity (size, mtime, ETag), and the classes [(folder, name)]."""
    root: str
    layout: dict
    files: list
    identities: dict
    classes: list

    @property
    def class_names(self) -> list:
        return [name for _, name in self.classes]

    def remote_sizes(self) -> dict:
        """{split folder: {file: size}} of the remote split folders, from their listing (no stat per file)."""
        listed = {s: {} for s, f in self.layout.items() if storage.is_remote(f)}
        for s, rel in self.files:
            if s in listed:
                listed[s][rel] = self.identities[(s, rel)][0]
        return listed


def _source(path: str) -> FolderSource:
    """The files under data.path, a folder of class folders or a list of image files; an error naming the
    setting when it is neither or holds no file."""
    root = path
    if is_path_list(root):
        layout, files, identities = _listed(root)
        root = layout[None] if None in layout else storage.split(next(iter(layout.values())))[0]
        names = sorted({rel.split("/", 1)[0] for _, rel in files if "/" in rel})
        classes = [(n, n) for n in names]
        if not classes:
            raise IngestSetupError(f"data.path {storage.redact(path)}: no listed file is inside a class "
                                   "folder (expected <root>/<class>/<file> or <root>/<split>/<class>/<file>)")
    else:
        if not root or not storage.isdir(root):
            raise IngestSetupError(f"data.path {storage.redact(root)!r} must be a folder of class subfolders, or "
                                   f"a list of image files ({'/'.join(LIST_SUFFIXES)}), for format 'folder'")
        root = os.path.realpath(root) if not storage.is_remote(root) else storage.normalize(root)
        layout, files, identities = _walked(root)
        classes = class_folders(root, layout)
    if not files:
        raise IngestSetupError(f"{root}: no files found")
    return FolderSource(root, layout, files, identities, classes)


def _image_shape(ing, source: FolderSource) -> tuple:
    """(h, w, c) of the dataset: the configured size and channels, else the first readable image's."""
    first_split = next(iter(source.layout))
    probe = None if (ing.image_size and ing.channels) else _first_shape(source.layout[first_split], [
        rel for s, rel in source.files if s == first_split and "/" in rel])
    h, w = ing.image_size or probe[:2]
    c = ing.channels or probe[2]
    return h, w, c


def _incremental_plan(cfg: Config, source: FolderSource, index_dir: str, settings: dict) -> tuple:
    """(the previous ingest's index or None, the plan: which files to read, carry over or drop)."""
    previous = incremental.read_previous(index_dir, settings) if cfg.ingest.incremental else None
    plan = incremental.plan(previous, source.files, source.identities)
    if previous is not None:
        logger.info(f"[ingest] incremental: {len(plan.todo) - plan.changed} new, {plan.changed} changed, "
                    f"{len(plan.removed)} removed, {len(plan.unchanged)} unchanged since the last ingest")
    return previous, plan


def _read_tasks(spark, ing, source: FolderSource, todo: list, shape: tuple, parts: dict) -> list:
    """[(task index, its files)]: as many tasks as the bytes read and written ask for, numbered after the
    previous ingest's part files."""
    h, w, c = shape
    expect_rows(len(todo))                               # for the progress lines
    n_parts = partition_count(estimated_bytes(source.layout, todo, source.remote_sizes()) + len(todo) * h * w * c,
                              len(todo), ing.partition_mb, spark.sparkContext.defaultParallelism)
    return list(enumerate(interleaved_shares(todo, n_parts), start=incremental.next_task_index(parts)))


def _write_rejects_table(folder: str, rejects: list) -> None:
    with storage.open_file(storage.join(folder, "part-00000.parquet"), "wb") as f:
        pq.write_table(pa.Table.from_pylist([dict(zip(REJECTS_SCHEMA.names, r)) for r in rejects],
                                            REJECTS_SCHEMA), f)


def _split_metas(cfg: Config, source: FolderSource, shape: tuple, splits: list, dests: dict, folders: dict,
                 written: dict, rejected: Counter) -> dict:
    """Each split's DatasetMeta, written into its staging folder; a split without a row is not published
    (its staging goes, and an earlier dataset there stays)."""
    h, w, c = shape
    metas = {}
    for split in splits:
        got = written.get(split, SplitWritten())
        if got.rows == 0:
            storage.remove(folders[split])
            if rejected[split]:
                logger.info(f"[ingest] {split}: read {rejected[split]} = written 0 + rejected {rejected[split]}: "
                            "no usable image, split not written")
            continue
        check_part_files(folders[split], dests[split], got)
        meta = records.DatasetMeta(name=cfg.data.dataset, split=split, num_rows=got.rows, height=h, width=w,
                                   channels=c, class_names=source.class_names,
                                   class_counts=got.sorted_class_counts(),
                                   source=storage.join(source.root, split if split in source.layout else ""),
                                   rejected=rejected[split])
        records.write_meta(folders[split], meta)
        metas[split] = meta
    return metas


def ingest_folder(spark, cfg: Config) -> dict:
    """Ingest data.path (a folder of class folders, or a list of files) into its splits, reading only what
    changed since the last ingest; returns {split: DatasetMeta} of the splits published."""
    ing = cfg.ingest
    source = _source(cfg.data.path)
    root, layout = source.root, source.layout
    h, w, c = shape = _image_shape(ing, source)
    logger.info(f"[ingest] {root}: {len(source.files)} files, {len(source.classes)} classes, image shape {h}x{w}x{c}")

    splits = [s for s in SPLIT_FOLDERS if s in layout] if None not in layout else \
        ["train"] + (["test"] if ing.test_fraction > 0 else [])
    dests = {split: cfg.dataset_dir(split) for split in splits}
    rejects_dir, index_dir = storage.join(cfg.dataset_root, "rejects"), storage.join(cfg.dataset_root, "files")
    settings = _index_settings(cfg, root, source.class_names, shape)
    previous, plan = _incremental_plan(cfg, source, index_dir, settings)
    parts = incremental.previous_parts(dests) if previous is not None else {}
    tasks = _read_tasks(spark, ing, source, plan.todo, shape, parts)
    class_index = {folder: k for k, (folder, _) in enumerate(source.classes)}
    with atomic_dirs(list(dests.values()) + [rejects_dir, index_dir]) as stagings:
        folders = {split: stagings[dest] for split, dest in dests.items()}
        writer = functools.partial(write_files, layout, class_index, shape, ing.resize, ing.max_pixels,
                                   ing.test_fraction, folders, ing.row_group_mb, storage.active_context())
        written, rejects = run_ingest_tasks(spark, tasks, writer)
        _check_every_file_accounted(root, plan.todo, written, rejects)
        carried = incremental.carry_over(spark, plan, dests, parts, folders, rows_per_row_group(h * w * c, ing.row_group_mb))
        new_rejects = Counter(split for _, split, _ in rejects)
        new_rows = {split: got.rows for split, got in written.items()}
        for split, acc in carried.items():
            written.setdefault(split, SplitWritten()).merge(acc)
        _check_unique_ids(root, written)
        incremental.write_index(stagings[index_dir], incremental.index_table(
            layout, source.files, source.identities, class_index, ing.test_fraction, rejects, plan), settings)
        rejects = sorted(rejects + plan.unchanged_rejects())
        _write_rejects_table(stagings[rejects_dir], rejects)
        metas = _split_metas(cfg, source, shape, splits, dests, folders, written,
                             Counter(split for _, split, _ in rejects))
    _report(metas, dests, new_rows, new_rejects, plan, index_dir, rejects, rejects_dir)
    return metas


def _check_every_file_accounted(root: str, todo: list, written: dict, rejects: list) -> None:
    n_written = sum(got.rows for got in written.values())
    if n_written + len(rejects) != len(todo):
        raise IngestCheckError(f"{root}: {len(todo)} files to read but {n_written} written + "
                               f"{len(rejects)} rejected")


def _report(metas: dict, dests: dict, new_rows: dict, new_rejects: Counter, plan, index_dir: str, rejects: list,
            rejects_dir: str) -> None:
    """The ingest's accounting, per split: read = written + rejected + unchanged, and where the rest went."""
    for split, meta in metas.items():
        unchanged = meta.num_rows + meta.rejected - new_rows.get(split, 0) - new_rejects[split]
        logger.info(f"[ingest] {split}: read {meta.num_rows + meta.rejected} = written {new_rows.get(split, 0)} + "
                    f"rejected {new_rejects[split]} + unchanged {unchanged} -> {published_url(dests[split])}")
    if plan.removed:
        logger.info(f"[ingest] {len(plan.removed)} file(s) removed since the last ingest: their rows are gone "
                    f"(listed as removed in {storage.redact(index_dir)})")
    if rejects:
        logger.info(f"[ingest] {len(rejects)} rejected file(s), with reasons: {rejects_dir}")


def _local_identity(folder: str, rel: str) -> tuple:
    """(size, modification time, None) of a local file; a dangling link is (0, None, None) (its task rejects it)."""
    try:
        st = os.stat(os.path.join(folder, rel))
    except OSError:
        return 0, None, None
    return st.st_size, st.st_mtime, None


def _index_settings(cfg: Config, root: str, class_names: list, shape: tuple) -> dict:
    """What decided every row of the file index: if any of it changes, the next ingest reads every file."""
    ing = {k: v for k, v in dataclasses.asdict(cfg.ingest).items() if k not in ("incremental", "partition_mb")}
    return {"root": storage.redact(root), "ingest settings": ing, "class names": list(class_names),
            "image shape": list(shape), "dataset": cfg.data.dataset}


def _check_unique_ids(root: str, written: dict) -> None:
    ids = np.concatenate([a for got in written.values() for a in got.ids] or [np.zeros(0, np.int64)])
    values, counts = np.unique(ids, return_counts=True)
    dupes = values[counts > 1][:3].tolist()
    if dupes:
        raise IngestError(f"{root}: id hash collision for ids {dupes}; rename one of the files")
