"""What a reader sees of a published output, read once per command and handed on.

One command asks the same questions of an output several times: its stage key's identity of the
dataset, the pinned version training or scoring opens, the sidecar its shape and classes come from,
the identity recorded afterwards.  On an object store each answer is a GET of the manifest (or of
the sidecar), and two reads of one output may even disagree if another job publishes in between.
So a command reads inside `reading_once()` (the CLI opens it around every command): the first
answer about an output is kept for the rest of the command, and what this process publishes
replaces it (store._publish calls `note_published`).  Outside it (a library call, a test) every
question is a read, as before.

Writers never ask here: the checks that decide whether a publish may happen (the manifest's ETag,
the versions to keep) read the store as it is now (pipelines/core/publish_store.py).
"""
from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Optional

from pipelines.core import storage
from pipelines.core.publish_store import read_manifest


@dataclass(frozen=True)
class Published:
    """One output as this command reads it (one manifest read on a store, a readlink locally)."""
    location: str              # as configured, e.g. <datasets_dir>/<name>/<split>
    url: str                   # the location holding its current content: what readers open (pinned)
    version: Optional[str]     # stores: the manifest's version; local: the version directory the link points
                               # to; None when nothing this project publishes is there (a file, a plain folder)
    manifest: Optional[dict]   # stores: the manifest (its files, rows); None otherwise


# The command's answers: ("published", location) -> Published, ("sidecar", pinned url) -> its JSON.
_KNOWN: ContextVar[Optional[dict]] = ContextVar("sparkcnn_known_reads", default=None)


@contextlib.contextmanager
def reading_once():
    """Within the block each published output (and each version's sidecar) is read at most once.

    Nested blocks share the outer block's answers: the command is the unit."""
    if _KNOWN.get() is not None:
        yield
        return
    token = _KNOWN.set({})
    try:
        yield
    finally:
        _KNOWN.reset(token)


def remembered(kind: str, location: str, read: Callable):
    """`read()`, or its earlier answer for (kind, location) within a `reading_once` block."""
    known = _KNOWN.get()
    if known is None:
        return read()
    key = (kind, storage.normalize(location))     # one answer however the location is spelled
    if key not in known:
        known[key] = read()
    return known[key]


def remember(kind: str, location: str, value) -> None:
    """What this process has just written, so the command does not read it back."""
    known = _KNOWN.get()
    if known is not None:
        known[(kind, storage.normalize(location))] = value


def _read(location: str) -> Published:
    if not storage.is_remote(location):
        real = os.path.realpath(location)
        linked = os.path.islink(location) and os.path.exists(location)
        return Published(location, real, real if linked else None, None)
    manifest = read_manifest(location)
    if manifest:
        return Published(location, manifest["url"], manifest["version"], manifest)
    return Published(location, location, None, None)    # plain files written by another tool, or nothing


def known(location: str) -> Optional[Published]:
    """The command's answer about `location` if it has one (no read)."""
    return (_KNOWN.get() or {}).get(("published", storage.normalize(location)))


def published(location: str) -> Published:
    """What is published at `location` now (or, within `reading_once`, when the command first asked)."""
    return remembered("published", location, lambda: _read(location))


def note_published(location: str, manifest: Optional[dict] = None) -> None:
    """`location` was just published by this process (stores: with `manifest`): the command's answer now."""
    if _KNOWN.get() is None:
        return
    if manifest is not None:
        remember("published", location, Published(location, manifest["url"], manifest["version"], manifest))
    else:
        remember("published", location, _read(location))
