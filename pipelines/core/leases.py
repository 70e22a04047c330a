"""Who owns a staging folder, and when it counts as abandoned: the policy shared by both publishers.

Staging names carry `<pid>-<id>-<host>` of the job that made them.  The next writer removes a
staging folder at once when its owner ran on this host and its pid is gone; otherwise only when
its lease (the local folder's mtime, or the remote `_lease.json` written when staging began) is
older than `storage.stale_after_hours` (the active StorageContext's publish policy): a pid says
nothing about a job on another host sharing the same mount or bucket.
"""
from __future__ import annotations

import os
import socket
import uuid
from typing import Optional

from pipelines.core import storage
from pipelines.core.errors import RetryableError


class PublishConflict(RetryableError, RuntimeError):
    """Another job published the same output while this one was writing it."""


def host() -> str:
    return socket.gethostname().replace("-", "_").replace(".", "_") or "host"


def owner_tag() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}-{host()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_gone(tag: str) -> Optional[bool]:
    """True when the writer named by `<pid>-<id>[-<host>]` ran on this host and is gone; None if unknown."""
    fields = tag.split("-", 2)
    try:
        pid = int(fields[0])
    except (ValueError, IndexError):
        return None
    writer_host = fields[2] if len(fields) > 2 else host()   # names without a host: older, local-only writers
    if writer_host != host():
        return None
    return not pid_alive(pid)


def is_stale(tag: str, lease_location: str) -> bool:
    gone = owner_gone(tag)
    if gone is not None:
        return gone
    age = storage.modified_age_seconds(lease_location)
    return age is not None and age > storage.active_context().policy.stale_after_hours * 3600


