"""Every output path, and how outputs are published atomically, on local disks and object stores.

Local filesystems (and local mounts): a directory output (a Parquet dataset, a predictions
table, a report) is built in a staging directory next to its destination
(`<name>.staging-<pid>-<id>-<host>`), renamed to a versioned directory (`<name>.v-<time>-<id>`),
and the destination itself is a symbolic link switched to the new version with one `rename`:
atomic on POSIX, so a reader sees the old complete output or the new complete one, and a job
killed at any moment leaves the previous output readable.  Only the current version is kept.

Remote filesystems (s3://, gs://, abfs://, hdfs://, see pipelines.core.storage) have no
rename and no symlink.  There each publish writes a new versioned prefix
`<dest>/v-<time>-<id>-<pid>-<host>/`, and then one small manifest object `<dest>/_manifest.json`
(one PUT: atomic on S3, GCS and Azure) names the current version and its files with sizes and
Parquet row counts.  The PUT is conditional on S3: If-Match on the manifest's ETag as it was
when this job's staging began (If-None-Match when there was none), so of two jobs writing the
same output at once the second to finish fails with a clear message instead of silently
replacing the first one's output, and no manifest update is ever lost.  Readers of this project go through the manifest
(`resolve`, `published_files`); the job logs the versioned URL, which plain Spark or pyarrow
readers can use.  The last `storage.keep_versions` published versions are kept.

Stale staging of killed jobs is removed by the next writer: at once when the writer was on
this host and its pid is gone, otherwise when its lease (the staging folder's `_lease.json`,
written when the staging began) is older than `storage.stale_after_hours`, so a job on another
host sharing the same mount or bucket is never mistaken for dead.

File outputs (metrics.json, the model) are one PUT on object stores, and written to a
temporary name then `os.replace`d locally.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from pipelines.core import storage
from pipelines.core.errors import SparkcnnError

# Sibling names are not dot-prefixed: Spark ignores hidden paths, even one passed explicitly.
_STAGING = ".staging-"
_VERSION = ".v-"
MANIFEST = "_manifest.json"
LEASE = "_lease.json"
MANIFEST_FORMAT = "sparkcnn-manifest/1"


class PublishConflict(SparkcnnError, RuntimeError):
    """Another job published the same output while this one was writing it."""


@dataclass(frozen=True)
class PublishPolicy:
    keep_versions: int = 2          # object stores: published versions kept (the current one included)
    stale_after_hours: float = 24.0  # staging of another host (or unknown owner) older than this is removed


_POLICY = PublishPolicy()


def configure_publishing(keep_versions: int, stale_after_hours: float) -> None:
    global _POLICY
    _POLICY = PublishPolicy(int(keep_versions), float(stale_after_hours))


def configure_from(cfg) -> None:
    """Apply a conf's storage section to this process: filesystem options and the publish policy."""
    storage.configure(cfg.storage.storage_options())
    configure_publishing(cfg.storage.keep_versions, cfg.storage.stale_after_hours)


def _host() -> str:
    return socket.gethostname().replace("-", "_").replace(".", "_") or "host"


def _owner_tag() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}-{_host()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_gone(tag: str) -> Optional[bool]:
    """True when the writer named by `<pid>-<id>[-<host>]` ran on this host and is gone; None if unknown."""
    fields = tag.split("-", 2)
    try:
        pid = int(fields[0])
    except (ValueError, IndexError):
        return None
    host = fields[2] if len(fields) > 2 else _host()     # names without a host: older, local-only writers
    if host != _host():
        return None
    return not _pid_alive(pid)


def _is_stale(tag: str, lease_location: str) -> bool:
    gone = _owner_gone(tag)
    if gone is not None:
        return gone
    age = storage.modified_age_seconds(lease_location)
    return age is not None and age > _POLICY.stale_after_hours * 3600


# -- local: staging siblings, versioned siblings, a symlink ----------------------------------------

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


def _remove_stale_staging(dest: str) -> None:
    """Remove staging dirs left by killed writers (see the module docstring for 'stale')."""
    for path in _siblings(dest, _STAGING):
        tag = os.path.basename(path).rsplit(_STAGING, 1)[1]
        if _is_stale(tag, path):
            shutil.rmtree(path, ignore_errors=True)


def publish_dir(staging: str, dest: str) -> None:
    """Make the complete local directory `staging` the new content of local `dest`, atomically."""
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


def _new_local_staging(dest: str) -> str:
    dest = os.path.abspath(dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    _remove_stale_staging(dest)
    return _sibling(dest, _STAGING, _owner_tag())


# -- remote: versioned prefixes and a manifest --------------------------------------------------

_UNSET = object()
_STAGED_AGAINST: dict = {}      # remote staging -> the manifest ETag when it began (None: no manifest yet)


def _conflict(dest: str, version: str) -> PublishConflict:
    return PublishConflict(f"{storage.redact(dest)}: another job published this output while this one was "
                           f"writing it; this job's copy stays unpublished at {storage.redact(version)} "
                           "(removed by a later writer once stale)")


def _check_unchanged(staging: str, dest: str) -> None:
    """Before publishing several outputs together: none of them was published by another job meanwhile."""
    expected = _STAGED_AGAINST.get(staging, _UNSET)
    if expected is not _UNSET and storage.etag(storage.join(dest, MANIFEST)) != expected:
        raise _conflict(dest, staging)


def _new_remote_version(dest: str) -> str:
    """A fresh version prefix under `dest`, with its lease written (the prefix now 'exists')."""
    name = f"v-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{_owner_tag()}"
    version = storage.join(dest, name)
    _STAGED_AGAINST[version] = storage.etag(storage.join(dest, MANIFEST))
    storage.put_bytes(storage.join(version, LEASE), json.dumps(
        {"host": _host(), "pid": os.getpid(), "started": time.time()}).encode())
    return version


def read_manifest(dest: str) -> Optional[dict]:
    """The published manifest of a remote output, or None if nothing was published there."""
    location = storage.join(dest, MANIFEST)
    try:
        return json.loads(storage.read_bytes(location))
    except FileNotFoundError:
        return None


def _file_entries(version: str) -> list:
    import pyarrow.parquet as pq
    entries = []
    for name in storage.walk_files(version):
        if name == LEASE:
            continue
        location = storage.join(version, name)
        entry = {"name": name, "bytes": storage.size(location)}
        if name.endswith(".parquet") and not os.path.basename(name).startswith(("_", ".")):
            with storage.open_file(location, "rb") as f:
                entry["rows"] = pq.ParquetFile(f).metadata.num_rows
        entries.append(entry)
    return entries


def publish_version(version: str, dest: str, expected_etag=_UNSET, log=None) -> dict:
    """Point `dest`'s manifest at the complete remote prefix `version` (one conditional PUT).

    `expected_etag`: the manifest's ETag this publish must replace (None: there must be no
    manifest yet); by default the one recorded when `version`'s staging began.
    """
    manifest_location = storage.join(dest, MANIFEST)
    if expected_etag is _UNSET:
        expected_etag = _STAGED_AGAINST.pop(version, _UNSET)
    tag = storage.etag(manifest_location) if expected_etag is _UNSET else expected_etag
    old = read_manifest(dest)
    files = _file_entries(version)
    name = storage.basename(version)
    history = [name] + [v for v in (old or {}).get("versions", []) if v != name]
    manifest = {"format": MANIFEST_FORMAT, "version": name, "url": version,
                "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": files, "rows": sum(e.get("rows", 0) for e in files),
                "versions": history[:max(1, _POLICY.keep_versions)]}
    try:
        storage.put_bytes(manifest_location, (json.dumps(manifest, indent=2) + "\n").encode(),
                          if_match=tag, if_absent=tag is None)
    except storage.PreconditionFailed:
        raise _conflict(dest, version) from None
    storage.remove(storage.join(version, LEASE))
    _clean_remote(dest, manifest, old)
    if log:
        log(f"[store] published {storage.redact(version)}")
    return manifest


def _stale_version(dest: str, name: str) -> bool:
    """An unpublished version prefix whose writer is gone (no lease left, or a stale lease)."""
    lease = storage.join(dest, name, LEASE)
    if not storage.exists(lease):
        return True                  # an aborted write's leftovers (a live writer's lease comes first)
    return _is_stale(name.split("-", 2)[2] if name.count("-") >= 2 else "", lease)


def _clean_remote(dest: str, manifest: dict, old: Optional[dict]) -> None:
    """Drop versions beyond keep_versions and stale unpublished ones; fresh staging of live jobs stays."""
    keep = set(manifest["versions"])
    published_before = set((old or {}).get("versions", [])) | ({old["version"]} if old else set())
    for name in storage.listdir(dest):
        if name.startswith("v-") and name not in keep and (name in published_before or _stale_version(dest, name)):
            storage.remove(storage.join(dest, name))


def _remove_stale_remote(dest: str) -> None:
    keep = set((read_manifest(dest) or {}).get("versions", []))
    for name in storage.listdir(dest):
        if name.startswith("v-") and name not in keep and _stale_version(dest, name):
            storage.remove(storage.join(dest, name))


def _has_output(staging: str) -> bool:
    if not storage.is_remote(staging):
        return os.path.isdir(staging)
    return any(n != LEASE for n in storage.listdir(staging))


# -- the API every stage uses -----------------------------------------------------------------------

def _new_staging(dest: str) -> str:
    """A fresh staging location for `dest`, after clearing stale ones of killed jobs.

    Local: a sibling path that does not exist yet.  Remote: a new version prefix (leased).
    """
    if storage.is_remote(dest):
        _remove_stale_remote(dest)
        return _new_remote_version(dest)
    return _new_local_staging(dest)


def _publish(staging: str, dest: str) -> None:
    if storage.is_remote(dest):
        publish_version(staging, dest)
    else:
        publish_dir(staging, dest)


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
        yield build or staging
        if build:
            if not os.path.isdir(build):
                raise RuntimeError(f"nothing was written to {build} for {storage.redact(dest)}")
            storage.upload_dir(build, staging)
    except BaseException:
        storage.remove(staging)
        raise
    finally:
        if build:
            shutil.rmtree(os.path.dirname(build), ignore_errors=True)
    if not _has_output(staging):
        storage.remove(staging)
        raise RuntimeError(f"nothing was written to {storage.redact(staging)} for {storage.redact(dest)}")
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
            storage.makedirs(stagings[dest])
        yield stagings
    except BaseException:
        for staging in stagings.values():
            storage.remove(staging)
        raise
    for dest, staging in stagings.items():
        if storage.is_remote(dest):
            _check_unchanged(staging, dest)
    for dest, staging in stagings.items():
        if _has_output(staging):
            _publish(staging, dest)
        else:
            _STAGED_AGAINST.pop(staging, None)
            storage.remove(staging)


def resolve(dest: str) -> str:
    """The location holding `dest`'s current content, pinned (what a reader should open).

    Local: the version directory the link points to.  Remote: the manifest's version prefix,
    or `dest` itself when it holds plain files written by another tool (no manifest).
    """
    if not storage.is_remote(dest):
        return os.path.realpath(dest)
    manifest = read_manifest(dest)
    return manifest["url"] if manifest else dest


def published_url(dest: str) -> str:
    """`dest`, and on a remote store the current version's URL too (what plain Spark/pyarrow readers open)."""
    if not storage.is_remote(dest):
        return dest
    return f"{storage.redact(dest)} (version {storage.redact(resolve(dest))})"


def published_files(dest: str, suffix: str = ".parquet") -> list:
    """Full locations of the current version's files ending in `suffix`, in name order.

    Remote outputs of this project list exactly their manifest's files (nothing left by a
    killed task attempt is read); plain folders are listed.
    """
    if storage.is_remote(dest):
        manifest = read_manifest(dest)
        if manifest:
            return [storage.join(manifest["url"], e["name"]) for e in manifest["files"]
                    if e["name"].endswith(suffix)]
    root = resolve(dest)
    return [storage.join(root, n) for n in storage.walk_files(root)
            if n.endswith(suffix) and not os.path.basename(n).startswith(("_", "."))]


def exists(location: str) -> bool:
    """A published output (remote: its manifest) or a file exists at `location`."""
    if not storage.is_remote(location):
        return os.path.exists(location)
    return storage.exists(storage.join(location, MANIFEST)) or storage.isfile(location)


def write_bytes_atomic(dest: str, data: bytes) -> None:
    if storage.is_remote(dest):
        storage.put_bytes(dest, data)       # one PUT: the object appears complete or not at all
        return
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
    return json.loads(storage.read_bytes(path))


@dataclass(frozen=True)
class RunStore:
    """The layout of one run directory: <runs_dir>/<name>/... (a local path or a remote URL)."""
    root: str

    def _at(self, name: str) -> str:
        return storage.join(self.root, name)

    @property
    def model_path(self) -> str:
        return self._at("model.keras")

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
