"""One writer at a time per run directory and per dataset: a lock that dies with its holder.

A nightly scheduler starts `sparkcnn run` again while yesterday's is still going, or an operator
reruns a stage by hand: without a lock both write the same run directory.  Every command holds
the lock of its run directory, and ingest the lock of the dataset it writes, for as long as it
runs; a second command finds it held and stops at once with exit code 5 (`LockHeld`), naming
who holds it.

Local disks (and shared mounts with POSIX locks): `flock` on `<dir>/_sparkcnn.lock`.  The kernel
drops it when the holder exits in any way (killed -9 included), so a crashed run never blocks the
next one; the file itself stays, holding the last holder's description for the message.

Object stores: the lock is the object `<dir>/_sparkcnn.lock`, created with a conditional PUT
(If-None-Match: only one of two racing runs creates it).  Its holder rewrites it every
`ttl / 4` seconds (a heartbeat, conditional on its own ETag); a lock whose heartbeat is older
than `ttl` (its holder died without removing it), or whose holder ran on this host and is gone,
is taken over with a PUT conditional on the stale object's ETag, so of two runs taking over the
same stale lock only one wins.  Stores without conditional writes (GCS, HDFS here) write
unconditionally after the same check: a narrow race is possible there, and is said in the README.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Optional

from pipelines.core import storage
from pipelines.core.context_threads import in_this_context
from pipelines.core.errors import LockHeld
from pipelines.core.leases import host, owner_gone, owner_tag

LOCK_NAME = "_sparkcnn.lock"
logger = logging.getLogger("sparkcnn.core")
DEFAULT_TTL_SECONDS = 300.0


def lock_location(folder: str) -> str:
    return storage.join(folder, LOCK_NAME)


def _describe(info: dict, now: Optional[float] = None) -> str:
    if not info:
        return "another process"
    now = now or time.time()
    age = now - float(info.get("started", now))
    return (f"`{info.get('command', '?')}` (host {info.get('host', '?')}, pid {info.get('pid', '?')}, "
            f"started {int(age)} s ago)")


class RunLock:
    """The lock of one folder (a run directory or a dataset), held from `acquire` to `release`.

    `what` names the folder in messages ("run directory", "dataset").  Use as a context manager.
    """

    def __init__(self, folder: str, what: str, command: str, ttl: float = DEFAULT_TTL_SECONDS):
        self.folder = folder
        self.location = lock_location(folder)
        self.what = what
        self.ttl = float(ttl)
        self.info = {"owner": owner_tag(), "host": host(), "pid": os.getpid(), "command": command,
                     "started": time.time()}
        self._fd: Optional[int] = None
        self._etag: Optional[str] = None
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None

    # -- local: flock -------------------------------------------------------------------------
    def _acquire_local(self) -> None:
        import fcntl
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(self.location, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_local(fd)
            os.close(fd)
            raise self._held(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(self.info) + "\n").encode(), 0)
        self._fd = fd

    @staticmethod
    def _read_local(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 65536, 0) or b"{}")
        except ValueError:
            return {}

    # -- remote: conditional PUT + heartbeat ---------------------------------------------------
    def _payload(self) -> bytes:
        return json.dumps(dict(self.info, heartbeat=time.time(), ttl=self.ttl)).encode()

    def _stale(self, holder: dict) -> bool:
        gone = owner_gone(str(holder.get("owner", "")))
        if gone:
            return True
        beat = holder.get("heartbeat")
        ttl = float(holder.get("ttl") or self.ttl)
        return beat is None or time.time() - float(beat) > ttl

    def _acquire_remote(self) -> None:
        for _ in range(3):
            try:
                storage.put_bytes(self.location, self._payload(), if_absent=True)
                break
            except storage.PreconditionFailed:
                pass
            seen = storage.etag(self.location)
            try:
                holder = json.loads(storage.read_bytes(self.location))
            except FileNotFoundError:
                continue                         # released meanwhile: try to create it again
            except ValueError:
                holder = {}
            if not self._stale(holder):
                raise self._held(holder)
            try:
                storage.put_bytes(self.location, self._payload(), if_match=seen)
                logger.info(f"[lock] took over the stale lock of {_describe(holder)} at "
                            f"{storage.redact(self.location)}")
                break
            except storage.PreconditionFailed:
                continue                         # another run took it over first: look again
        else:
            raise self._held({})
        self._etag = storage.etag(self.location)
        self._beat = threading.Thread(target=in_this_context(self._heartbeat), name="sparkcnn-lock", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                storage.put_bytes(self.location, self._payload(), if_match=self._etag)
                self._etag = storage.etag(self.location)
            except storage.PreconditionFailed:
                logger.warning(f"[lock] WARNING: the lock at {storage.redact(self.location)} was taken over by "
                               "another run (this run's heartbeat was late by more than its ttl)")
                return
            except OSError as exc:               # a store blip: the next beat tries again
                logger.warning(f"[lock] heartbeat failed ({storage.redact(exc)}); retrying")

    # -- both ---------------------------------------------------------------------------------
    def _held(self, holder: dict) -> LockHeld:
        return LockHeld(f"{storage.redact(self.folder)}: this {self.what} is locked by {_describe(holder)}; "
                        "wait for it to finish (a lock whose holder died is released: at once on local disks, "
                        f"after {int(self.ttl)} s on object stores)")

    def acquire(self) -> "RunLock":
        if storage.is_remote(self.location):
            self._acquire_remote()
        else:
            self._acquire_local()
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._beat is not None:
            self._stop.set()
            self._beat.join(timeout=10)
            self._beat = None
            try:
                if storage.etag(self.location) == self._etag:
                    storage.remove(self.location)
            except OSError:
                pass                             # left to expire after its ttl

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
