"""Fully-convolutional localisation (seed 003): a trained classifier becomes a detector for large images.

`to_fully_convolutional` rewrites a chain classifier (Rescaling, Conv2D,
pooling, Dropout, Flatten, Dense) so that it accepts any image size: the
first Dense after Flatten becomes a Conv2D whose kernel covers the whole
flattened feature map (mnist_cnn: Dense 128 -> Conv 12x12x128, the weight
matrix reshaped to 12x12x64x128 because Flatten is row-major HWC), every
later Dense a 1x1 Conv2D (softmax Dense -> Conv 1x1x10, softmax over the
channel axis), Dropout is dropped (inference only).  On a digit-sized input
it computes exactly the classifier's function; on a larger canvas it
evaluates the classifier at every window position (stride = product of the
pooling strides) in one pass.

`sparkcnn localise` proves the equivalence on the whole test split, builds
seeded composite canvases of test digits, runs the FCN over them with Spark
(mapInArrow, model bytes broadcast), writes per-class heatmap PNGs
thresholded at localise.threshold, and scores localisation (see
pipelines/localise/composites.py).  With localise.compare it first trains two
mnist_cnn models in parallel Spark tasks, one on plain digits and one on
digits shifted by up to localise.shift pixels, and compares them; with
localise.background a third, shifted model also learns a background class
(off-centre and empty windows), the FCN's answer for "no digit here".
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time

import numpy as np

from pipelines.core import records, storage
from pipelines.core.config import Config
from pipelines.core.errors import SparkcnnError
from pipelines.core.markdown import to_markdown
from pipelines.core.store import RunStore, atomic_dir, resolve, write_json_atomic
from pipelines.core.tf_runtime import threads_per_task
from pipelines.localise.composites import (
    compose,
    localisation_scores,
    window_geometry,
    write_heatmap_pngs,
)
from pipelines.localise.remote import (
    CANVAS_DDL,
    HEAT_HEIGHT,
    HEAT_WIDTH,
    HEATMAP,
    HEATMAPS_DDL,
    check_equivalence,
    heatmap_batches,
)
from pipelines.training.trial_remote import TrialSpec, load_split
from pipelines.training.trials import derive_seed, run_trials

logger = logging.getLogger("sparkcnn.localise")


def _train_pair(spark, cfg: Config, meta) -> dict:
    """mnist_cnn plain, shift-augmented and (localise.background) shifted with a background class, trained
    side by side as Spark tasks."""
    lo = cfg.localise
    train_dir, test_dir = cfg.dataset_dir("train"), cfg.dataset_dir(lo.split)
    train_rows = records.read_meta(train_dir).num_rows
    if lo.train_samples > train_rows:
        raise SparkcnnError(f"{cfg.source}: localise.train_samples {lo.train_samples} is more than the "
                            f"{train_rows} rows of {train_dir}")
    trials = []
    variants = [("plain", 0, 0.0), ("shifted", lo.shift, 0.0)]
    if lo.background > 0:
        variants.append(("shifted_background", lo.shift, lo.background))
    for name, shift, background in variants:
        settings = dict(architecture="mnist_cnn", kernel_size=None, filters=None, dense_width=None,
                        optimizer="adam", learning_rate=0.001, batch_size=lo.batch_size,
                        train_samples=lo.train_samples, budget="epochs", epochs=lo.epochs, steps=1,
                        scramble=False, shift=shift, background=background)
        trials.append(TrialSpec(point=len(trials), repeat=0, settings=settings,
                                train_path=resolve(train_dir), test_path=resolve(test_dir),
                                storage=storage.active_context(),
                                input_shape=meta.shape, num_classes=meta.num_classes + (background > 0),
                                seed=derive_seed(lo.seed, "localise-model"),   # same init and order for both
                                data_seed=derive_seed(lo.seed, "localise-rows"), scramble_seed=0,
                                threads=threads_per_task(spark), return_model=True, meta={"name": name}))
    logger.info(f"[localise] training mnist_cnn {', '.join(v[0] for v in variants)} (shifts up to {lo.shift}px) on "
                f"{lo.train_samples} rows, {lo.epochs} epochs, as {len(trials)} Spark tasks")
    results = run_trials(spark, trials, "sparkcnn localise: train " + ", ".join(v[0] for v in variants))
    return {r["meta"]["name"]: r for r in results}


def heatmaps_with_spark(spark, model_bytes: bytes, canvases: np.ndarray, threads: int, batch_size: int = 4):
    """(N, H', W', K) class-probability maps of the canvases, computed by Spark tasks."""
    import pandas as pd
    n, h, w, c = canvases.shape
    frame = pd.DataFrame({records.ID: np.arange(n, dtype=np.int64), records.HEIGHT: h, records.WIDTH: w,
                          records.CHANNELS: c, records.IMAGE: [canvases[i].tobytes() for i in range(n)]})
    parts = max(1, min(n, spark.sparkContext.defaultParallelism))
    df = spark.createDataFrame(frame, CANVAS_DDL).repartition(parts)
    model_bc = spark.sparkContext.broadcast(model_bytes)
    digest = hashlib.sha256(model_bytes).hexdigest()
    mapper = functools.partial(heatmap_batches, model_bc, digest, threads, batch_size)
    rows = sorted(df.mapInArrow(mapper, HEATMAPS_DDL).collect(), key=lambda r: r[records.ID])
    if len(rows) != n:
        raise RuntimeError(f"{n} canvases in but {len(rows)} heatmaps out")
    return np.stack([np.frombuffer(r[HEATMAP], np.float32).reshape(r[HEAT_HEIGHT], r[HEAT_WIDTH], -1) for r in rows])


def localise(spark, cfg: Config, store: RunStore) -> dict:
    lo = cfg.localise
    test_dir = cfg.dataset_dir(lo.split)
    meta = records.read_meta(test_dir)
    threads = threads_per_task(spark)
    if lo.compare:
        trained = _train_pair(spark, cfg, meta)
        models = {name: r["model_keras"] for name, r in trained.items()}
        training = {name: {k: r[k] for k in ("test_accuracy", "epoch_test_accuracy", "train_seconds", "params")}
                    for name, r in trained.items()}
    else:
        models = {"run": storage.read_bytes(store.require(store.model_path, "train"))}
        training = {}
    digits, labels = load_split(resolve(test_dir), meta.shape)
    canvases, placements = compose(digits, labels, lo.images, lo.canvas, lo.cell, lo.fill, lo.seed)
    window = meta.height
    out_dir = storage.join(store.root, "localise")
    report = {"composites": {"images": lo.images, "canvas": lo.canvas, "cell": lo.cell, "fill": lo.fill,
                             "seed": lo.seed, "digits": len(placements), "split": lo.split},
              "models": {}}
    context, test_path = storage.active_context(), resolve(test_dir)
    with atomic_dir(out_dir, local_build=True) as staging:
        os.makedirs(staging)
        with open(os.path.join(staging, "placements.json"), "w") as f:
            json.dump([p.__dict__ for p in placements], f)
        for name, model_bytes in models.items():
            t0 = time.perf_counter()
            equiv = spark.sparkContext.parallelize([0], 1).map(
                lambda _, b=model_bytes: check_equivalence(b, test_path, meta.shape, threads, context)).first()
            t1 = time.perf_counter()
            heat = heatmaps_with_spark(spark, model_bytes, canvases, threads)
            seconds = time.perf_counter() - t1
            stride = window_geometry(lo.canvas, window, heat.shape[1])
            background = heat.shape[-1] == meta.num_classes + 1   # the model learnt a background class
            scores = localisation_scores(heat, placements, window, stride, lo.threshold, lo.tolerance, background)
            # the raw detector output, for analyses beyond the scores here (float16: 6 MB for 32 canvases)
            os.makedirs(os.path.join(staging, name), exist_ok=True)
            np.save(os.path.join(staging, name, "heatmaps.npy"), heat.astype(np.float16))
            for k in range(min(lo.heatmap_images, len(canvases))):
                write_heatmap_pngs(os.path.join(staging, name, "heatmaps"), f"composite{k}", canvases[k], heat[k],
                                   window, stride, lo.threshold,
                                   list(meta.class_names) + (["background"] if background else []))
            report["models"][name] = dict(equivalence=equiv, localisation=scores, heatmap_seconds=round(seconds, 2),
                                          equivalence_seconds=round(t1 - t0, 2), training=training.get(name))
            logger.info(f"[localise] {name}: FCN == classifier on {equiv['rows']} digits "
                        f"(max |dp| {equiv['max_abs_diff']:.2e}, argmax agree {equiv['argmax_agree']}); "
                        f"area_rate {scores['area_rate']:.3f}, peak_rate {scores['peak_rate']:.3f}, "
                        f"background hits {scores['background_hit_rate']:.3f}, recall {scores['recall']:.3f}, "
                        f"precision {scores['precision']:.3f} over {scores['digits']} digits ({seconds:.1f}s)")
        write_json_atomic(os.path.join(staging, "localisation.json"), report)
        with open(os.path.join(staging, "results.md"), "w") as f:
            f.write(results_markdown(report))
    logger.info(f"[localise] -> {storage.join(resolve(out_dir), 'results.md')}")
    return report


def results_markdown(report: dict) -> str:
    import pandas as pd
    rows = []
    for name, m in report["models"].items():
        s, e, t = m["localisation"], m["equivalence"], m["training"] or {}
        rows.append({"model": name, "area_rate": s["area_rate"], "area_accuracy": s["area_accuracy"],
                     "peak_rate": s["peak_rate"], "background_hit_rate": s["background_hit_rate"],
                     "recall": s["recall"], "precision": s["precision"],
                     "false_hits_per_image": s["false_hits_per_image"], "digits": s["digits"],
                     "test_accuracy": t.get("test_accuracy", float("nan")),
                     "fcn_max_abs_diff": e["max_abs_diff"], "fcn_identical_predictions": e["identical_predictions"]})
    c = report["composites"]
    head = (f"# Fully-convolutional localisation\n\n{c['images']} composites of {c['canvas']}x{c['canvas']} pixels, "
            f"{c['digits']} digits from the {c['split']} split (cell {c['cell']}, fill {c['fill']}, seed {c['seed']}).\n\n")
    legend = ("\narea_rate: digits whose own class is the top class in most windows centred within a quarter "
              "digit of them; area_accuracy: the same per window; peak_rate: digits whose own class peaks, above "
              "the threshold, at their centre; background_hit_rate: digit-free windows with a class above the "
              "threshold (see pipelines/localise/composites.py); where a model has a background class, a window whose top "
              "class is background names no digit.\n")
    return head + to_markdown(pd.DataFrame(rows)) + legend
