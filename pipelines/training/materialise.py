"""A DataFrame of images and labels -> a record-contract dataset in the store, written once per data key.

Horovod's workers read Parquet through Petastorm, so `CNNEstimator.fit(df)` first writes the
DataFrame in the record contract (as Horovod's KerasEstimator writes its intermediate data into
its Store).  Unlike Horovod's, the copy is kept and found again by a key, so refitting with other
settings (or from another process, tomorrow) does not rewrite it:

    store/materialised/<key>/data       the records (+ the validation column, when one is named)
    store/materialised/<key>/rejects.parquet   rows that could not become records, with the reason

The key is a sha256 of: the DataFrame's analysed plan (canonicalised: expression ids do not
count), each file source's format and options, the identities of its input files (path, size,
modification time: a changed, added or removed file gives a new key), and how the images are
read (column, form, size, channels, resize, label column, validation column, pixel limit).  A
plan whose every leaf is a file scan is keyed across processes; any other leaf (an RDD, local
rows, a cached relation) cannot be identified from outside, so its key also holds this Spark
application's id: it is reused within the application only.  Old keys are never deleted by a
fit: remove store/materialised/<key> to reclaim the space.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import records, storage
from pipelines.core.errors import SparkcnnError
from pipelines.core.store import exists, write_bytes_atomic
from pipelines.datasets.publish import publish_dataset
from pipelines.images.decode import Reject, probe_shape
from pipelines.images.listing import stat_all
from pipelines.inference import cnn_model_remote as cnn_remote
from pipelines.inference.cnn_model import input_form
from pipelines.inference.network import NetworkSpec
from pipelines.training import materialise_remote as remote
from pipelines.training.estimator_params import WHERE, EstimatorSection

VERSION = 1                  # of the materialised layout and of what the key covers
PARTS_PER_CORE = 2          # materialising tasks (and part files) per task slot, at most
logger = logging.getLogger("sparkcnn.training")
FILE_LEAF = "org.apache.spark.sql.execution.datasources.LogicalRelation"


class MaterialiseError(SparkcnnError, ValueError):
    """The DataFrame cannot be turned into training records; the message names the Param or column."""


@dataclass(frozen=True)
class Materialised:
    dataset: records.PublishedDataset   # the record dataset (data/), as training reads it
    key: str
    reused: bool
    scope: str               # "files" (any process) or "application" (this Spark application only)

    @property
    def path(self) -> str:
        return self.dataset.location

    @property
    def meta(self) -> records.DatasetMeta:
        return self.dataset.meta


def _plan_identity(df) -> tuple:
    """(identity of the plan, scope): the canonical plan text, file sources' options and files."""
    plan = df._jdf.queryExecution().analyzed()
    text = plan.canonicalized().toString()
    sources, file_backed = [], True
    leaves = plan.collectLeaves().iterator()
    while leaves.hasNext():
        leaf = leaves.next()
        if leaf.getClass().getName() == FILE_LEAF and "HadoopFsRelation" in leaf.relation().getClass().getName():
            relation = leaf.relation()
            sources.append([relation.fileFormat().getClass().getName(), relation.options().toString()])
        else:
            file_backed = False
    files = sorted(df.inputFiles())
    local = [storage.normalize(unquote(f)) if f.startswith("file:") else f for f in files]
    identities = [[path, size, modified, tag] for path, size, modified, tag in stat_all(local)]
    scope = "files" if file_backed else "application"
    ident = {"plan": text, "sources": sources, "files": identities}
    if not file_backed:
        ident["application"] = df.sparkSession.sparkContext.applicationId
        ident["semantic_hash"] = df.semanticHash()
    return ident, scope


def data_key(df, own: EstimatorSection, form: str, validation_col: str) -> tuple:
    """(key, scope) of a DataFrame read as training records by these settings."""
    ident, scope = _plan_identity(df)
    ident.update(version=VERSION, input=[own.input_col, form], label=own.label_col, size=own.image_size,
                 channels=own.channels, resize=own.resize_mode, validation=validation_col,
                 max_pixels=own.max_pixels)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16], scope


def _label_plan(df, label_col: str) -> tuple:
    """(string label -> index, or None for integer labels; class names or None: named after the counts)."""
    if label_col not in df.columns:
        raise MaterialiseError(f"{WHERE}.labelCol: '{label_col}' is not a column; columns: {', '.join(df.columns)}")
    kind = df.schema[label_col].dataType.typeName()
    if kind in ("byte", "short", "integer", "long"):
        return None, None
    if kind != "string":
        raise MaterialiseError(f"{WHERE}.labelCol: '{label_col}' is {kind}; expected integer class indices or "
                               "string class names")
    names = sorted(r[0] for r in df.select(label_col).distinct().collect() if r[0] is not None)
    if not names:
        raise MaterialiseError(f"{WHERE}.labelCol: '{label_col}' has no non-null value")
    return {name: i for i, name in enumerate(names)}, names


def _first_shape(df, cols, form: str, max_pixels: int) -> tuple:
    """(height, width, channels) of the first row's image: what 'the images' own size' means."""
    from pyspark.sql import functions as F
    name = cols.input
    if form == cnn_remote.STRUCT:
        row = df.where(F.col(f"{name}.height") > 0).select(f"{name}.height", f"{name}.width",
                                                           f"{name}.nChannels").head()
    elif form == cnn_remote.RECORD:
        row = df.where(F.col("height") > 0).select("height", "width", "channels").head()
    else:
        row = None
        for (data,) in df.where(F.col(name).isNotNull()).select(name).limit(20).collect():
            try:
                row = probe_shape(bytes(data))
                break
            except (Reject, OSError, ValueError, SyntaxError):
                continue
    if row is None:
        raise MaterialiseError(f"{WHERE}.inputCol: no decodable image in the first rows of '{name}'")
    h, w, c = (int(v) for v in row)
    return h, w, (1 if c == 1 else 3)


def _source_columns(df, own: EstimatorSection, form: str, validation_col: str):
    """The columns the tasks read: id, origin, label, image (+ record shape, + validation)."""
    from pyspark.sql import functions as F
    name = own.input_col
    if form == cnn_remote.STRUCT:
        origin = F.col(f"{name}.origin")
    elif "path" in df.columns:
        origin = F.col("path").cast("string")          # binaryFile's column
    else:
        origin = F.lit(None).cast("string")
    row_id = F.coalesce(F.xxhash64(origin), F.monotonically_increasing_id()) if form != cnn_remote.RECORD \
        or "id" not in df.columns else F.col("id").cast("long")
    picked = [row_id.alias(remote.ID_COLUMN), origin.alias(remote.ORIGIN_COLUMN),
              F.col(own.label_col).alias(remote.LABEL_COLUMN), F.col(name)]
    if form == cnn_remote.RECORD:
        picked += [F.col(c) for c in ("height", "width", "channels") if c != name]
    if validation_col:
        picked.append(F.col(validation_col).cast("int").alias(validation_col))
    return df.select(*picked)


def _listed(reports: dict) -> list:
    """Every reported reject, (origin, kind, reason), over all partitions."""
    return [entry for _, _, entries in reports.values() for entry in entries]


def _rejects_table(listed: list) -> pa.Table:
    return pa.table({"origin": [o for o, _, _ in listed], "kind": [k for _, k, _ in listed],
                     "reason": [r for _, _, r in listed]})


def materialise(spark, df, own: EstimatorSection, validation) -> Materialised:
    """The record dataset for `df` in own.store: found by its key, or written now."""
    form = input_form(df, own.input_col, own.input_format)
    validation_col = validation if isinstance(validation, str) else ""
    if validation_col and validation_col not in df.columns:
        raise MaterialiseError(f"{WHERE}.validation names column '{validation_col}', which the DataFrame does not "
                               f"have; columns: {', '.join(df.columns)}")
    key, scope = data_key(df, own, form, validation_col)
    root = storage.join(storage.normalize(own.store), "materialised", key)
    dest = storage.join(root, "data")
    if exists(dest):
        dataset = records.open_dataset(dest)
        logger.info(f"[fit] materialised data up to date (key {key}): {dataset.meta.num_rows} rows in "
                    f"{storage.redact(dest)}")
        return Materialised(dataset, key, True, scope)

    label_index, class_names = _label_plan(df, own.label_col)
    cols = cnn_remote.Columns(input=own.input_col, form=form, height="height", width="width", channels="channels")
    if own.image_size:
        (h, w), c = own.image_size, own.channels or _first_shape(df, cols, form, own.max_pixels)[2]
    else:
        h, w, c = _first_shape(df, cols, form, own.max_pixels)
        c = own.channels or c
    target = NetworkSpec(kind="records", digest="", height=h, width=w, channels=c, resize=own.resize_mode)
    plan = remote.Plan(target=target, cols=cols, strict_size=not own.image_size, label_index=label_index,
                       validation_col=validation_col, max_pixels=own.max_pixels)
    sc = spark.sparkContext
    reports = sc.accumulator({}, remote.PartitionReports())
    source = _source_columns(df, own, form, validation_col)
    # A file source gives a partition per few files: as many part files would make every later read
    # (validation split, Petastorm) pay per-file costs, on object stores above all.  A few tasks per
    # core keep decoding parallel; each writes one part file (row groups inside stay rowGroupMb).
    tasks = min(source.rdd.getNumPartitions(), PARTS_PER_CORE * sc.defaultParallelism)
    source = source.coalesce(max(1, tasks))
    frame = source.mapInArrow(functools.partial(remote.to_records, plan, reports), plan.spark_ddl)

    def expected() -> int:
        return sum(seen - rejected for seen, rejected, _ in reports.value.values())

    def name_classes(counts: dict) -> list:
        if class_names:
            return list(class_names)
        return [str(i) for i in range(max(int(k) for k in counts) + 1)] if counts else []

    def before_publish() -> None:
        listed = _listed(reports.value)
        _write_rejects(reject_path, listed)
        wrong_size = [entry for entry in listed if entry[1] == remote.SIZE_REJECT]
        if wrong_size:       # not a usable dataset: the user must choose a size (the staging is discarded)
            origin, _, reason = wrong_size[0]
            raise MaterialiseError(f"{WHERE}.imageSize is not set and {len(wrong_size)} image(s) differ in size "
                                   f"from the first ({origin}: {reason}); set imageSize=[height, width]")

    meta = records.DatasetMeta(name=f"materialised-{key}", split="train", num_rows=0, height=h, width=w, channels=c,
                               class_names=list(class_names or []), source=f"{WHERE} input (key {key})")
    logger.info(f"[fit] materialising the DataFrame (key {key}, {h}x{w}x{c}) into {storage.redact(dest)}")
    reject_path = storage.join(root, "rejects.parquet")
    meta = publish_dataset(spark, frame, dest, meta, own.row_group_mb, expected, name_classes=name_classes,
                           before_publish=before_publish)
    rejected = sum(r for _, r, _ in reports.value.values())
    if not meta.num_rows:
        storage.remove(dest)
        raise MaterialiseError(f"{WHERE}: no row of the DataFrame became a training record ({rejected} rejected: "
                               f"see {storage.redact(reject_path)})")
    more = f", {rejected} rejected (listed in {storage.redact(reject_path)})" if rejected else ""
    logger.info(f"[fit] materialised {meta.num_rows} rows in {len(meta.class_names)} classes{more}")
    return Materialised(records.open_dataset(dest), key, False, scope)   # in a fit: what was just published


def _write_rejects(location: str, listed: list) -> None:
    table = _rejects_table(listed)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    write_bytes_atomic(location, buffer.getvalue())
