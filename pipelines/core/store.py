"""Every output path, and how outputs are published atomically, on local disks and object stores.

The API every stage uses: `atomic_dir`/`atomic_dirs` (build an output, publish it only when
complete), `resolve` (the pinned current version to read), `published_files`, `exists`, one-shot
file writes, and `RunStore` (the layout of a run directory).  How publishing works is in
pipelines.core.publish_local (symlink swap, local paths) and pipelines.core.publish_store
(versioned prefix + manifest, object stores and HDFS); who may clean whose staging is in
pipelines.core.leases.

File outputs (metrics.json, the model) are one PUT on object stores, and written to a
temporary name then `os.replace`d locally.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass

from pipelines.core import storage
from pipelines.core.leases import PublishConflict  # noqa: F401 (part of this API)
from pipelines.core.published import known, note_published, published
from pipelines.core.publish_local import new_local_staging, publish_dir
from pipelines.core.publish_store import (  # noqa: F401 (read_manifest is part of this API)
    MANIFEST,
    RemoteStaging,
    check_unchanged,
    has_output,
    new_remote_version,
    publish_version,
    read_manifest,
    remove_stale_remote,
)


def _new_staging(dest: str):
    """A fresh staging for `dest`, after clearing stale ones of killed jobs.

    Local: a sibling path that does not exist yet.  Remote: a RemoteStaging, a new version prefix
    (leased) and the manifest ETag its publish is conditional on.
    """
    if storage.is_remote(dest):
        remove_stale_remote(dest)
        return new_remote_version(dest)
    return new_local_staging(dest)


def _location(staging) -> str:
    """Where a staging (a local path or a RemoteStaging) is written."""
    return staging.location if isinstance(staging, RemoteStaging) else staging


def _has_output(staging) -> bool:
    location = _location(staging)
    return has_output(location) if storage.is_remote(location) else os.path.isdir(location)


def _discard(staging) -> None:
    """Remove a staging location that will not be published."""
    storage.remove(_location(staging))


def _publish(staging, dest: str) -> None:
    if isinstance(staging, RemoteStaging):
        note_published(dest, publish_version(staging, dest))
    else:
        publish_dir(staging, dest)
        note_published(dest)


@contextlib.contextmanager
def atomic_dir(dest: str, local_build: bool = False):
    """Yield a staging location; publish it to `dest` only if the block completes.

    The staging location does not exist yet on local disks, so Spark can write to it
    directly.  On a remote store it is the new version prefix (tasks write part files into
    it), unless `local_build`: then it is a not-yet-existing local path, for code that writes
    with plain `open()` (figures, HTML, tar members), uploaded when the block completes.
    """
    remote = storage.is_remote(dest)
    staging = _new_staging(dest)
    build = os.path.join(tempfile.mkdtemp(prefix="sparkcnn-build-"), "out") if remote and local_build else None
    try:
        yield build or _location(staging)
        if build:
            if not os.path.isdir(build):
                raise RuntimeError(f"nothing was written to {build} for {storage.redact(dest)}")
            storage.upload_dir(build, _location(staging))
    except BaseException:
        _discard(staging)
        raise
    finally:
        if build:
            shutil.rmtree(os.path.dirname(build), ignore_errors=True)
    if not _has_output(staging):
        _discard(staging)
        raise RuntimeError(f"nothing was written to {storage.redact(_location(staging))} for {storage.redact(dest)}")
    _publish(staging, dest)


@contextlib.contextmanager
def atomic_dirs(dests: list):
    """Several directory outputs of one job, published together: {dest: staging location} for the block.

    The staging folders exist when the block starts (tasks on executors write part files
    straight into them).  Nothing is published unless the whole block completes; then every
    staging folder that still exists is published, one after another, once all of them are
    complete.  A caller removes the staging of an output it decides not to write (a split
    with no rows; `storage.remove`), and that destination keeps its previous content.
    """
    stagings = {}
    try:
        for dest in dests:
            stagings[dest] = _new_staging(dest)
            storage.makedirs(_location(stagings[dest]))
        yield {dest: _location(staging) for dest, staging in stagings.items()}
    except BaseException:
        for staging in stagings.values():
            _discard(staging)
        raise
    for dest, staging in stagings.items():
        if isinstance(staging, RemoteStaging):
            check_unchanged(staging, dest)
    for dest, staging in stagings.items():
        if _has_output(staging):
            _publish(staging, dest)
        else:
            _discard(staging)


def resolve(dest: str) -> str:
    """The location holding `dest`'s current content, pinned (what a reader should open).

    Local: the version directory the link points to.  Remote: the manifest's version prefix,
    or `dest` itself when it holds plain files written by another tool (no manifest).
    Within a command, read once (pipelines/core/published.py).
    """
    return published(dest).url


def published_url(dest: str) -> str:
    """`dest`, and on a remote store the current version's URL too (what plain Spark/pyarrow readers open)."""
    if not storage.is_remote(dest):
        return dest
    return f"{storage.redact(dest)} (version {storage.redact(resolve(dest))})"


def published_entries(dest: str, suffix: str = ".parquet") -> list:
    """[(full location, manifest entry)] of the current version's files ending in `suffix`, in name order.

    Remote outputs of this project list exactly their manifest's files (nothing left by a
    killed task attempt is read), with what the manifest knows of each (bytes, rows,
    row_groups); plain folders are listed, with empty entries.
    """
    current = published(dest)
    if current.manifest:
        return [(storage.join(current.url, e["name"]), e) for e in current.manifest["files"]
                if e["name"].endswith(suffix)]
    root = current.url
    return [(storage.join(root, n), {}) for n in storage.walk_files(root)
            if n.endswith(suffix) and not os.path.basename(n).startswith(("_", "."))]


def published_files(dest: str, suffix: str = ".parquet") -> list:
    """Full locations of the current version's files ending in `suffix` (see published_entries)."""
    return [location for location, _ in published_entries(dest, suffix)]


def exists(location: str) -> bool:
    """A published output (remote: its manifest) or a file exists at `location`."""
    if not storage.is_remote(location):
        return os.path.exists(location)
    seen = known(location)
    if seen is not None:               # this command read (or published) its manifest, or found none
        return seen.version is not None or storage.isfile(location)
    return storage.exists(storage.join(location, MANIFEST)) or storage.isfile(location)


def write_bytes_atomic(dest: str, data: bytes) -> None:
    """`data` at `dest`, whole or not at all: one PUT on a store; locally a temporary beside it, renamed.

    The temporary's name starts with '.', so Spark, pyarrow and Petastorm readers of the folder
    skip it while it is written (or if a kill leaves it behind).
    """
    if storage.is_remote(dest):
        storage.put_bytes(dest, data)       # one PUT: the object appears complete or not at all
        return
    folder, name = os.path.split(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(dest: str, obj) -> None:
    write_bytes_atomic(dest, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str):
    return json.loads(storage.read_bytes(path))


RUN_MODEL = "model.keras"      # a run directory's trained model (what train.model / predict.model name a run by)


@dataclass(frozen=True)
class RunStore:
    """The layout of one run directory: <runs_dir>/<name>/... (a local path or a remote URL)."""
    root: str

    def _at(self, name: str) -> str:
        return storage.join(self.root, name)

    @property
    def model_path(self) -> str:
        return self._at(RUN_MODEL)

    @property
    def saved_model_dir(self) -> str:
        return self._at("saved_model")

    @property
    def checkpoint_dir(self) -> str:
        return self._at("checkpoints")

    @property
    def history_path(self) -> str:
        return self._at("history.json")

    @property
    def predictions_dir(self) -> str:
        return self._at("predictions")

    @property
    def metrics_path(self) -> str:
        return self._at("metrics.json")

    @property
    def timings_path(self) -> str:
        return self._at("timings.json")

    @property
    def config_path(self) -> str:
        return self._at("config.yaml")

    @property
    def report_dir(self) -> str:
        return self._at("report")

    def report_index(self) -> str:
        """The report's index.html as a browser opens it (on a store: inside the current version)."""
        if not storage.is_remote(self.report_dir):
            return storage.join(self.report_dir, "index.html")
        return storage.join(resolve(self.report_dir), "index.html")

    @property
    def augment_figures_dir(self) -> str:
        """The augment stage's before/after PNGs; the report links every PNG in it."""
        return self._at("augment")

    @property
    def transfer_model_dir(self) -> str:
        """The transfer stage's saved PipelineModel (featurizer + LogisticRegression)."""
        return self._at("transfer_model")

    def require(self, path: str, stage: str) -> str:
        if not exists(path):
            raise FileNotFoundError(f"{storage.redact(path)} does not exist: run `sparkcnn {stage}` "
                                    "for this conf first")
        return path

    def record_timing(self, stage: str, seconds: float) -> None:
        """Timings per stage accumulate across separate stage invocations."""
        timings = read_json(self.timings_path) if exists(self.timings_path) else {}
        timings[stage] = round(seconds, 2)
        write_json_atomic(self.timings_path, timings)
