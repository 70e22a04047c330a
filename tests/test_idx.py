import gzip
import os

import numpy as np
import pytest

from pipelines.ingest import idx


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 6, 5), dtype=np.uint8)
    labels = rng.integers(0, 10, 12).astype(np.uint8)
    ip, lp = str(tmp_path / "imgs-idx3-ubyte"), str(tmp_path / "lbls-idx1-ubyte")
    idx.write_idx(ip, images)
    idx.write_idx(lp, labels)
    return ip, lp, images, labels


def test_header_and_range_reads(pair):
    ip, lp, images, labels = pair
    h = idx.read_header(ip)
    assert h.count == 12 and h.row_shape == (6, 5) and h.data_offset == 16
    np.testing.assert_array_equal(idx.read_rows(h, 3, 9), images[3:9])
    lh = idx.read_header(lp, expect_ndim=1)
    idx.check_pair(h, lh)
    np.testing.assert_array_equal(idx.read_rows(lh, 0, 12), labels)


def test_wide_dtypes_come_back_native(tmp_path):
    p = str(tmp_path / "f")
    arr = np.arange(6, dtype=np.int32).reshape(2, 3) * 70000
    idx.write_idx(p, arr)
    out = idx.read_rows(idx.read_header(p), 0, 2)
    assert out.dtype == np.dtype("int32") and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_wrong_magic_names_file(tmp_path):
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 40)
    with pytest.raises(idx.IdxFormatError, match=r"bad-idx3-ubyte: wrong magic number 0x12340803"):
        idx.read_header(str(p))


def test_truncated_file_reports_sizes(pair):
    ip, *_ = pair
    data = open(ip, "rb").read()
    with open(ip, "wb") as f:
        f.write(data[:-7])
    with pytest.raises(idx.IdxFormatError, match=r"12 items of shape \(6, 5\) \(376 bytes in all\) but the file has 369 bytes \(truncated\?\)"):
        idx.read_header(ip)


def test_too_short_and_missing(tmp_path):
    p = tmp_path / "tiny"
    p.write_bytes(b"\x00\x00")
    with pytest.raises(idx.IdxFormatError, match="too short"):
        idx.read_header(str(p))
    with pytest.raises(idx.IdxFormatError, match="file not found"):
        idx.read_header(str(tmp_path / "absent"))


def test_label_count_mismatch(pair, tmp_path):
    ip, _, _, labels = pair
    lp = str(tmp_path / "short-labels")
    idx.write_idx(lp, labels[:10])
    with pytest.raises(idx.IdxFormatError, match=r"short-labels: 10 labels but .*imgs-idx3-ubyte has 12 images"):
        idx.check_pair(idx.read_header(ip), idx.read_header(lp))


def test_gzip_is_unpacked_once_and_corrupt_gzip_named(pair, tmp_path):
    ip, _, images, _ = pair
    gz = str(tmp_path / "imgs-idx3-ubyte.gz")
    with open(ip, "rb") as src, gzip.open(gz, "wb") as dst:
        dst.write(src.read())
    scratch = str(tmp_path / "scratch")
    raw = idx.ensure_uncompressed(gz, scratch)
    assert raw.startswith(scratch) and idx.ensure_uncompressed(gz, scratch) == raw
    np.testing.assert_array_equal(idx.read_rows(idx.read_header(raw), 0, 12), images)
    bad = str(tmp_path / "cut-idx3-ubyte.gz")
    with open(bad, "wb") as f:
        f.write(open(gz, "rb").read()[:40])
    with pytest.raises(idx.IdxFormatError, match="cut-idx3-ubyte.gz: corrupt gzip"):
        idx.ensure_uncompressed(bad, scratch)
    assert not [n for n in os.listdir(scratch) if ".part-" in n]
