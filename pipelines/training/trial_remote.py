"""Executor side of experiments: one trial = one single-process Keras training inside one Spark task.

A sweep's trials are small models on small data, so running each on its own
core beats spreading one over many: the cluster runs the sweep in the time of
its slowest trial.  Everything a trial needs arrives in one picklable
TrialSpec; it reads the Parquet datasets itself with pyarrow (kept in a
module-level cache, so a reused Python worker reads them once per sweep),
sets TensorFlow to the task's cores, trains, and returns plain numbers (and,
when asked, the model as bytes).

The pixel scramble and the random shift are the augmentation stage's own
(pipelines.augment): the same seed gives the same permutation in a sweep and in
`sparkcnn augment`.  A trial
can also learn a background class (setting "background", what
`sparkcnn localise` trains its detector with): off-centre and empty windows, so that a
fully-convolutional detector has somewhere to put windows that hold no
whole digit instead of calling them some digit.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from pipelines.augmentation.draws import scramble_permutation
from pipelines.augmentation.photometric import permute_pixels
from pipelines.augmentation.pipeline import Pipeline
from pipelines.core import records, storage
from pipelines.core.parquet_remote import read_table
from pipelines.core.tf_runtime import configure_threads, model_to_bytes

# The Keras 2.0-era default learning rates the seed's optimizer comparison ran with
# (Keras 2.15's Adadelta default of 0.001 barely moves in a few epochs).
DEFAULT_LEARNING_RATES = {"sgd": 0.01, "rmsprop": 0.001, "adagrad": 0.01, "adadelta": 1.0, "adam": 0.001}


@dataclass(frozen=True)
class TrialSpec:
    point: int                 # index of the grid point
    repeat: int
    settings: dict             # every trial setting (GRID_AXES), resolved
    train_path: str
    test_path: str
    input_shape: tuple
    num_classes: int
    seed: int                  # weights, dropout, shuffling and shifts of this (point, repeat)
    data_seed: int             # which training rows: shared by every point of one repeat
    scramble_seed: int         # one permutation per experiment
    test_samples: Optional[int] = None
    threads: int = 1
    return_model: bool = False
    meta: dict = field(default_factory=dict)  # carried through to the result untouched
    storage: storage.StorageContext = storage.StorageContext()   # the driver's, for datasets on a remote store


def shift_images(images: np.ndarray, max_shift: int, seed: int, rows: np.ndarray, epoch: int) -> np.ndarray:
    """Each image moved by up to `max_shift` pixels along x and y; uncovered pixels are 0.

    This is the augment stage's shift op with its per-image seeded draws (image `rows[i]`
    in pass `epoch`), so a trial and `sparkcnn augment` shift images the same way.
    """
    n, h, w, _ = images.shape
    steps = [{"op": "shift", "x": [-max_shift / w, max_shift / w], "y": [-max_shift / h, max_shift / h]}]
    return Pipeline.parse(steps, seed).apply(images, rows, np.full(n, epoch + 1, np.int64))


def background_windows(images: np.ndarray, count: int, rng: np.random.Generator, empty: float = 0.2) -> np.ndarray:
    """`count` digit-sized windows that hold no centred digit: a random digit moved so that its centre
    is more than half a window away in some axis (at most a part of it shows, as between digits on a
    composite), or, for a share `empty`, a blank window."""
    n, h, w, _ = images.shape
    rows = rng.integers(0, n, size=count)
    dy = rng.integers(-h, h + 1, size=count)
    dx = rng.integers(-w, w + 1, size=count)
    near = (np.abs(dy) <= h // 2) & (np.abs(dx) <= w // 2)
    along_y = rng.random(count) < 0.5
    far = rng.integers(h // 2 + 1, h + 1, size=count) * rng.choice([-1, 1], size=count)
    dy = np.where(near & along_y, far, dy)
    dx = np.where(near & ~along_y, np.clip(far, -w, w), dx)
    padded = np.pad(images, ((0, 0), (h, h), (w, w), (0, 0)))
    out = np.empty((count,) + images.shape[1:], images.dtype)
    for i in range(count):
        out[i] = padded[rows[i], h + dy[i]:2 * h + dy[i], w + dx[i]:2 * w + dx[i]]
    out[rng.random(count) < empty] = 0
    return out


def with_background(x: np.ndarray, y: np.ndarray, share: float, label: int, rng: np.random.Generator):
    """The training rows plus share * len(rows) background windows labelled `label`."""
    count = int(round(share * len(y)))
    if count == 0:
        return x, y
    extra = background_windows(x, count, rng)
    return np.concatenate([x, extra]), np.concatenate([y, np.full(count, label, y.dtype)])


_DATASETS: dict = {}


def load_split(path: str, shape) -> tuple:
    """(images, labels) of a dataset in id order; cached per worker for the whole sweep."""
    if path not in _DATASETS:
        table = read_table(path, columns=[records.ID, records.LABEL, records.IMAGE])
        order = np.argsort(table.column(records.ID).to_numpy(), kind="stable")
        images = records.decode_images(table.column(records.IMAGE), shape)[order]
        labels = table.column(records.LABEL).to_numpy().astype(np.int32)[order]
        if len(_DATASETS) >= 4:  # a worker serves one sweep at a time; do not grow without bound
            _DATASETS.clear()
        _DATASETS[path] = (images, labels)
    return _DATASETS[path]


def trial_data(spec: TrialSpec):
    s = spec.settings
    with storage.using(spec.storage):
        train_x, train_y = load_split(spec.train_path, spec.input_shape)
        test_x, test_y = load_split(spec.test_path, spec.input_shape)
    n = int(s["train_samples"])
    if n > len(train_y):
        raise ValueError(f"{spec.train_path}: train_samples {n} but the split has {len(train_y)} rows")
    rows = np.sort(np.random.default_rng(spec.data_seed).choice(len(train_y), size=n, replace=False))
    train_x, train_y = train_x[rows], train_y[rows]
    if spec.test_samples is not None:
        test_x, test_y = test_x[:spec.test_samples], test_y[:spec.test_samples]
    if s["scramble"]:
        permutation = scramble_permutation(spec.scramble_seed, *spec.input_shape[:2])
        train_x, test_x = permute_pixels(train_x, permutation), permute_pixels(test_x, permutation)
    return train_x, train_y, test_x, test_y


def run_trial(spec: TrialSpec) -> dict:
    import tensorflow as tf

    from pipelines.training.variants import build_architecture
    from pipelines.training.zoo import make_optimizer

    configure_threads(spec.threads)
    s = spec.settings
    train_x, train_y, test_x, test_y = trial_data(spec)
    tf.keras.utils.set_random_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    background = float(s["background"])   # > 0: the background class is the last of spec.num_classes
    model = build_architecture(s["architecture"], spec.input_shape, spec.num_classes,
                               s["kernel_size"], s["filters"], s["dense_width"])
    model.compile(optimizer=make_optimizer(s["optimizer"], float(s["learning_rate"])),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    batch = int(s["batch_size"])

    def test_accuracy() -> float:
        probs = model.predict(test_x, batch_size=1000, verbose=0)
        return float(np.mean(probs.argmax(axis=1) == test_y))

    epoch_accuracy, epoch_seconds = [], []
    eval_seconds = 0.0
    if s["budget"] == "steps":
        # Exactly `steps` mini-batches: reshuffled passes over the rows, cut where the budget ends.
        steps = int(s["steps"])
        passes = math.ceil(steps * batch / len(train_y))
        order = np.concatenate([rng.permutation(len(train_y)) for _ in range(passes)])[:steps * batch]
        x, y = train_x[order], train_y[order]
        if s["shift"]:
            x = shift_images(x, s["shift"], spec.seed, np.arange(len(x)), 0)
        x, y = with_background(x, y, background, spec.num_classes - 1, rng)
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=background > 0, verbose=0)
        epoch_seconds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        epoch_accuracy.append(test_accuracy())
        eval_seconds += time.perf_counter() - t0
        samples_seen = steps * batch
    else:
        for epoch in range(int(s["epochs"])):
            x = shift_images(train_x, s["shift"], spec.seed, np.arange(len(train_x)), epoch) if s["shift"] else train_x
            x, y = with_background(x, train_y, background, spec.num_classes - 1, rng)
            t0 = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, shuffle=True, verbose=0)
            epoch_seconds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            epoch_accuracy.append(test_accuracy())
            eval_seconds += time.perf_counter() - t0
        steps = int(s["epochs"]) * math.ceil(len(train_y) / batch)
        samples_seen = int(s["epochs"]) * len(train_y)
    result = {
        "point": spec.point, "repeat": spec.repeat, "seed": spec.seed,
        "test_accuracy": epoch_accuracy[-1], "epoch_test_accuracy": epoch_accuracy,
        "epoch_train_seconds": epoch_seconds, "train_seconds": float(sum(epoch_seconds)),
        "eval_seconds": eval_seconds, "params": int(model.count_params()), "steps": steps,
        "samples_seen": samples_seen, "test_rows": int(len(test_y)), "threads": spec.threads,
        "host": os.uname().nodename, "meta": spec.meta,
    }
    if spec.return_model:
        result["model_keras"] = model_to_bytes(model)
    return result
