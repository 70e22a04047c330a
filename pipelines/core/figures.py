"""Figures every stage draws: image grids, training curves, confusion matrices (matplotlib, Agg).

The report, visualize, augment and experiment stages all plot; the plotting lives here so
that none of them imports another stage to draw.  `sample_rows` is the one Spark query
behind the image grids: a few dozen rows per class, never a whole split.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from pipelines.core import records
from pipelines.core.parquet_io import read_frame
from pipelines.core.records import PREDICTION
from pipelines.core.store import exists


def agg_pyplot():
    """matplotlib.pyplot on the file-only Agg backend (drivers and executors have no display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def sample_rows(spark, dataset_dir: str, per_class: int, predictions_dir: Optional[str] = None,
                only_wrong: bool = False, limit: Optional[int] = None):
    """The first `per_class` rows of each class (by id), with predictions joined in when given."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    frame = read_frame(spark, dataset_dir, [records.ID, records.LABEL, records.IMAGE])
    if predictions_dir and exists(predictions_dir):
        preds = read_frame(spark, predictions_dir, [records.ID, PREDICTION])
        frame = frame.join(preds, records.ID)
        if only_wrong:
            frame = frame.where(F.col(PREDICTION) != F.col(records.LABEL))
    rank = F.row_number().over(Window.partitionBy(records.LABEL).orderBy(records.ID))
    picked = frame.withColumn("_rank", rank).where(F.col("_rank") <= per_class).drop("_rank")
    if limit:
        picked = picked.orderBy(records.ID).limit(limit)
    return picked.orderBy(records.LABEL, records.ID).toPandas()


def plot_samples(rows, meta: records.DatasetMeta, path: str, title: str, columns: Optional[int] = None) -> None:
    """A labelled grid; with predictions, wrong ones are titled in red with 'true→predicted'."""
    plt = agg_pyplot()
    n = len(rows)
    cols = columns or max(1, min(n, 10))
    nrows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(nrows, cols, figsize=(cols * 1.1, nrows * 1.25 + 0.4), squeeze=False)
    images = records.decode_images(list(rows[records.IMAGE]), meta.shape) if n else []
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        ax.imshow(img[..., 0] if meta.channels == 1 else img, cmap="gray" if meta.channels == 1 else None,
                  vmin=0, vmax=255)
        true = meta.class_names[int(rows[records.LABEL].iloc[i])]
        if PREDICTION in rows:
            pred = meta.class_names[int(rows[PREDICTION].iloc[i])]
            wrong = pred != true
            ax.set_title(f"{true}→{pred}" if wrong else true, fontsize=8, color="red" if wrong else "black")
        else:
            ax.set_title(true, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_training_curves(history: dict, path: str) -> None:
    plt = agg_pyplot()
    metrics = history["metrics"]
    epochs = np.arange(1, len(metrics.get("loss", [])) + 1)
    fig, (ax_err, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("accuracy", "train"), ("val_accuracy", "validation")):
        if key in metrics:
            ax_err.plot(epochs, 1 - np.asarray(metrics[key]), marker="o", label=label)
    ax_err.set(xlabel="epoch", ylabel="error (1 - accuracy)", title="Error per epoch", yscale="log")
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        if key in metrics:
            ax_loss.plot(epochs, metrics[key], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss per epoch")
    for ax in (ax_err, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xticks(epochs)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_confusion(metrics: dict, class_names: list, path: str) -> None:
    plt = agg_pyplot()
    cm = np.asarray(metrics["confusion_matrix"])
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    shown = np.log1p(cm)
    ax.imshow(shown, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if shown[i, j] > shown.max() * 0.6 else "black")
    ax.set_xticks(range(k), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0)
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix (accuracy {metrics['accuracy']:.4f})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
