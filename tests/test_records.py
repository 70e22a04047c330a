import numpy as np
import pyarrow as pa
import pytest

from pipelines.core import records


def _images(n, h=5, w=4, c=1, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def test_encode_decode_roundtrip_is_exact_and_zero_copy():
    imgs = _images(7, c=3)
    batch = records.encode_batch(np.arange(7), np.arange(7) % 3, imgs)
    assert batch.schema.equals(records.ARROW_SCHEMA)
    assert batch.column(records.HEIGHT).to_pylist() == [5] * 7
    assert batch.column(records.CHANNELS).to_pylist() == [3] * 7
    out = records.decode_images(batch.column(records.IMAGE), (5, 4, 3))
    np.testing.assert_array_equal(out, imgs)
    assert not out.flags.owndata  # a view of the Arrow buffer, not a copy


def test_decode_respects_array_slices_and_chunks():
    imgs = _images(10)
    col = records.encode_batch(np.arange(10), np.zeros(10), imgs).column(records.IMAGE)
    np.testing.assert_array_equal(records.decode_images(col.slice(3, 4), (5, 4, 1)), imgs[3:7])
    chunked = pa.chunked_array([col.slice(0, 6), col.slice(6)])
    np.testing.assert_array_equal(records.decode_images(chunked, (5, 4, 1)), imgs)
    np.testing.assert_array_equal(records.decode_images([bytes(b) for b in imgs.reshape(10, -1)], (5, 4, 1)), imgs)


def test_grayscale_without_channel_axis_is_accepted():
    batch = records.encode_batch([1], [0], np.zeros((1, 3, 3), np.uint8))
    assert batch.column(records.CHANNELS).to_pylist() == [1]


def test_wrong_sized_row_names_the_row():
    col = pa.array([b"\x00" * 20, b"\x00" * 19], type=pa.binary())
    with pytest.raises(records.RecordError, match=r"row 1 has 19 bytes, expected 20"):
        records.decode_images(col, (5, 4, 1))


def test_non_uint8_and_mismatched_lengths_are_rejected():
    with pytest.raises(records.RecordError, match="uint8"):
        records.encode_batch([0], [0], np.zeros((1, 2, 2), np.float32))
    with pytest.raises(records.RecordError, match="1 images but 2 ids"):
        records.encode_batch([0, 1], [0], np.zeros((1, 2, 2), np.uint8))


def test_meta_roundtrip_and_missing_meta_message(tmp_path):
    meta = records.DatasetMeta("mnist", "train", 3, 28, 28, 1, ["a", "b"], class_counts={"0": 2, "1": 1})
    records.write_meta(str(tmp_path), meta)
    back = records.read_meta(str(tmp_path))
    assert back == meta and back.shape == (28, 28, 1) and back.num_classes == 2
    with pytest.raises(records.RecordError, match="not a sparkcnn dataset"):
        records.read_meta(str(tmp_path / "nope"))
