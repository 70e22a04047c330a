"""The storage layer: every path the project reads or writes, local or on a remote filesystem.

A location is a string: a local path (or `file://` URL), or a URL with a remote scheme
(`s3://`, `gs://`, `abfs://`, `hdfs://`, any scheme fsspec knows).  Local locations go
through `os` exactly as before this module existed (so symlink publishing and plain
`spark.read.parquet(<dataset>/train)` keep working); remote ones through fsspec, the
library Horovod's Spark store and Petastorm use too, so the three agree on URLs and on
`storage.options`.  Why fsspec over pyarrow.fs: the pinned pyarrow (10.0.1) has S3 and HDFS
but no GCS or Azure filesystem and no conditional PUT; s3fs (fsspec) has `IfNoneMatch` /
`IfMatch` on put_object, which the manifest publish in pipelines.core.publish_store needs, and
gcsfs/adlfs cover the other stores with the same API.

Credentials come from the usual places (environment, instance roles, ~/.aws, ...) or from
`storage.options` in the conf, which are passed to the filesystem constructor.  Options are
kept in a `StorageOptions` whose repr and `redacted()` hide every value not known to be
harmless, and `redact()` scrubs secret values and URL user-info from any message, so they
never reach logs, configs or reports (pipelines.core.storage_options).  The options in use are
those of the active StorageContext (`with storage.using(ctx):`, pipelines.core.storage_context):
the CLI enters the conf's for a command, and executors the copy their task spec carries.
"""
from __future__ import annotations

import os
import posixpath
import re
import shutil
from typing import Iterator, Optional

from pipelines.core.storage_context import (  # noqa: F401 (part of this module's API)
    PublishPolicy,
    StorageContext,
    active_context,
    iterate_using,
    using,
)
from pipelines.core.storage_options import HIDDEN, SCHEME_KEYS, StorageOptions, redact  # noqa: F401 (API)


class StorageError(OSError):
    """A storage location cannot be used; the message names it (with secrets redacted) and says why."""


def scheme_of(location: str) -> str:
    """'' for a local path, else the URL scheme ('file' counts as local)."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", location or "")
    if not match:
        return ""
    scheme = match.group(1).lower()
    return "" if scheme == "file" else scheme


def is_remote(location: str) -> bool:
    return bool(scheme_of(location))


def normalize(location: str) -> str:
    """Local: an absolute path (`~` expanded, `file://` dropped); remote: the URL without a trailing '/'."""
    if is_remote(location):
        return location.rstrip("/")
    if location.startswith("file://"):
        location = location[len("file://"):]
    return os.path.abspath(os.path.expanduser(location))


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if is_remote(base) else os.path.join(base, *parts)


def split(location: str) -> tuple:
    """(parent, name), for local paths and URLs alike."""
    if is_remote(location):
        head, tail = posixpath.split(location.rstrip("/"))
        return head, tail
    return os.path.split(os.path.abspath(location))


def basename(location: str) -> str:
    return split(location)[1]


# -- remote filesystems -------------------------------------------------------------------------

class StoreUnreachable(StorageError, ConnectionError):
    """The store did not answer (connection refused, timed out, endpoint unknown): worth retrying."""


# Clients' own words for "no connection" (botocore, aiohttp, azure-core, requests): not OSErrors.
_TRANSPORT_ERRORS = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                     "ClientConnectorError", "ServerDisconnectedError", "ServiceRequestError", "ServiceResponseError")


def _is_transport_error(exc: BaseException) -> bool:
    return not isinstance(exc, OSError) and any(t.__name__ in _TRANSPORT_ERRORS for t in type(exc).__mro__)


class _About:
    """Re-raise a remote filesystem's OSError naming the location (redacted): stores' own messages
    ("The specified bucket does not exist") do not say which one."""

    def __init__(self, location: str):
        self.location = location

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None and _is_transport_error(exc):
            raise StoreUnreachable(f"{redact(self.location)}: the store could not be reached "
                                   f"({redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)})") from None
        if exc is None or not isinstance(exc, OSError) or isinstance(exc, StorageError):
            return False
        reason = redact(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        where = redact(self.location)
        if where in reason:
            return False
        if isinstance(exc, (FileNotFoundError, FileExistsError, PermissionError)):
            raise type(exc)(f"{where}: {reason}") from None
        raise StorageError(f"{where}: {reason}") from None


def filesystem(location: str):
    """(fsspec filesystem, path inside it) for a remote location."""
    import fsspec
    scheme = scheme_of(location)
    try:
        fs, path = fsspec.core.url_to_fs(location, **active_context().options.for_scheme(scheme))
    except ImportError as exc:
        need = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs", "abfss": "adlfs",
                "az": "adlfs", "hdfs": "pyarrow with libhdfs (HADOOP_HOME, CLASSPATH)"}.get(scheme,
                                                                                          "its fsspec package")
        raise StorageError(f"{redact(location)}: the '{scheme}' filesystem needs {need} on this host "
                           f"({redact(str(exc))})") from None
    return fs, path


def _ask(location: str, local, remote_method: str):
    """One yes/no question about a location: `local(path)` on local disks, fsspec's method remotely."""
    if not is_remote(location):
        return local(location)
    with _About(location):
        fs, path = filesystem(location)
        return getattr(_fresh(fs, path), remote_method)(path)


def exists(location: str) -> bool:
    return _ask(location, os.path.exists, "exists")


def isdir(location: str) -> bool:
    return _ask(location, os.path.isdir, "isdir")


def isfile(location: str) -> bool:
    return _ask(location, os.path.isfile, "isfile")


def listdir(location: str) -> list:
    """Names directly under a folder/prefix (files and sub-prefixes); [] when it does not exist."""
    return [name for name, _ in entries(location)]


def entries(location: str) -> list:
    """[(name, is folder)] directly under a folder/prefix, sorted; [] when it does not exist."""
    if not is_remote(location):
        try:
            with os.scandir(location) as it:
                return sorted((e.name, e.is_dir()) for e in it)
        except FileNotFoundError:
            return []
    with _About(location):
        fs, path = filesystem(location)
        try:
            found = _fresh(fs, path).ls(path, detail=True)
        except FileNotFoundError:
            return []
        out = {posixpath.basename(e["name"].rstrip("/")): e.get("type") == "directory" for e in found}
        return sorted((n, d) for n, d in out.items() if n)


def walk_sizes(location: str) -> dict:
    """{relative path: size} of every file below a folder/prefix, from one listing (walk_details)."""
    return {rel: size for rel, size, _, _ in walk_details(location)}


def walk_files(location: str) -> Iterator[str]:
    """Relative paths ('/'-separated) of every file below a folder/prefix, sorted."""
    if not is_remote(location):
        for root, _, files in sorted(os.walk(location)):
            for name in sorted(files):
                yield os.path.relpath(os.path.join(root, name), location).replace(os.sep, "/")
        return
    yield from walk_sizes(location)


def _stat_fields(info: dict) -> tuple:
    """(size, modified as epoch seconds or None, ETag or None) from an fsspec listing entry."""
    modified = info.get("LastModified") or info.get("last_modified") or info.get("mtime") or info.get("created")
    if hasattr(modified, "timestamp"):
        modified = modified.timestamp()
    try:
        modified = float(modified) if modified is not None else None
    except (TypeError, ValueError):
        modified = None
    tag = info.get("ETag") or info.get("etag")
    return int(info.get("size") or 0), modified, (str(tag).strip('"') if tag else None)


def walk_details(location: str) -> Iterator[tuple]:
    """(relative path, size, modified epoch seconds, ETag or None) of every file below a folder/prefix.

    One listing: the store's list calls already carry size, time and ETag (S3 pages of 1,000),
    so no file is stat-ed one by one; locally os.scandir's entries are stat-ed as walked.
    """
    if not is_remote(location):
        stack = [""]
        while stack:
            rel = stack.pop()
            try:
                with os.scandir(os.path.join(location, rel) if rel else location) as it:
                    found = sorted(it, key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for entry in reversed(found):
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir():
                    stack.append(name)
                elif entry.is_file():
                    st = entry.stat()
                    yield name, st.st_size, st.st_mtime, None
        return
    with _About(location):
        fs, path = filesystem(location)
        base = path.rstrip("/") + "/"
        for name, info in sorted(_fresh(fs, path).find(path, detail=True).items()):
            if name.startswith(base) and info.get("type") != "directory":
                yield (name[len(base):], *_stat_fields(info))


def glob_details(pattern: str) -> Iterator[tuple]:
    """(location, size, modified, ETag) of every file matching a glob (`**` recursive), from listings."""
    if not is_remote(pattern):
        import glob as globbing
        for name in sorted(globbing.glob(pattern, recursive=True)):
            if os.path.isfile(name):
                yield (name, *stat(name))
        return
    with _About(pattern):
        fs, path = filesystem(pattern)
        prefix = pattern[:len(pattern) - len(path)] if pattern.endswith(path) else scheme_of(pattern) + "://"
        for name, info in sorted(fs.glob(path, detail=True).items()):
            if info.get("type") != "directory":
                url = prefix + name.lstrip("/") if prefix.endswith("://") else prefix + "/" + name.lstrip("/")
                yield (url, *_stat_fields(info))


def stat(location: str) -> tuple:
    """(size, modified epoch seconds, ETag or None) of one file: one stat or HEAD."""
    if not is_remote(location):
        st = os.stat(location)
        return st.st_size, st.st_mtime, None
    with _About(location):
        fs, path = filesystem(location)
        return _stat_fields(_fresh(fs, path).info(path))


def _fresh(fs, path: str):
    """Drop fsspec's cached listings below `path`: other processes (executors) write there too."""
    fs.invalidate_cache(path)
    return fs


def size(location: str) -> int:
    return int(_ask(location, os.path.getsize, "size"))


def modified_age_seconds(location: str) -> Optional[float]:
    """Seconds since the file/object was last written; None when unknown or missing."""
    import time
    if not is_remote(location):
        try:
            return time.time() - os.path.getmtime(location)
        except OSError:
            return None
    with _About(location):
        fs, path = filesystem(location)
        try:
            stamp = fs.modified(path)
        except (FileNotFoundError, NotImplementedError, IsADirectoryError, OSError):
            return None
        return time.time() - stamp.timestamp()


def makedirs(location: str) -> None:
    if not is_remote(location):
        os.makedirs(location, exist_ok=True)
    # Object stores have no folders; HDFS folders are made by the first write below them.


def remove(location: str) -> None:
    """Remove a file or a whole folder/prefix; nothing if it is missing."""
    if not is_remote(location):
        if os.path.isdir(location) and not os.path.islink(location):
            shutil.rmtree(location, ignore_errors=True)
        elif os.path.lexists(location):
            os.remove(location)
        return
    with _About(location):
        fs, path = filesystem(location)
        try:
            fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass


def read_bytes(location: str) -> bytes:
    if not is_remote(location):
        with open(location, "rb") as f:
            return f.read()
    with _About(location):
        fs, path = filesystem(location)
        return fs.cat_file(path)


def open_file(location: str, mode: str = "rb"):
    """A file object for reading (seekable on every store) or writing (remote: uploaded on close)."""
    if not is_remote(location):
        if "w" in mode:
            os.makedirs(os.path.dirname(location) or ".", exist_ok=True)
        return open(location, mode)
    with _About(location):
        fs, path = filesystem(location)
        return fs.open(path, mode)


class PreconditionFailed(StorageError):
    """A conditional write lost a race: the object changed (or appeared) since it was read."""


AZURE_SCHEMES = ("abfs", "abfss", "az")
CONDITIONAL_SCHEMES = ("s3", "s3a") + AZURE_SCHEMES   # stores whose PUT can be conditional on an ETag


def put_bytes(location: str, data: bytes, if_match: Optional[str] = None, if_absent: bool = False) -> None:
    """One PUT of `data` (atomic on object stores); optionally conditional on the object's ETag.

    Conditions are sent on S3 (S3, MinIO and other S3-protocol stores honour If-Match /
    If-None-Match) and Azure Blob (ETag match conditions); other stores write unconditionally
    (last writer wins).
    """
    fs, path = filesystem(location)
    scheme, kwargs = scheme_of(location), {}
    if scheme in CONDITIONAL_SCHEMES:
        if if_match and scheme in AZURE_SCHEMES:
            from azure.core import MatchConditions
            kwargs = {"etag": if_match, "match_condition": MatchConditions.IfNotModified}
        elif if_match:
            kwargs["IfMatch"] = if_match
        elif if_absent:
            kwargs["mode"] = "create"
    try:
        fs.pipe_file(path, data, **kwargs)
    except Exception as exc:                     # noqa: BLE001 (stores raise their own types)
        text = str(exc).lower()
        if (isinstance(exc, FileExistsError) or "pre-condition" in text or "precondition" in text
                or type(exc).__name__ in ("ResourceModifiedError", "ResourceExistsError")):
            raise PreconditionFailed(f"{redact(location)} changed while this job was publishing") from None
        if not isinstance(exc, OSError) and not _is_transport_error(exc):
            raise
        with _About(location):
            raise


def copy_file(source: str, target: str) -> None:
    """One file copied within a filesystem: a hard link locally (published versions are never written
    again, so sharing their bytes is safe; a copy across devices), a server-side copy on a store."""
    if not is_remote(target):
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        return
    with _About(target):
        fs, source_path = filesystem(source)
        _, target_path = filesystem(target)
        fs.copy(source_path, target_path)


def etag(location: str) -> Optional[str]:
    """The object's ETag (S3, Azure) for a later conditional write; None elsewhere or when missing."""
    if scheme_of(location) not in CONDITIONAL_SCHEMES:
        return None
    with _About(location):
        fs, path = filesystem(location)
        try:
            info = _fresh(fs, path).info(path)
        except FileNotFoundError:
            return None
        return info.get("ETag") or info.get("etag")


def upload_dir(local_dir: str, location: str) -> list:
    """Copy every file below local_dir to location/...; -> the relative paths copied."""
    names = list(walk_files(local_dir))
    if not is_remote(location):
        for name in names:
            target = os.path.join(location, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(local_dir, name), target)
        return names
    with _About(location):
        fs, path = filesystem(location)
        for name in names:
            fs.put_file(os.path.join(local_dir, name), posixpath.join(path, name))
    return names


def download_dir(location: str, local_dir: str) -> list:
    """Copy every file below location/ into local_dir; -> the relative paths copied."""
    names = list(walk_files(location))
    for name in names:
        target = os.path.join(local_dir, *name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if is_remote(location):
            with _About(location):
                fs, path = filesystem(join(location, name))
                fs.get_file(path, target)
        else:
            shutil.copyfile(os.path.join(location, name), target)
    return names


def local_copy(location: str, scratch: str) -> str:
    """A local path holding the file at `location`: itself when local, else a download into scratch.

    For readers that need a real file (zip members, tar archives, gzip streams).  The copy is
    reused while the remote object's size and age say it is unchanged.
    """
    if not is_remote(location):
        return location
    import hashlib
    fs, path = filesystem(location)
    info = fs.info(path)
    key = hashlib.sha256(f"{location}|{info.get('size')}|{info.get('ETag') or info.get('mtime')}".encode()).hexdigest()
    target = os.path.join(scratch, "remote", key[:16], posixpath.basename(path))
    if not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.part-{os.getpid()}"
        fs.get_file(path, tmp)
        os.replace(tmp, target)
    return target
