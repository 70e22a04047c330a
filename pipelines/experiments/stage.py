"""Driver side of experiments: expand the conf's grid into trials, run them as Spark tasks, tabulate, plot.

`sparkcnn experiment --conf conf/experiments/<name>.yaml` trains every grid
point `repeats` times.  Each (point, repeat) is one Spark task running one
single-process trainer (pipelines.training.trial_remote.run_trial) on spark.task.cpus
cores, so a cluster with as many slots as trials finishes the sweep in the
time of its slowest trial.  Results land in runs/<run>/experiment/,
published atomically:

  results.csv / results.md   one row per grid point: test accuracy mean and
                             standard error over repeats, parameters, time
  epochs.csv                 test error per epoch (mean, standard error)
  trials.csv                 one row per trial (every repeat)
  accuracy.png, time.png     accuracy and training time against plot_x
  epochs.png                 test error per epoch, one line per grid point
  experiment.json            the settings, wall time and parallel speed-up
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from typing import List

import numpy as np

from pipelines.core import records, storage
from pipelines.core.config import Config
from pipelines.core.errors import SparkcnnError
from pipelines.core.figures import agg_pyplot
from pipelines.core.markdown import to_markdown
from pipelines.core.store import RunStore, atomic_dir, resolve
from pipelines.core.tf_runtime import threads_per_task
from pipelines.experiments.section import GRID_AXES, LATER_AXES, ExperimentSection
from pipelines.training.trial_remote import DEFAULT_LEARNING_RATES, TrialSpec
from pipelines.training.trials import derive_seed, run_trials
from pipelines.training.variants import check_architecture

logger = logging.getLogger("sparkcnn.experiments")


class ExperimentError(SparkcnnError, ValueError):
    """The experiment cannot run as configured; the message names the conf key."""


def grid_points(section: ExperimentSection, source: str = "<conf>") -> List[dict]:
    """The cartesian product of the grid over the section's defaults; every setting resolved."""
    base = {axis: getattr(section, axis) for axis in GRID_AXES}
    axes = list(section.grid or {})
    points = []
    for combo in itertools.product(*(section.grid[a] for a in axes)):
        point = dict(base, **dict(zip(axes, combo)))
        if point["learning_rate"] is None:
            point["learning_rate"] = DEFAULT_LEARNING_RATES[point["optimizer"]]
        try:
            check_architecture(point["architecture"], point["kernel_size"], point["filters"], point["dense_width"])
        except KeyError as exc:
            key = "experiment.grid.architecture" if "architecture" in axes else "experiment.architecture"
            raise ExperimentError(f"{source}: {key}: {exc.args[0]}") from None
        points.append(point)
    return points


def shown_axes(section: ExperimentSection) -> List[str]:
    """The columns that tell grid points apart (the learning rate too when the optimizer varies)."""
    axes = list(section.grid or {}) or ["architecture"]
    if "optimizer" in axes and "learning_rate" not in axes:
        axes.append("learning_rate")
    return axes


def make_trials(cfg: Config, threads: int, return_model: bool = False) -> List[TrialSpec]:
    e = cfg.experiment
    train_dir, test_dir = cfg.dataset_dir("train"), cfg.dataset_dir("test")
    train_meta, test_meta = records.read_meta(train_dir), records.read_meta(test_dir)
    if train_meta.shape != test_meta.shape:
        raise ExperimentError(f"{train_dir} holds {train_meta.shape} images but {test_dir} {test_meta.shape}")
    points = grid_points(e, cfg.source)
    for point in points:
        if point["train_samples"] > train_meta.num_rows:
            raise ExperimentError(f"{cfg.source}: experiment train_samples {point['train_samples']} is more than "
                                  f"the {train_meta.num_rows} rows of {train_dir}")
    if e.test_samples is not None and e.test_samples > test_meta.num_rows:
        raise ExperimentError(f"{cfg.source}: experiment.test_samples {e.test_samples} is more than the "
                              f"{test_meta.num_rows} rows of {test_dir}")
    trials = []
    for index, point in enumerate(points):
        seeded = {k: v for k, v in point.items() if not (k in LATER_AXES and v == LATER_AXES[k])}
        for repeat in range(e.repeats):
            trials.append(TrialSpec(
                point=index, repeat=repeat, settings=point,
                train_path=resolve(train_dir), test_path=resolve(test_dir), storage=storage.active_context(),
                input_shape=train_meta.shape, num_classes=train_meta.num_classes + (point["background"] > 0),
                seed=derive_seed(e.seed, "trial", seeded, repeat), data_seed=derive_seed(e.seed, "rows", repeat),
                scramble_seed=derive_seed(e.seed, "scramble"), test_samples=e.test_samples,
                threads=threads, return_model=return_model))
    return trials


# ---- tables --------------------------------------------------------------------------------------------------

def _cell(value) -> str:
    if isinstance(value, (list, tuple)):
        return "-".join(str(v) for v in value)
    if value is None:
        return ""
    return str(value)


def standard_error(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def trials_table(points: List[dict], results: List[dict], axes: List[str]):
    import pandas as pd
    rows = []
    for r in results:
        point = points[r["point"]]
        row = {a: _cell(point[a]) for a in axes}
        row.update(repeat=r["repeat"], seed=r["seed"], test_accuracy=r["test_accuracy"], params=r["params"],
                   train_seconds=r["train_seconds"], eval_seconds=r["eval_seconds"], steps=r["steps"],
                   samples_seen=r["samples_seen"], host=r["host"],
                   epoch_test_accuracy=" ".join(f"{a:.4f}" for a in r["epoch_test_accuracy"]))
        rows.append(row)
    return pd.DataFrame(rows)


def results_table(points: List[dict], results: List[dict], axes: List[str]):
    """One row per grid point, in grid order: mean and standard error over repeats."""
    import pandas as pd
    rows = []
    for index, point in enumerate(points):
        mine = [r for r in results if r["point"] == index]
        acc = [r["test_accuracy"] for r in mine]
        secs = [r["train_seconds"] for r in mine]
        row = {a: _cell(point[a]) for a in axes}
        row.update(repeats=len(mine), test_accuracy_mean=float(np.mean(acc)), test_accuracy_se=standard_error(acc),
                   test_error_mean=1.0 - float(np.mean(acc)), params=mine[0]["params"],
                   train_seconds_mean=float(np.mean(secs)), train_seconds_se=standard_error(secs),
                   steps=mine[0]["steps"], samples_seen=mine[0]["samples_seen"])
        rows.append(row)
    return pd.DataFrame(rows)


def epochs_table(points: List[dict], results: List[dict], axes: List[str]):
    """Test error after each epoch (mean and standard error over repeats) per grid point."""
    import pandas as pd
    rows = []
    for index, point in enumerate(points):
        curves = np.array([r["epoch_test_accuracy"] for r in results if r["point"] == index], dtype=float)
        for epoch in range(curves.shape[1]):
            errors = 1.0 - curves[:, epoch]
            rows.append(dict({a: _cell(point[a]) for a in axes}, epoch=epoch + 1,
                             test_error_mean=float(errors.mean()), test_error_se=standard_error(errors)))
    return pd.DataFrame(rows)


# ---- plots ---------------------------------------------------------------------------------------------------

def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_against(points: List[dict], results: List[dict], x_axis: str, metric: str, ylabel: str, path: str,
                 series_axes: List[str]) -> None:
    """Mean +- standard error of a metric against one grid axis, one line per combination of the others."""
    plt = agg_pyplot()

    xs = []
    for p in points:
        if p[x_axis] not in xs:
            xs.append(p[x_axis])
    numeric = _numeric(xs)
    series: dict = {}
    for index, p in enumerate(points):
        label = ", ".join(f"{a}={_cell(p[a])}" for a in series_axes if a != x_axis) or metric
        values = [r[metric] for r in results if r["point"] == index]
        series.setdefault(label, []).append((p[x_axis], float(np.mean(values)), standard_error(values)))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (label, pts) in enumerate(series.items()):
        if numeric:
            pts.sort(key=lambda t: t[0])
            pos = [t[0] for t in pts]
        else:
            pos = [xs.index(t[0]) + 0.08 * (k - (len(series) - 1) / 2) for t in pts]
        se = [0.0 if math.isnan(t[2]) else t[2] for t in pts]
        ax.errorbar(pos, [t[1] for t in pts], yerr=se, marker="o", capsize=3, label=label,
                    linestyle="-" if numeric else "none")
    if numeric:
        if min(xs) > 0 and max(xs) / min(xs) >= 16:
            ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(xs))
        ax.set_xticklabels([_cell(x) for x in sorted(xs)])
    else:
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels([_cell(x) for x in xs], rotation=30, ha="right")
    ax.set_xlabel(x_axis)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_epochs(points: List[dict], results: List[dict], axes: List[str], path: str) -> None:
    plt = agg_pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, p in enumerate(points):
        curves = np.array([r["epoch_test_accuracy"] for r in results if r["point"] == index], dtype=float)
        errors = 1.0 - curves
        mean = errors.mean(axis=0)
        se = errors.std(axis=0, ddof=1) / math.sqrt(len(errors)) if len(errors) > 1 else np.zeros_like(mean)
        epochs = np.arange(1, len(mean) + 1)
        label = ", ".join(f"{a}={_cell(p[a])}" for a in axes)
        ax.plot(epochs, mean, marker="o", label=label)
        ax.fill_between(epochs, mean - se, mean + se, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(out_dir: str, section: ExperimentSection, points: List[dict], results: List[dict],
                  summary: dict) -> dict:
    axes = shown_axes(section)
    os.makedirs(out_dir)
    results_frame = results_table(points, results, axes)
    results_frame.to_csv(os.path.join(out_dir, "results.csv"), index=False)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(to_markdown(results_frame))
    trials_table(points, results, axes).to_csv(os.path.join(out_dir, "trials.csv"), index=False)
    epochs_table(points, results, axes).to_csv(os.path.join(out_dir, "epochs.csv"), index=False)
    x_axis = section.plot_x or axes[0]
    plot_against(points, results, x_axis, "test_accuracy", "test accuracy (mean ± s.e.)",
                 os.path.join(out_dir, "accuracy.png"), axes)
    plot_against(points, results, x_axis, "train_seconds", "training seconds (mean ± s.e.)",
                 os.path.join(out_dir, "time.png"), axes)
    plot_epochs(points, results, axes, os.path.join(out_dir, "epochs.png"))
    with open(os.path.join(out_dir, "experiment.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=str)
    return {"table": results_frame}


def experiment(spark, cfg: Config, store: RunStore) -> dict:
    e = cfg.experiment
    threads = threads_per_task(spark)
    trials = make_trials(cfg, threads)
    points = [t.settings for t in trials if t.repeat == 0]
    slots = spark.sparkContext.defaultParallelism
    logger.info(f"[experiment] {len(points)} grid points x {e.repeats} repeats = {len(trials)} trials, "
                f"{slots} task slots x {threads} TF threads")
    t0 = time.perf_counter()
    results = run_trials(spark, trials)
    wall = time.perf_counter() - t0
    busy = sum(r["train_seconds"] + r["eval_seconds"] for r in results)
    summary = {"trials": len(trials), "grid_points": len(points), "repeats": e.repeats,
               "wall_seconds": round(wall, 2), "trial_seconds_total": round(busy, 2),
               "parallel_speedup": round(busy / wall, 2) if wall else None, "task_slots": slots,
               "threads_per_trial": threads, "settings": cfg.to_dict()["experiment"], "points": points}
    out_dir = storage.join(store.root, "experiment")
    with atomic_dir(out_dir, local_build=True) as staging:
        written = write_outputs(staging, e, points, results, summary)
    logger.info(to_markdown(written["table"]).rstrip())
    logger.info(f"[experiment] {len(trials)} trials in {wall:.0f}s wall ({busy:.0f}s of trial time, "
                f"{summary['parallel_speedup']}x parallel) -> {storage.join(resolve(out_dir), 'results.md')}")
    return {"dir": out_dir, "wall_seconds": wall, "trials": len(trials)}
