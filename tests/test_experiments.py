"""Experiment sweeps: grid expansion and its errors, the seed-003 variants, the pixel scramble, and one
tiny real sweep (real MNIST rows in real Parquet, trials as real Spark tasks) with its tables and plots."""
import os

import numpy as np
import pandas as pd
import pytest

from pipelines.augmentation.draws import scramble_permutation
from pipelines.augmentation.photometric import permute_pixels
from pipelines.augmentation.pipeline import Pipeline
from pipelines.core.config import ConfigError
from pipelines.experiments.stage import (
    ExperimentError,
    grid_points,
    make_trials,
    shown_axes,
)
from pipelines.stages import load_config
from pipelines.training.trial_remote import shift_images, trial_data


def test_grid_is_the_product_over_the_defaults_with_optimizer_learning_rates():
    cfg = load_config(text="experiment: {batch_size: 32, grid: {optimizer: [sgd, adadelta, adam], "
                           "kernel_size: [3, 5]}}")
    points = grid_points(cfg.experiment)
    assert len(points) == 6
    assert {(p["optimizer"], p["kernel_size"]) for p in points} == {(o, k) for o in ("sgd", "adadelta", "adam")
                                                                    for k in (3, 5)}
    assert all(p["batch_size"] == 32 and p["architecture"] == "baseline" for p in points)
    assert {p["optimizer"]: p["learning_rate"] for p in points} == {"sgd": 0.01, "adadelta": 1.0, "adam": 0.001}
    assert shown_axes(cfg.experiment) == ["optimizer", "kernel_size", "learning_rate"]


@pytest.mark.parametrize("text, message", [
    ("experiment: {grid: {batchsize: [1]}}", r"experiment.grid.batchsize: .*did you mean 'batch_size'"),
    ("experiment: {grid: {batch_size: 16}}", r"experiment.grid.batch_size: expected a non-empty list"),
    ("experiment: {grid: {batch_size: [16, 0]}}", r"experiment.grid.batch_size\[1\]: 0 is below the minimum 1"),
    ("experiment: {grid: {batch_size: [16, 16]}}", r"experiment.grid.batch_size: 16 is listed twice"),
    ("experiment: {grid: {optimizer: [adam, lamb]}}", r"experiment.grid.optimizer\[1\]: 'lamb' is not one of"),
    ("experiment: {grid: {filters: [[32, 0]]}}", r"experiment.grid.filters\[0\]: expected a list of positive"),
    ("experiment: {grid: {budget: [epochs, time]}}", r"experiment.grid.budget\[1\]: 'time' is not one of"),
    ("experiment: {grid: [batch_size]}", r"experiment.grid: expected a mapping"),
    ("experiment: {plot_x: optimizer, grid: {batch_size: [1, 2]}}", r"experiment.plot_x 'optimizer' is not a grid axis"),
    ("experiment: {repeats: 0}", r"experiment.repeats: 0 is below the minimum 1"),
])
def test_bad_grid_names_the_key(text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(text=text)


@pytest.mark.parametrize("text, message", [
    ("experiment: {grid: {architecture: [baseline, resnet]}}",
     r"experiment.grid.architecture: unknown architecture 'resnet'; variants: baseline"),
    ("experiment: {architecture: torres, kernel_size: 5}",
     r"experiment.architecture: architecture 'torres' is a fixed zoo model; kernel_size only apply"),
])
def test_bad_architecture_names_the_key(text, message):
    with pytest.raises(ExperimentError, match=message):
        grid_points(load_config(text=text).experiment)


@pytest.mark.slow   # over 5 s: make test, not the everyday tier
def test_variants_baseline_is_mnist_cnn_and_every_modification_changes_it():
    from pipelines.training.variants import NAMED, build_architecture
    counts = {name: build_architecture(name, (28, 28, 1), 10).count_params() for name in NAMED}
    assert counts["baseline"] == 1_199_882  # the zoo's mnist_cnn
    assert counts["one_conv"] == 32 * 10 + 13 * 13 * 32 * 128 + 128 + 1290
    assert counts["no_dropout"] == counts["baseline"]  # dropout has no weights; all others differ
    others = [c for n, c in counts.items() if n not in ("baseline", "no_dropout")]
    assert len(set(others)) == len(others) and counts["baseline"] not in others
    assert build_architecture("baseline", (28, 28, 1), 10, kernel_size=5, filters=[8, 16],
                              dense_width=32).count_params() == (
        25 * 8 + 8 + 25 * 8 * 16 + 16 + 10 * 10 * 16 * 32 + 32 + 330)


def test_scramble_is_a_seeded_permutation_moving_whole_pixels():
    perm = scramble_permutation(3, 28, 28)
    assert sorted(perm) == list(range(784)) and not np.array_equal(perm, np.arange(784))
    assert np.array_equal(perm, scramble_permutation(3, 28, 28))
    assert not np.array_equal(perm, scramble_permutation(4, 28, 28))
    rgb = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    out = permute_pixels(rgb, scramble_permutation(1, 4, 4))
    assert sorted(map(tuple, out[0].reshape(-1, 3))) == sorted(map(tuple, rgb[0].reshape(-1, 3)))


def test_shift_moves_pixels_within_the_bound_fills_with_zeros_and_is_the_augment_op():
    img = np.zeros((1, 12, 12, 1), np.uint8)
    img[0, 5, 6, 0] = 200
    many = np.repeat(img, 50, axis=0)
    rows = np.arange(50)
    out = shift_images(many, 2, seed=3, rows=rows, epoch=0)
    ys, xs = np.mgrid[:12, :12]
    mass = out[..., 0].astype(np.float64)
    assert np.all(np.abs(mass.sum(axis=(1, 2)) - 200) <= 4)                # moved, not lost (bilinear)
    cy, cx = (mass * ys).sum(axis=(1, 2)) / mass.sum(axis=(1, 2)), (mass * xs).sum(axis=(1, 2)) / mass.sum(axis=(1, 2))
    assert np.all(np.abs(cy - 5) <= 2.01) and np.all(np.abs(cx - 6) <= 2.01) and np.ptp(cx) > 1.5
    assert np.array_equal(out, shift_images(many, 2, seed=3, rows=rows, epoch=0))       # seeded per image
    assert not np.array_equal(out, shift_images(many, 2, seed=3, rows=rows, epoch=1))   # a new draw each pass
    steps = [{"op": "shift", "x": [-2 / 12, 2 / 12], "y": [-2 / 12, 2 / 12]}]
    assert np.array_equal(out, Pipeline.parse(steps, seed=3).apply(many, rows, np.ones(50, np.int64)))


@pytest.fixture(scope="module")
def tiny_mnist(spark, tmp_path_factory, mnist_files):
    """600 training and 300 test rows of real MNIST, ingested into real Parquet datasets."""
    from pipelines.ingest.arrays import plan_splits, write_split
    from pipelines.ingest.sources import open_idx_pair
    root = tmp_path_factory.mktemp("exp")
    train = open_idx_pair(mnist_files["train_images"], mnist_files["train_labels"], str(root / "s"))
    test = open_idx_pair(mnist_files["test_images"], mnist_files["test_labels"], str(root / "s"))
    names = [str(k) for k in range(10)]
    for plan in plan_splits(train, test, limit_train=600, limit_test=300):
        write_split(spark, plan, str(root / "datasets" / "mnist" / plan.split), "mnist", names, 64, 1)
    return root


def _conf(root, grid: str):
    return load_config(text=f"""
run: {{name: tiny, runs_dir: {root}/runs}}
data: {{datasets_dir: {root}/datasets}}
experiment: {{train_samples: 256, epochs: 1, batch_size: 64, repeats: 1, scramble: true, seed: 5, grid: {grid}}}
""")


def test_scrambled_trials_share_one_permutation_for_train_and_test(tiny_mnist):
    from pipelines.training.trial_remote import load_split
    cfg = _conf(tiny_mnist, "{optimizer: [adam, sgd]}")
    a, b = make_trials(cfg, threads=1)
    assert a.scramble_seed == b.scramble_seed and a.data_seed == b.data_seed and a.seed != b.seed
    train_x, train_y, test_x, test_y = trial_data(a)
    plain_train, labels = load_split(a.train_path, a.input_shape)
    plain_test, _ = load_split(a.test_path, a.input_shape)
    perm = scramble_permutation(a.scramble_seed, 28, 28)
    rows = np.sort(np.random.default_rng(a.data_seed).choice(600, 256, replace=False))
    assert np.array_equal(train_x, permute_pixels(plain_train[rows], perm)) and np.array_equal(train_y, labels[rows])
    assert np.array_equal(test_x, permute_pixels(plain_test, perm)) and len(test_y) == 300
    assert not np.array_equal(test_x, plain_test)
    # one permutation per seed: a sweep scrambles exactly as `sparkcnn augment` (two generators used to differ)
    by_augment = Pipeline.parse([{"op": "scramble", "seed": a.scramble_seed}]).apply(
        plain_test, np.arange(300), np.ones(300, np.int64))
    assert np.array_equal(test_x, by_augment)


@pytest.mark.slow   # trains a sweep through Spark
def test_tiny_sweep_through_spark_writes_tables_and_plots(spark, tiny_mnist):
    from pipelines.core.store import RunStore
    from pipelines.experiments.stage import experiment
    cfg = _conf(tiny_mnist, "{batch_size: [32, 128]}")
    store = RunStore(cfg.run_dir)
    out = experiment(spark, cfg, store)["dir"]
    results = pd.read_csv(os.path.join(out, "results.csv"))
    assert list(results.columns) == ["batch_size", "repeats", "test_accuracy_mean", "test_accuracy_se",
                                     "test_error_mean", "params", "train_seconds_mean", "train_seconds_se",
                                     "steps", "samples_seen"]
    assert results["batch_size"].tolist() == [32, 128] and results["steps"].tolist() == [8, 2]
    assert (results["params"] == 1_199_882).all() and (results["train_seconds_mean"] > 0).all()
    assert results["test_accuracy_mean"].between(0, 1).all()
    trials = pd.read_csv(os.path.join(out, "trials.csv"))
    assert len(trials) == 2 and trials["seed"].nunique() == 2
    epochs = pd.read_csv(os.path.join(out, "epochs.csv"))
    assert epochs["epoch"].tolist() == [1, 1]
    md = open(os.path.join(out, "results.md")).read()
    assert md.startswith("| batch_size | repeats | test_accuracy_mean |") and "1,199,882" in md
    for png in ("accuracy.png", "time.png", "epochs.png"):
        with open(os.path.join(out, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow   # over 3 s: make test, not the everyday tier
def test_a_background_axis_adds_a_class_and_leaves_earlier_seeds_alone(tiny_mnist):
    import dataclasses

    from pipelines.core.tf_runtime import load_model_bytes
    from pipelines.training.trial_remote import run_trial
    from pipelines.training.trials import derive_seed
    plain, with_bg = make_trials(_conf(tiny_mnist, "{background: [0, 0.5]}"), threads=1)
    assert (plain.num_classes, with_bg.num_classes) == (10, 11)
    # a point at the default background draws the seed it drew before the setting existed
    before = {k: v for k, v in plain.settings.items() if k != "background"}
    assert plain.seed == derive_seed(5, "trial", before, 0) != with_bg.seed
    result = run_trial(dataclasses.replace(with_bg, return_model=True))
    assert load_model_bytes(result["model_keras"]).output_shape == (None, 11)
    assert result["samples_seen"] == 256 and 0.0 <= result["test_accuracy"] <= 1.0
