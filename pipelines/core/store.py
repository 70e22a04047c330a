"""Every output path, and how outputs are published atomically.

A directory output (a Parquet dataset, a predictions table, a report) is
built in a staging directory next to its destination (`<name>.staging-<pid>-*`),
then renamed to a versioned directory (`<name>.v-<time>-*`), and the
destination itself is a symbolic link
switched to the new version with one `rename` — atomic on POSIX, so a reader
sees either the old complete output or the new complete one, and a job killed
at any moment leaves the previous output readable.  Stale staging
directories of killed jobs are removed by the next write.

File outputs (metrics.json, the model) are written to a temporary name in the
same directory and `os.replace`d.

Only local (and locally mounted) filesystems are handled here; this module is
the one place to change for HDFS or object stores.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass

# Sibling names are not dot-prefixed: Spark ignores hidden paths, even one passed explicitly.
_STAGING = ".staging-"
_VERSION = ".v-"


def _sibling(dest: str, kind: str, tag: str) -> str:
    parent, name = os.path.split(os.path.abspath(dest))
    return os.path.join(parent, f"{name}{kind}{tag}")


def _siblings(dest: str, kind: str) -> list:
    parent, name = os.path.split(os.path.abspath(dest))
    prefix = f"{name}{kind}"
    try:
        return [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(prefix)]
    except FileNotFoundError:
        return []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_staging(dest: str) -> None:
    """Remove staging dirs left by killed writers (their pid, the second tag field, is gone)."""
    for path in _siblings(dest, _STAGING):
        try:
            pid = int(os.path.basename(path).rsplit(_STAGING, 1)[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def publish_dir(staging: str, dest: str) -> None:
    """Make the complete directory `staging` the new content of `dest`, atomically."""
    dest = os.path.abspath(dest)
    version = _sibling(dest, _VERSION, time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8])
    os.rename(staging, version)
    link_tmp = _sibling(dest, ".link-", uuid.uuid4().hex[:8])
    os.symlink(os.path.basename(version), link_tmp)
    if os.path.isdir(dest) and not os.path.islink(dest):
        # A plain directory (made by hand or by another tool) cannot be swapped by
        # rename over it; move it aside first.  Only this first swap has a gap.
        os.rename(dest, _sibling(dest, _VERSION, "legacy-" + uuid.uuid4().hex[:8]))
    os.replace(link_tmp, dest)
    current = os.path.realpath(dest)
    for old in _siblings(dest, _VERSION):
        if os.path.realpath(old) != current:
            shutil.rmtree(old, ignore_errors=True)


def _new_staging(dest: str) -> str:
    """A fresh (not yet created) staging path beside `dest`, after clearing stale ones of killed jobs."""
    dest = os.path.abspath(dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    _remove_stale_staging(dest)
    return _sibling(dest, _STAGING, f"{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_dir(dest: str):
    """Yield a fresh staging path; publish it to `dest` only if the block completes.

    The staging path does not exist yet, so Spark can write to it directly.
    """
    staging = _new_staging(dest)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not os.path.isdir(staging):
        raise RuntimeError(f"nothing was written to {staging} for {dest}")
    publish_dir(staging, dest)


@contextlib.contextmanager
def atomic_dirs(dests: list):
    """Several directory outputs of one job, published together: {dest: staging path} for the block.

    The staging directories are created first (tasks on executors write part files straight
    into them).  Nothing is published unless the whole block completes; then every staging
    directory that still exists is published, one link swap after another, once all of them
    are complete.  A caller removes the staging directory of an output it decides not to
    write (a split with no rows), and that destination keeps its previous content.
    """
    stagings = {}
    try:
        for dest in dests:
            stagings[dest] = _new_staging(dest)
            os.makedirs(stagings[dest])
        yield stagings
    except BaseException:
        for staging in stagings.values():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    for dest, staging in stagings.items():
        if os.path.isdir(staging):
            publish_dir(staging, dest)


def write_bytes_atomic(dest: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    tmp = f"{dest}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
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
    with open(path) as f:
        return json.load(f)


@dataclass(frozen=True)
class RunStore:
    """The layout of one run directory: runs/<name>/..."""
    root: str

    @property
    def model_path(self) -> str:
        return os.path.join(self.root, "model.keras")

    @property
    def saved_model_dir(self) -> str:
        return os.path.join(self.root, "saved_model")

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.root, "checkpoints")

    @property
    def history_path(self) -> str:
        return os.path.join(self.root, "history.json")

    @property
    def predictions_dir(self) -> str:
        return os.path.join(self.root, "predictions")

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.root, "metrics.json")

    @property
    def timings_path(self) -> str:
        return os.path.join(self.root, "timings.json")

    @property
    def config_path(self) -> str:
        return os.path.join(self.root, "config.yaml")

    @property
    def report_dir(self) -> str:
        return os.path.join(self.root, "report")

    @property
    def augment_figures_dir(self) -> str:
        """The augment stage's before/after PNGs; the report links every PNG in it."""
        return os.path.join(self.root, "augment")

    @property
    def transfer_model_dir(self) -> str:
        """The transfer stage's saved PipelineModel (featurizer + LogisticRegression)."""
        return os.path.join(self.root, "transfer_model")

    def require(self, path: str, stage: str) -> str:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist: run `sparkcnn {stage}` for this conf first")
        return path

    def record_timing(self, stage: str, seconds: float) -> None:
        """Timings per stage accumulate across separate stage invocations."""
        timings = read_json(self.timings_path) if os.path.exists(self.timings_path) else {}
        timings[stage] = round(seconds, 2)
        write_json_atomic(self.timings_path, timings)
