"""`sparkcnn visualize`: look at a dataset — N samples per class and the class balance.

With `visualize.predictions: true` the run's predictions are joined in and
misclassified samples are titled in red with true→predicted.
"""
from __future__ import annotations

import logging
import os

from pipelines.core import records, storage
from pipelines.core.config import Config
from pipelines.core.figures import agg_pyplot, plot_samples, sample_rows
from pipelines.core.store import atomic_dir, resolve

logger = logging.getLogger("sparkcnn.visualize")


def plot_class_counts(meta: records.DatasetMeta, path: str) -> None:
    plt = agg_pyplot()
    counts = [meta.class_counts.get(str(k), 0) for k in range(meta.num_classes)]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * meta.num_classes + 2), 3.6))
    ax.bar(range(meta.num_classes), counts, color="#4a7fb5")
    ax.set_xticks(range(meta.num_classes), meta.class_names,
                  rotation=45 if max(map(len, meta.class_names)) > 2 else 0, ha="right" if max(map(len, meta.class_names)) > 2 else "center")
    ax.set(ylabel="images", title=f"{meta.name} {meta.split}: {meta.num_rows} images, {meta.rejected} rejected")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def visualize(spark, cfg: Config, store) -> dict:
    split = cfg.visualize.split
    dataset_dir = cfg.dataset_dir(split)
    meta = records.read_meta(dataset_dir)
    preds = store.require(store.predictions_dir, "score") if cfg.visualize.predictions else None
    out_dir = storage.join(store.root, "visualize")
    files = {}
    with atomic_dir(out_dir, local_build=True) as staging:
        os.makedirs(staging)
        rows = sample_rows(spark, dataset_dir, cfg.visualize.samples_per_class, preds)
        files["samples"] = storage.join(out_dir, f"{split}_samples.png")
        plot_samples(rows, meta, os.path.join(staging, storage.basename(files["samples"])),
                     f"{meta.name} {split}: {cfg.visualize.samples_per_class} per class",
                     columns=cfg.visualize.samples_per_class)
        files["class_counts"] = storage.join(out_dir, f"{split}_class_counts.png")
        plot_class_counts(meta, os.path.join(staging, storage.basename(files["class_counts"])))
    if storage.is_remote(out_dir):       # the files are in the published version's prefix
        files = {k: storage.join(resolve(out_dir), storage.basename(v)) for k, v in files.items()}
    for path in files.values():
        logger.info(f"[visualize] {path}")
    return files
