"""Array formats through a real Spark ingest: CIFAR-10/100 (binary, python, tar.gz), .npz, user IDX,
Fashion-MNIST with its class names."""
import os
import pickle
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.core import records
from pipelines.ingest import idx
from pipelines.ingest.safe_pickle import UnsafePickleError, load_data_pickle
from pipelines.ingest.sources import SourceError
from pipelines.ingest.stage import ingest

from conftest import make_conf

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_arrays(foolbox_images):
    images = np.stack([img for _, _, img in foolbox_images["cifar10"]])
    labels = np.array([label for _, label, _ in foolbox_images["cifar10"]])
    return images, labels


def _planar(images):
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_cifar10_binary(folder, images, labels):
    os.makedirs(folder)
    chunks = np.array_split(np.arange(15), 5)
    for i, rows in enumerate(chunks, 1):
        recs = np.concatenate([labels[rows, None].astype(np.uint8), _planar(images[rows])], axis=1)
        (folder / f"data_batch_{i}.bin").write_bytes(recs.tobytes())
    recs = np.concatenate([labels[15:, None].astype(np.uint8), _planar(images[15:])], axis=1)
    (folder / "test_batch.bin").write_bytes(recs.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")


def write_cifar10_python(folder, images, labels):
    """Byte-keyed dicts of a uint8 array and a label list, as the original Python 2 pickles."""
    os.makedirs(folder)
    for i, rows in enumerate(np.array_split(np.arange(15), 5), 1):
        batch = {b"batch_label": f"training batch {i} of 5".encode(), b"labels": labels[rows].tolist(),
                 b"data": _planar(images[rows]), b"filenames": [b"x.png"] * len(rows)}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": labels[15:].tolist(), b"data": _planar(images[15:])}, 2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in CIFAR10_NAMES],
                                                        b"num_vis": 3072}, 2))


def _read_split(conf, split):
    table = pq.read_table(os.path.realpath(conf.dataset_dir(split))).sort_by("id")
    meta = records.read_meta(conf.dataset_dir(split))
    return records.decode_images(table.column("image"), meta.shape), table.column("label").to_numpy(), meta


@pytest.mark.parametrize("version", ["binary", "python", "python-tar.gz"])
def test_cifar10_real_images_roundtrip(spark, tmp_path, foolbox_images, version):
    images, labels = _cifar_arrays(foolbox_images)
    folder = tmp_path / "cifar-10-batches"
    (write_cifar10_binary if version == "binary" else write_cifar10_python)(folder, images, labels)
    path = folder
    if version.endswith("tar.gz"):
        path = tmp_path / "cifar-10-python.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            tf.add(folder, arcname="cifar-10-batches-py")
    conf = make_conf(tmp_path, f"data: {{dataset: c10, format: cifar10, path: '{path}', datasets_dir: '{tmp_path}/ds',"
                               f" cache_dir: '{tmp_path}/cache'}}\ningest: {{validation_rows: 3}}")
    metas = ingest(spark, conf)
    assert {s: m.num_rows for s, m in metas.items()} == {"train": 12, "val": 3, "test": 5}
    train, train_labels, meta = _read_split(conf, "train")
    assert meta.shape == (32, 32, 3) and meta.class_names == CIFAR10_NAMES
    np.testing.assert_array_equal(train, images[:12])          # real pixels, CHW -> HWC exact
    np.testing.assert_array_equal(train_labels, labels[:12])
    test, test_labels, _ = _read_split(conf, "test")
    np.testing.assert_array_equal(test, images[15:])
    np.testing.assert_array_equal(test_labels, labels[15:])


def test_cifar100_binary_fine_and_coarse_labels(spark, tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    coarse, fine = rng.integers(0, 20, 6), rng.integers(0, 100, 6)
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    recs = np.concatenate([coarse[:, None], fine[:, None], images], axis=1).astype(np.uint8)
    (folder / "train.bin").write_bytes(recs[:4].tobytes())
    (folder / "test.bin").write_bytes(recs[4:].tobytes())
    (folder / "fine_label_names.txt").write_text("\n".join(f"fine{i}" for i in range(100)))
    (folder / "coarse_label_names.txt").write_text("\n".join(f"coarse{i}" for i in range(20)))
    for coarse_labels, expected, names in ((False, fine, 100), (True, coarse, 20)):
        conf = make_conf(tmp_path, f"data: {{dataset: c100, format: cifar100, path: '{tmp_path}', datasets_dir: '{tmp_path}/ds'}}\n"
                                   f"ingest: {{coarse_labels: {str(coarse_labels).lower()}}}")
        ingest(spark, conf)
        _, labels, meta = _read_split(conf, "train")
        np.testing.assert_array_equal(labels, expected[:4])
        assert meta.num_classes == names


def test_cifar_binary_of_wrong_size_names_file(tmp_path, spark):
    folder = tmp_path / "c"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(b"\0" * 3073)
    (folder / "test_batch.bin").write_bytes(b"\0" * 3000)
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES))
    conf = make_conf(tmp_path, f"data: {{dataset: c, format: cifar10, path: '{folder}', datasets_dir: '{tmp_path}/ds'}}")
    with pytest.raises(SourceError, match=r"test_batch.bin: 3000 bytes is not a whole number of 3073-byte CIFAR records"):
        ingest(spark, conf)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(UnsafePickleError, match=r"data_batch_1: refuses to load '(posix|os)\.system'"):
        load_data_pickle(str(path))
    assert not marker.exists()
    (tmp_path / "notpickle").write_bytes(b"hello")
    with pytest.raises(UnsafePickleError, match="notpickle: not a readable pickle"):
        load_data_pickle(str(tmp_path / "notpickle"))


def test_object_arrays_in_pickles_are_refused(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({"data": np.array([1, "x"], dtype=object)}))
    with pytest.raises(UnsafePickleError, match="dtype object"):
        load_data_pickle(str(path))


def test_npz_in_keras_layout(spark, tmp_path, foolbox_images):
    images, labels = _cifar_arrays(foolbox_images)
    path = tmp_path / "data.npz"
    np.savez_compressed(path, x_train=images[:14], y_train=labels[:14], x_test=images[14:], y_test=labels[14:])
    conf = make_conf(tmp_path, f"data: {{dataset: n, format: npz, path: '{path}', datasets_dir: '{tmp_path}/ds',"
                               f" cache_dir: '{tmp_path}/cache'}}")
    metas = ingest(spark, conf)
    assert metas["train"].num_rows == 14 and metas["test"].num_rows == 6
    test, test_labels, _ = _read_split(conf, "test")
    np.testing.assert_array_equal(test, images[14:])
    np.testing.assert_array_equal(test_labels, labels[14:])
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=images)
    conf = make_conf(tmp_path, f"data: {{dataset: n, format: npz, path: '{bad}', datasets_dir: '{tmp_path}/ds'}}")
    with pytest.raises(SourceError, match=r"bad.npz: missing array\(s\) x, y"):
        ingest(spark, conf)


def test_user_idx_folder_gzipped(spark, tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "idx"
    folder.mkdir()
    x, y = rng.integers(0, 256, (30, 7, 7), dtype=np.uint8), rng.integers(0, 4, 30).astype(np.uint8)
    idx.write_idx(str(folder / "train-images-idx3-ubyte.gz"), x)
    idx.write_idx(str(folder / "train-labels-idx1-ubyte.gz"), y)
    conf = make_conf(tmp_path, f"data: {{dataset: u, format: idx, path: '{folder}', datasets_dir: '{tmp_path}/ds',"
                               f" cache_dir: '{tmp_path}/cache'}}")
    metas = ingest(spark, conf)
    assert list(metas) == ["train"] and metas["train"].class_names == ["0", "1", "2", "3"][: int(y.max()) + 1]
    got, got_labels, _ = _read_split(conf, "train")
    np.testing.assert_array_equal(got[..., 0], x)


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed (make install installs it)")
def test_fashion_mnist_from_the_debian_package(spark, tmp_path):
    conf = make_conf(tmp_path, f"data: {{dataset: fashion_mnist, format: fashion_mnist, datasets_dir: '{tmp_path}/ds',"
                               f" cache_dir: '{tmp_path}/cache'}}\ningest: {{limit_train: 500, limit_test: 100}}")
    metas = ingest(spark, conf)
    assert metas["train"].num_rows == 500 and metas["test"].num_rows == 100
    assert metas["train"].class_names[0] == "T-shirt/top" and metas["train"].class_names[9] == "Ankle boot"
    _, labels, _ = _read_split(conf, "test")
    assert labels[:5].tolist() == [9, 2, 1, 1, 6]   # the published first test labels
