"""The run report: runs/<run>/report/ with PNG figures and an index.html that ties them together.

Only small things reach the driver here: a few dozen sample images picked by
Spark, the metrics and history JSON.  The report directory is published
atomically like every other output.
"""
from __future__ import annotations

import html
import json
import logging
import os
from typing import Optional

import yaml

from pipelines.core import records, storage
from pipelines.core.config import Config
from pipelines.core.figures import (
    plot_confusion,
    plot_samples,
    plot_training_curves,
    sample_rows,
)
from pipelines.core.store import RunStore, atomic_dir, exists, read_json, resolve

logger = logging.getLogger("sparkcnn.report")


def _table(headers, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STEP_PHASES = (("input", "waiting for the next batch"), ("compute", "forward + backward"),
               ("allreduce", "Horovod allreduce, incl. waiting for the slowest worker"),
               ("apply", "optimizer update"), ("other", "Keras and callbacks"))


def _step_breakdown(breakdown: Optional[dict]) -> list:
    """Where a training step's time went (history.json step_breakdown), so a user sees what limits them."""
    ms = (breakdown or {}).get("ms_per_step")
    if not ms or not ms.get("step_ms"):
        return []
    rows = [[name, what, f"{ms[f'{name}_ms']:.1f}", f"{100 * ms[f'{name}_ms'] / ms['step_ms']:.0f}%"]
            for name, what in STEP_PHASES]
    rows.append(["step", "", f"{ms['step_ms']:.1f}", "100%"])
    levers = (f"{breakdown['backward_passes_per_step']} backward pass(es) per allreduce, compression "
              f"{html.escape(str(breakdown['compression']))}, {breakdown['allreduce_bytes'] / 1e6:.1f} MB per allreduce"
              + ("; allreduce overlapped with the backward pass: what it did not hide" if breakdown.get("overlap") else ""))
    return ["<h2>Where a training step's time goes</h2><p>ms per step, mean over workers of the median "
            f"epoch after the first; {levers}</p>", _table(["phase", "what", "ms", "share"], rows)]


def render_html(cfg: Config, metas: dict, history: Optional[dict], metrics: Optional[dict],
                timings: dict, figures: dict) -> str:
    parts = [f"<h1>sparkcnn run <code>{html.escape(cfg.run.name)}</code></h1>"]
    if metrics:
        parts.append(f"<p class='headline'>Test accuracy <b id='test-accuracy'>{metrics['accuracy']:.4f}</b> "
                     f"on {metrics['rows']} {html.escape(metrics.get('split', ''))} images; "
                     f"loss {metrics['loss']:.4f}; macro F1 {metrics['macro_f1']:.4f}</p>")
    if metrics and metrics.get("transfer"):  # `sparkcnn transfer`: pretrained features + LogisticRegression
        t = metrics["transfer"]
        parts.append(f"<h2>Transfer learning</h2><p>{html.escape(t['model'])} features ({t['feature_dim']}-d, "
                     f"weights {html.escape(t['weights'])}) + Spark LogisticRegression; "
                     f"weighted F1 <b id='weighted-f1'>{metrics['weighted_f1']:.4f}</b></p>")
        parts.append(_table(["setting", "value"], sorted(t.items())))
    parts.append("<h2>Datasets</h2>")
    parts.append(_table(["split", "rows", "rejected", "shape", "classes"],
                        [[s, m.num_rows, m.rejected, "x".join(map(str, m.shape)), m.num_classes]
                         for s, m in metas.items()]))
    for name in sorted(figures.get("augment", [])):
        parts.append(f"<h2>Augmentation: {html.escape(name.split('_before_after')[0])}</h2>"
                     f"<img src='{html.escape(name)}' alt='before and after augmentation'>")
    for key, caption in (("samples", "Samples"), ("curves", "Training curves"),
                         ("confusion", "Confusion matrix"), ("misclassified", "Misclassified examples")):
        if key in figures:
            parts.append(f"<h2>{caption}</h2><img src='{figures[key]}' alt='{caption}'>")
    if history:
        m = history["metrics"]
        rows = [[i + 1] + [f"{m[k][i]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in m]
                + [f"{history['epoch_seconds'][i]:.1f}"] for i in range(len(m.get("loss", [])))]
        heads = ["epoch"] + [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in m] + ["seconds"]
        parts.append(f"<h2>Training</h2><p>{history['model']}, {history['workers']} Horovod workers × "
                     f"{history['threads_per_worker']} threads, batch {history['batch_size_per_worker']} per worker</p>")
        parts.append(_table(heads, rows))
        parts.extend(_step_breakdown(history.get("step_breakdown")))
    if metrics:
        parts.append("<h2>Per-class metrics</h2>")
        parts.append(_table(["class", "precision", "recall", "F1", "support"],
                            [[c["name"], f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", c["support"]]
                             for c in metrics["per_class"]]))
    if timings:
        parts.append("<h2>Timings per stage</h2>")
        parts.append(_table(["stage", "seconds"], sorted(timings.items())))
    parts.append("<h2>Configuration</h2><pre>"
                 + html.escape(yaml.safe_dump(cfg.to_dict(), sort_keys=False)) + "</pre>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "img{max-width:100%}pre{background:#f6f6f6;padding:1em}.headline{font-size:1.3em}")
    # Marks the page with how many figures really loaded, so a headless browser check can read it.
    script = ("<script>window.addEventListener('load',function(){var i=document.images,ok=0;"
              "for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)ok++;}"
              "document.body.setAttribute('data-images-loaded',ok+'/'+i.length);});</script>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>sparkcnn {html.escape(cfg.run.name)}</title>"
            f"<style>{style}</style>{script}</head><body>{''.join(parts)}</body></html>")


def _copy_augment_figures(store: RunStore, staging: str) -> list:
    """The augment stage's before/after PNGs (runs/<run>/augment/*.png), if it ran for this conf."""
    src = resolve(store.augment_figures_dir)
    names = [n for n in storage.listdir(src) if n.endswith(".png")]
    for name in names:
        with open(os.path.join(staging, name), "wb") as f:
            f.write(storage.read_bytes(storage.join(src, name)))
    return names


def report(spark, cfg: Config, store: RunStore) -> str:
    metas = {s: records.read_meta(cfg.dataset_dir(s)) for s in ("train", "val", "test")
             if exists(cfg.dataset_dir(s))}
    history = read_json(store.history_path) if exists(store.history_path) else None
    metrics = read_json(store.metrics_path) if exists(store.metrics_path) else None
    timings = read_json(store.timings_path) if exists(store.timings_path) else {}
    split = cfg.score.split
    meta = metas.get(split) or records.read_meta(cfg.dataset_dir(split))
    preds = store.predictions_dir if metrics else None
    figures = {}
    with atomic_dir(store.report_dir, local_build=True) as staging:
        os.makedirs(staging)
        rows = sample_rows(spark, cfg.dataset_dir(split), cfg.report.samples_per_class, preds)
        plot_samples(rows, meta, os.path.join(staging, "samples.png"), f"{meta.name} {split}: samples per class")
        figures["samples"] = "samples.png"
        if history:
            plot_training_curves(history, os.path.join(staging, "training_curves.png"))
            figures["curves"] = "training_curves.png"
        if metrics:
            plot_confusion(metrics, meta.class_names, os.path.join(staging, "confusion_matrix.png"))
            figures["confusion"] = "confusion_matrix.png"
            wrong = sample_rows(spark, cfg.dataset_dir(split), 3, preds, only_wrong=True, limit=30)
            if len(wrong):
                plot_samples(wrong, meta, os.path.join(staging, "misclassified.png"),
                             "misclassified (true→predicted)")
                figures["misclassified"] = "misclassified.png"
        figures["augment"] = _copy_augment_figures(store, staging)
        with open(os.path.join(staging, "index.html"), "w") as f:
            f.write(render_html(cfg, metas, history, metrics, timings, figures))
        with open(os.path.join(staging, "config.json"), "w") as f:
            json.dump(cfg.to_dict(), f, indent=2)
    index = store.report_index()
    logger.info(f"[report] {storage.redact(index)}")
    return index
