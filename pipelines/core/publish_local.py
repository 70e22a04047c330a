"""Publishing on local filesystems (and local mounts): staging siblings, versioned siblings, a symlink.

A directory output is built in a staging directory next to its destination
(`<name>.staging-<pid>-<id>-<host>`), renamed to a versioned directory (`<name>.v-<time>-<id>`),
and the destination itself is a symbolic link switched to the new version with one `rename`:
atomic on POSIX, so a reader sees the old complete output or the new complete one, a job killed
at any moment leaves the previous output readable, and plain `spark.read.parquet(<dest>)` works.
Only the current version is kept.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid

from pipelines.core.leases import is_stale, owner_tag

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


def remove_stale_staging(dest: str) -> None:
    """Remove staging dirs left by killed writers (see the module docstring for 'stale')."""
    for path in _siblings(dest, _STAGING):
        tag = os.path.basename(path).rsplit(_STAGING, 1)[1]
        if is_stale(tag, path):
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


def new_local_staging(dest: str) -> str:
    dest = os.path.abspath(dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    remove_stale_staging(dest)
    return _sibling(dest, _STAGING, owner_tag())
