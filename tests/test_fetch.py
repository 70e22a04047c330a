import os
import shutil

import pytest

from pipelines.ingest import fetch


def test_real_mnist_files_are_verified(mnist_files):
    assert set(mnist_files) == {"train_images", "train_labels", "test_images", "test_labels"}
    by_role = {f.role: f for f in fetch.MNIST_FILES}
    for role, path in mnist_files.items():
        assert fetch.file_digest(path) == by_role[role].md5_raw


def test_dir_source_accepts_good_files_and_names_a_corrupt_one(mnist_files, tmp_path):
    for path in mnist_files.values():
        shutil.copy(path, tmp_path / os.path.basename(path))
    assert fetch.fetch_mnist("unused", "dir", str(tmp_path))["test_labels"].startswith(str(tmp_path))
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[100] ^= 0xFF
    labels.write_bytes(bytes(data))
    with pytest.raises(fetch.ChecksumError, match=r"t10k-labels-idx1-ubyte: md5 is [0-9a-f]{32}, expected 27ae3e4e"):
        fetch.fetch_mnist("unused", "dir", str(tmp_path))


def test_dir_source_missing_file_says_what_it_looked_for(tmp_path):
    with pytest.raises(fetch.FetchError, match=r"no train-images-idx3-ubyte \(or .gz\) for train_images"):
        fetch.fetch_mnist("unused", "dir", str(tmp_path))


def test_damaged_cache_entry_is_never_used(mnist_files, tmp_path):
    """A cached file that no longer matches its MD5 is dropped, not returned."""
    cache = tmp_path / "mnist"
    cache.mkdir()
    good = mnist_files["test_labels"]
    f = next(x for x in fetch.MNIST_FILES if x.role == "test_labels")
    shutil.copy(good, cache / f.name)
    assert fetch._cached(str(cache), f) == str(cache / f.name)
    (cache / f.name).write_bytes(b"\x00" * 10)
    assert fetch._cached(str(cache), f) is None
    assert not (cache / f.name).exists()
