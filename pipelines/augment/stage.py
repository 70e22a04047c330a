"""Driver side of the augment stage: a Parquet dataset in, an augmented Parquet dataset out.

For each configured split `<s>`, writes `<datasets_dir>/<dataset>/<s><output_suffix>`
following the record contract plus lineage columns (source_id, sample, ops), with
a sidecar recording the augmentation (seed, pipeline, counts, and the scramble
permutation when there is one).  The work happens in executors (pipelines.augment.remote),
one vectorised call per ~1k images; the driver only plans counts per row
(n_per_image, or class-balanced counts) and writes a before/after figure into
the run directory, which the report links.
"""
from __future__ import annotations

import functools
import io
import logging

import numpy as np

from pipelines.augment.remote import N_SAMPLES, augment_batches
from pipelines.augmentation.params import AugmentError
from pipelines.augmentation.pipeline import Pipeline
from pipelines.core import records, storage
from pipelines.core.arrow_batches import arrow_batch_rows, rows_within
from pipelines.core.config import Config
from pipelines.core.figures import agg_pyplot
from pipelines.core.parquet_io import read_frame, write_frame
from pipelines.core.store import (
    RunStore,
    atomic_dir,
    published_url,
    resolve,
    write_bytes_atomic,
)

logger = logging.getLogger("sparkcnn.augment")

MB = 1 << 20
FIGURE_SAMPLES = 5            # augmented samples shown per source image


def pipeline_of(cfg: Config) -> Pipeline:
    return Pipeline.parse(cfg.augment.pipeline, cfg.augment.seed, where=f"{cfg.source}: augment.pipeline")


def plan_counts(class_counts: dict, n_per_image: int, keep_originals: bool, balance: bool) -> dict:
    """label -> (augmented samples per row q, rows getting one more r): row of rank k gets q + (k < r).

    Balanced: every class ends with as many rows as the largest, max_count * (n_per_image + keep);
    smaller classes get more samples per image.
    """
    present = {int(k): int(v) for k, v in class_counts.items() if int(v) > 0}
    if not balance:
        return {k: (n_per_image, 0) for k in present}
    target = max(present.values()) * (n_per_image + int(keep_originals))
    plan = {}
    for label, count in present.items():
        extra = target - int(keep_originals) * count
        plan[label] = divmod(extra, count)
    return plan


def _with_sample_counts(frame, plan: dict, balance: bool):
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    if not balance:
        (q, _), = set(plan.values()) or {(0, 0)}
        return frame.withColumn(N_SAMPLES, F.lit(q).cast("int"))
    rank = F.row_number().over(Window.partitionBy(records.LABEL).orderBy(records.ID)) - 1
    q = F.lit(0)
    r = F.lit(0)
    for label, (ql, rl) in plan.items():
        q = F.when(F.col(records.LABEL) == label, F.lit(ql)).otherwise(q)
        r = F.when(F.col(records.LABEL) == label, F.lit(rl)).otherwise(r)
    return frame.withColumn(N_SAMPLES, (q + F.when(rank < r, 1).otherwise(0)).cast("int"))


def augment_split(spark, cfg: Config, split: str, pipeline: Pipeline):
    """Augment one split; returns (output dir, its DatasetMeta)."""
    from pyspark.sql import functions as F
    a = cfg.augment
    src = cfg.dataset_dir(split)
    dest = cfg.dataset_dir(split + a.output_suffix)
    meta = records.read_meta(src)
    frame = read_frame(spark, src, list(records.COLUMNS))
    stats = frame.groupBy(records.LABEL).agg(F.count("*").alias("n"), F.max(records.ID).alias("max_id")).collect()
    class_counts = {int(row[records.LABEL]): int(row["n"]) for row in stats}
    if not class_counts:
        raise AugmentError(f"{src}: dataset is empty, nothing to augment")
    plan = plan_counts(class_counts, a.n_per_image, a.keep_originals, a.balance_classes)
    id_stride = 1 + max(q + (1 if r else 0) for q, r in plan.values())
    max_id = max(int(row["max_id"]) for row in stats)
    if max_id >= (2 ** 63 - 1) // id_stride:
        raise AugmentError(f"{src}: ids up to {max_id} times {id_stride} samples per image overflow a 64-bit id")
    expected = sum(class_counts[k] * (q + int(a.keep_originals)) + r for k, (q, r) in plan.items())

    spec = pipeline.spec()
    worker = functools.partial(augment_batches, spec, meta.shape, a.keep_originals, id_stride)
    planned = _with_sample_counts(frame, plan, a.balance_classes)
    if a.partitions:
        planned = planned.repartition(a.partitions)
    out = planned.mapInArrow(worker, records.AUGMENTED_SPARK_DDL)
    with atomic_dir(dest) as staging:
        with arrow_batch_rows(spark, rows_within(meta.height * meta.width * meta.channels)):   # photos: by bytes
            write_frame(out, staging, cfg.ingest.row_group_mb)
        counts = {str(r[records.LABEL]): int(r["count"])
                  for r in read_frame(spark, staging, [records.LABEL]).groupBy(records.LABEL).count().collect()}
        written = sum(counts.values())
        if written != expected:
            raise AugmentError(f"{dest}: wrote {written} rows, expected {expected} from {src}")
        augmentation = {
            "source": resolve(src), "source_rows": sum(class_counts.values()),
            "seed": a.seed, "n_per_image": a.n_per_image, "keep_originals": a.keep_originals,
            "balance_classes": a.balance_classes, "id_stride": id_stride, "pipeline": spec["pipeline"],
        }
        scramble = pipeline.permutation_record(meta.height, meta.width)
        if scramble:
            augmentation["scramble"] = scramble
        out_meta = records.DatasetMeta(
            name=meta.name, split=split + a.output_suffix, num_rows=written, height=meta.height, width=meta.width,
            channels=meta.channels, class_names=list(meta.class_names), source=f"augment of {split}",
            class_counts=dict(sorted(counts.items(), key=lambda kv: int(kv[0]))), augmentation=augmentation)
        records.write_meta(staging, out_meta)
    logger.info(f"[augment] {split}: {sum(class_counts.values())} rows -> {written} rows -> {published_url(dest)}")
    return dest, out_meta


def stored_permutation(dataset_dir: str):
    """The scramble permutation an augmented dataset was made with, or None."""
    scramble = records.read_meta(dataset_dir).augmentation.get("scramble")
    return np.asarray(scramble["permutation"]) if scramble else None


def before_after_rows(spark, src: str, dest: str, count: int, samples: int = FIGURE_SAMPLES):
    """(source ids, originals {id: image}, augmented {id: [images by sample]}) for the first `count` source ids."""
    from pyspark.sql import functions as F
    meta = records.read_meta(src)
    source = read_frame(spark, src, [records.ID, records.LABEL, records.IMAGE])
    picked = source.orderBy(records.ID).limit(count).toPandas()
    ids = [int(i) for i in picked[records.ID]]
    aug = (read_frame(spark, dest, [records.SOURCE_ID, records.SAMPLE, records.IMAGE])
           .where(F.col(records.SOURCE_ID).isin(ids) & (F.col(records.SAMPLE) >= 1)
                  & (F.col(records.SAMPLE) <= samples))
           .select(records.SOURCE_ID, records.SAMPLE, records.IMAGE).toPandas()
           .sort_values([records.SOURCE_ID, records.SAMPLE]))
    originals = dict(zip(ids, records.decode_images(list(picked[records.IMAGE]), meta.shape)))
    labels = dict(zip(ids, (meta.class_names[int(v)] for v in picked[records.LABEL])))
    augmented = {i: [] for i in ids}
    if len(aug):
        for sid, img in zip(aug[records.SOURCE_ID], records.decode_images(list(aug[records.IMAGE]), meta.shape)):
            augmented[int(sid)].append(img)
    return ids, originals, augmented, labels


def plot_before_after(ids, originals, augmented, labels, title: str) -> bytes:
    """A PNG: one row per source image, the original first, then its augmented samples."""
    plt = agg_pyplot()
    cols = 1 + max([len(v) for v in augmented.values()] + [1])
    fig, axes = plt.subplots(len(ids), cols, figsize=(cols * 1.1, len(ids) * 1.15 + 0.5), squeeze=False)
    for r, sid in enumerate(ids):
        row = [originals[sid]] + augmented[sid]
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(row):
                img = row[c]
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                          vmin=0, vmax=255)
                if r == 0:
                    ax.set_title("original" if c == 0 else f"sample {c}", fontsize=7)
        axes[r][0].text(-0.15, 0.5, labels[sid], transform=axes[r][0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def augment(spark, cfg: Config, store: RunStore) -> dict:
    """The CLI stage: augment every configured split; returns {split: output meta}."""
    pipeline = pipeline_of(cfg)
    if not pipeline.ops and cfg.augment.n_per_image:
        logger.info("[augment] augment.pipeline is empty: augmented samples are copies of their source")
    results = {}
    for split in cfg.augment.splits or ["train"]:
        dest, meta = augment_split(spark, cfg, split, pipeline)
        ids, originals, augmented, labels = before_after_rows(spark, cfg.dataset_dir(split), dest,
                                                              cfg.augment.report_images)
        png = plot_before_after(ids, originals, augmented, labels,
                                f"{meta.name} {split} -> {meta.split}: originals and augmented samples")
        path = storage.join(store.augment_figures_dir, f"{split}_before_after.png")
        write_bytes_atomic(path, png)
        logger.info(f"[augment] figure -> {path}")
        results[split] = meta
    return results


def augment_spec(cfg: Config) -> dict:
    """What on-the-fly training needs: the pipeline as a picklable spec."""
    return pipeline_of(cfg).spec()
