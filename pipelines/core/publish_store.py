"""Publishing on remote filesystems (object stores, HDFS): versioned prefixes and one manifest.

Object stores have no rename and no symlink.  Each publish writes a new versioned prefix
`<dest>/v-<time>-<pid>-<id>-<host>/` (its `_lease.json` written first), then one small manifest
object `<dest>/_manifest.json` (one PUT: atomic on S3, GCS and Azure) names the current version
and its files with sizes and Parquet row counts.  The PUT is conditional on S3: If-Match on the
manifest's ETag as it was when this job's staging began (If-None-Match when there was none), so
of two jobs writing the same output at once the second to finish fails with a clear message
instead of silently replacing the first one's output, and no manifest update is ever lost.
Readers of this project go through the manifest; the versioned URL is what plain Spark or
pyarrow readers open.  The last `storage.keep_versions` published versions are kept (the active
StorageContext's publish policy).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Optional

from pipelines.core import storage
from pipelines.core.leases import PublishConflict, host, is_stale, owner_tag

MANIFEST = "_manifest.json"
LEASE = "_lease.json"
MANIFEST_FORMAT = "sparkcnn-manifest/1"


@dataclass(frozen=True)
class RemoteStaging:
    """A version prefix being written, and what its publish is conditional on: the manifest's ETag
    when its staging began (None: nothing was published there yet)."""
    location: str
    manifest_etag: Optional[str]


def _conflict(dest: str, version: str) -> PublishConflict:
    return PublishConflict(f"{storage.redact(dest)}: another job published this output while this one was "
                           f"writing it; this job's copy stays unpublished at {storage.redact(version)} "
                           "(removed by a later writer once stale)")


def check_unchanged(staging: RemoteStaging, dest: str) -> None:
    """Before publishing several outputs together: none of them was published by another job meanwhile."""
    if storage.etag(storage.join(dest, MANIFEST)) != staging.manifest_etag:
        raise _conflict(dest, staging.location)


def new_remote_version(dest: str) -> RemoteStaging:
    """A fresh version prefix under `dest`, with its lease written (the prefix now 'exists')."""
    name = f"v-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{owner_tag()}"
    version = storage.join(dest, name)
    staging = RemoteStaging(version, storage.etag(storage.join(dest, MANIFEST)))
    storage.put_bytes(storage.join(version, LEASE), json.dumps(
        {"host": host(), "pid": os.getpid(), "started": time.time()}).encode())
    return staging


def read_manifest(dest: str) -> Optional[dict]:
    """The published manifest of a remote output, or None if nothing was published there."""
    location = storage.join(dest, MANIFEST)
    try:
        return json.loads(storage.read_bytes(location))
    except FileNotFoundError:
        return None


def _file_entries(version: str) -> list:
    """The version's files with their sizes (from one listing) and Parquet row and row-group counts."""
    import pyarrow.parquet as pq
    entries = []
    for name, size in storage.walk_sizes(version).items():
        if name == LEASE:
            continue
        entry = {"name": name, "bytes": size}
        if name.endswith(".parquet") and not os.path.basename(name).startswith(("_", ".")):
            with storage.open_file(storage.join(version, name), "rb") as f:
                meta = pq.ParquetFile(f).metadata
            entry.update(rows=meta.num_rows, row_groups=meta.num_row_groups)
        entries.append(entry)
    return entries


def publish_version(staging: RemoteStaging, dest: str) -> dict:
    """Point `dest`'s manifest at the complete remote prefix `staging` (one PUT), conditional on the
    manifest as it was when that staging began."""
    manifest_location = storage.join(dest, MANIFEST)
    version, tag = staging.location, staging.manifest_etag
    old = read_manifest(dest)
    files = _file_entries(version)
    name = storage.basename(version)
    history = [name] + [v for v in (old or {}).get("versions", []) if v != name]
    manifest = {"format": MANIFEST_FORMAT, "version": name, "url": version,
                "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": files, "rows": sum(e.get("rows", 0) for e in files),
                "versions": history[:max(1, storage.active_context().policy.keep_versions)]}
    try:
        storage.put_bytes(manifest_location, (json.dumps(manifest, indent=2) + "\n").encode(),
                          if_match=tag, if_absent=tag is None)
    except storage.PreconditionFailed:
        raise _conflict(dest, version) from None
    storage.remove(storage.join(version, LEASE))
    published_before = set((old or {}).get("versions", [])) | ({old["version"]} if old else set())
    _remove_versions(dest, set(manifest["versions"]), published_before)
    return manifest


def _stale_version(dest: str, name: str) -> bool:
    """An unpublished version prefix whose writer is gone (no lease left, or a stale lease)."""
    lease = storage.join(dest, name, LEASE)
    if not storage.exists(lease):
        return True                  # an aborted write's leftovers (a live writer's lease comes first)
    return is_stale(name.split("-", 2)[2] if name.count("-") >= 2 else "", lease)


def _remove_versions(dest: str, keep: set, published_before: set = frozenset()) -> None:
    """Drop every version prefix not in `keep` that was published before (beyond keep_versions) or is
    stale staging; fresh staging of live jobs stays."""
    for name in storage.listdir(dest):
        if name.startswith("v-") and name not in keep and (name in published_before or _stale_version(dest, name)):
            storage.remove(storage.join(dest, name))


def remove_stale_remote(dest: str) -> None:
    """Before a new staging begins: clear stale staging of killed jobs (the kept versions stay)."""
    _remove_versions(dest, set((read_manifest(dest) or {}).get("versions", [])))


def has_output(version: str) -> bool:
    """Something besides the lease was written into a remote staging prefix."""
    return any(n != LEASE for n in storage.listdir(version))
