"""Ingest a folder of images (one subfolder per class) through Spark's binaryFile source.

Layouts: `root/<class>/<file>` (split by a hash of the path: data.test_fraction
goes to test) or `root/{train,val,test}/<class>/<file>`.  Class indices are
the sorted class-folder names, unless the folder carries the `_classes.json`
manifest that `sparkcnn export` writes, which restores the original names
and indices.  Ids are a hash of the path relative to the root, so reruns,
repartitioning and added files never renumber existing images.

Nothing is dropped silently: every file found under the root is either a
row of a split or a row of the rejects table (path, split, reason) — that
includes the files Spark's own listing skips (names starting with '.' or
'_'), which are found by walking the folder on the driver.  Spark's
default of one partition per ~4 MB of *files* (its open cost) made 157 tasks
for 5k small PNGs; partitions are sized here from the real byte count.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from . import records
from .config import Config
from .image_decode import Reject, decode_image, probe_shape
from .ingest import MB, IngestError, partition_count, publish_dataset
from .store import atomic_dir

SPLIT_FOLDERS = ("train", "val", "test")
CLASS_MANIFEST = "_classes.json"
DECODED_DDL = ("id LONG, label INT, height INT, width INT, channels INT, image BINARY, "
               "path STRING, split STRING, reason STRING")
REJECTS_DDL = "path STRING, split STRING, reason STRING"


def stable_id(relpath: str) -> int:
    """63-bit id from the path relative to the dataset root (uniqueness is checked after writing)."""
    return int.from_bytes(hashlib.blake2b(relpath.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def hash_fraction(relpath: str) -> float:
    return int.from_bytes(hashlib.blake2b(b"split:" + relpath.encode("utf-8"), digest_size=8).digest(), "big") / 2 ** 64


def folder_layout(root: str) -> dict:
    """{split or None: folder}; None means one folder to be split by path hash."""
    subdirs = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))}
    splits = {s: os.path.join(root, s) for s in SPLIT_FOLDERS if s in subdirs}
    return splits or {None: root}


def class_folders(root: str, layout: dict) -> list:
    """[(folder name, class name)] in class-index order."""
    manifest = os.path.join(root, CLASS_MANIFEST)
    if os.path.exists(manifest):
        with open(manifest, encoding="utf-8") as f:
            entries = json.load(f)
        try:
            ordered = sorted(entries, key=lambda e: int(e["index"]))
            return [(str(e["folder"]), str(e["name"])) for e in ordered]
        except (KeyError, TypeError, ValueError):
            raise IngestError(f"{manifest}: expected a list of {{index, name, folder}} entries") from None
    names = set()
    for folder in layout.values():
        names.update(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not names:
        raise IngestError(f"{root}: no class subfolders (expected {root}/<class>/<image files>)")
    return [(n, n) for n in sorted(names)]


def walk_files(folder: str) -> list:
    """Every file under folder, as paths relative to it (the accounting list)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        rel = os.path.relpath(dirpath, folder)
        for name in sorted(filenames):
            out.append(name if rel == "." else os.path.join(rel, name))
    return out


def _first_shape(folder: str, files: list, limit: int = 50) -> tuple:
    for rel in files[:limit]:
        try:
            with open(os.path.join(folder, rel), "rb") as f:
                return probe_shape(f.read())
        except Exception:
            continue
    raise IngestError(f"{folder}: none of the first {min(limit, len(files))} files is a readable image; "
                      "set ingest.image_size and ingest.channels")


def _decode_partition(prefixes: dict, class_index: dict, shape: tuple, resize: str, max_pixels: int,
                      test_fraction: float, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side: binaryFile rows (path, content) -> decoded rows or reject reasons."""
    h, w, c = shape
    empty = b""
    for batch in batches:
        paths = batch.column("path").to_pylist()
        contents = batch.column("content")
        cols = {k: [] for k in ("id", "label", "image", "path", "split", "reason")}
        for i, path in enumerate(paths):
            split, rel = next((s, path[len(p):]) for s, p in prefixes.items() if path.startswith(p))
            key = rel if split is None else f"{split}/{rel}"
            if split is None:
                split = "test" if hash_fraction(rel) < test_fraction else "train"
            parts = rel.split("/")
            label, image, reason = -1, empty, None
            if len(parts) < 2:
                reason = "not inside a class folder"
            elif parts[0] not in class_index:
                reason = f"folder '{parts[0]}' is not one of the dataset's classes"
            else:
                try:
                    image = decode_image(contents[i].as_py(), h, w, c, resize, max_pixels).tobytes()
                    label = class_index[parts[0]]
                except Reject as exc:
                    reason = str(exc)
            cols["id"].append(stable_id(key))
            cols["label"].append(label)
            cols["image"].append(image)
            cols["path"].append(path)
            cols["split"].append(split)
            cols["reason"].append(reason)
        n = len(paths)
        yield pa.RecordBatch.from_arrays(
            [pa.array(cols["id"], pa.int64()), pa.array(cols["label"], pa.int32()),
             pa.array(np.full(n, h, np.int32)), pa.array(np.full(n, w, np.int32)), pa.array(np.full(n, c, np.int32)),
             pa.array(cols["image"], pa.binary()), pa.array(cols["path"], pa.string()),
             pa.array(cols["split"], pa.string()), pa.array(cols["reason"], pa.string())],
            names=["id", "label", "height", "width", "channels", "image", "path", "split", "reason"])


def ingest_folder(spark, cfg: Config, log: Callable[[str], None] = print) -> dict:
    from pyspark import StorageLevel

    root = cfg.data.path
    if not root or not os.path.isdir(root):
        raise IngestError(f"data.path {root!r} must be a folder of class subfolders for format 'folder'")
    root = os.path.realpath(root)
    layout = folder_layout(root)
    classes = class_folders(root, layout)
    class_index = {folder: k for k, (folder, _) in enumerate(classes)}
    class_names = [name for _, name in classes]
    listed = {split: [rel for rel in walk_files(folder) if rel != CLASS_MANIFEST]   # the manifest is not data
              for split, folder in layout.items()}
    n_files = sum(len(v) for v in listed.values())
    if n_files == 0:
        raise IngestError(f"{root}: no files found")
    total_bytes = sum(os.path.getsize(os.path.join(layout[s], rel)) for s, rels in listed.items() for rel in rels)

    ing = cfg.ingest
    first_split = next(iter(layout))
    probe = None if (ing.image_size and ing.channels) else _first_shape(layout[first_split], [
        r for r in listed[first_split] if "/" in r or os.sep in r])
    h, w = ing.image_size or probe[:2]
    c = ing.channels or probe[2]
    log(f"[ingest] {root}: {n_files} files, {len(classes)} classes, image shape {h}x{w}x{c}")

    prefixes = {split: "file:" + folder.rstrip("/") + "/" for split, folder in layout.items()}
    n_parts = partition_count(total_bytes + n_files * h * w * c, n_files, cfg.ingest.partition_mb,
                              spark.sparkContext.defaultParallelism)
    rows_per_arrow_batch = int(np.clip(64 * MB / max(1, total_bytes / n_files), 16, 4096))
    saved = {k: spark.conf.get(k) for k in ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes",
                                             "spark.sql.execution.arrow.maxRecordsPerBatch")}
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(max(1, total_bytes // n_parts + 1)))
    spark.conf.set("spark.sql.files.openCostInBytes", "0")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(rows_per_arrow_batch))
    decoder = functools.partial(_decode_partition, prefixes, class_index, (h, w, c), ing.resize,
                                ing.max_pixels, ing.test_fraction)
    decoded = None
    try:
        frames = [spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(folder)
                  .select("path", "content") for folder in layout.values()]
        files = frames[0]
        for other in frames[1:]:
            files = files.unionByName(other)
        decoded = files.mapInArrow(decoder, DECODED_DDL).persist(StorageLevel.DISK_ONLY)
        metas = _write_outputs(spark, cfg, decoded, layout, listed, n_files, class_names, (h, w, c), root, log)
    finally:
        if decoded is not None:
            decoded.unpersist()
        for k, v in saved.items():
            spark.conf.set(k, v)
    return metas


def _skipped_by_spark(layout: dict, listed: dict, seen_paths: set, test_fraction: float) -> list:
    """Files on disk that Spark's scan never returned, as reject rows.

    Spark's file index skips names starting with '.' or '_', and its file scan
    skips empty files; both would otherwise vanish without a trace.
    """
    rows = []
    for split, rels in listed.items():
        for rel in rels:
            local = os.path.join(layout[split], rel)
            path = "file:" + local
            if path not in seen_paths:
                s = split or ("test" if hash_fraction(rel) < test_fraction else "train")
                reason = ("empty file (0 bytes)" if os.path.getsize(local) == 0 else
                          "skipped by Spark's file listing: a name in the path starts with '.' or '_'")
                rows.append((path, s, reason))
    return rows


def _write_outputs(spark, cfg, decoded, layout, listed, n_files, class_names, shape, root, log) -> dict:
    from pyspark.sql import functions as F
    counts = {(r["split"], r["ok"]): r["count"] for r in
              decoded.groupBy("split", F.col("reason").isNull().alias("ok")).count().collect()}
    skipped = []
    if sum(counts.values()) != n_files:   # Spark's scan missed files: find which (paths only)
        seen_paths = {r["path"] for r in decoded.select("path").collect()}
        skipped = _skipped_by_spark(layout, listed, seen_paths, cfg.ingest.test_fraction)
    good = decoded.where(F.col("reason").isNull())
    dupes = good.groupBy("id").count().where("count > 1").limit(3).collect()
    if dupes:
        raise IngestError(f"{root}: id hash collision for ids {[r['id'] for r in dupes]}; rename one of the files")
    splits = sorted({s for s, _ in counts} | {s for _, s, _ in skipped}, key=lambda s: SPLIT_FOLDERS.index(s))
    rejects = decoded.where(F.col("reason").isNotNull()).select("path", "split", "reason")
    if skipped:
        rejects = rejects.unionByName(spark.createDataFrame(skipped, REJECTS_DDL))
    rejects_dir = os.path.join(os.path.dirname(cfg.dataset_dir("train")), "rejects")
    with atomic_dir(rejects_dir) as staging:
        rejects.coalesce(1).write.parquet(staging)
    metas = {}
    h, w, c = shape
    for split in splits:
        n_ok = counts.get((split, True), 0)
        n_bad = counts.get((split, False), 0) + sum(1 for _, s, _ in skipped if s == split)
        read = n_ok + n_bad
        if n_ok == 0:
            log(f"[ingest] {split}: read {read} = written 0 + rejected {n_bad}: no usable image, split not written")
            continue
        frame = good.where(F.col("split") == split).select(*records.COLUMNS)
        meta = records.DatasetMeta(name=cfg.data.dataset, split=split, num_rows=0, height=h, width=w, channels=c,
                                   class_names=class_names, source=os.path.join(root, split if split in layout else ""),
                                   rejected=n_bad)
        dest = cfg.dataset_dir(split)
        metas[split] = publish_dataset(spark, frame, dest, meta, cfg.ingest.row_group_mb, n_ok)
        log(f"[ingest] {split}: read {read} = written {n_ok} + rejected {n_bad} -> {dest}")
    total_rejects = sum(counts.get((s, False), 0) for s in splits) + len(skipped)
    if total_rejects:
        log(f"[ingest] {total_rejects} rejected file(s), with reasons: {rejects_dir}")
    return metas
