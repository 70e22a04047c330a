"""Ingest through a real local Spark into real Parquet, read back by Spark, pyarrow and Petastorm."""
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.core import records
from pipelines.core.errors import IngestError, remote_error_message
from pipelines.ingest import idx
from pipelines.ingest.arrays import plan_splits, write_split
from pipelines.ingest.sources import open_idx_pair

from conftest import petastorm_first_pass


@pytest.fixture
def idx_pair(tmp_path):
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (500, 8, 6), dtype=np.uint8)
    labels = rng.integers(0, 3, 500).astype(np.uint8)
    ip, lp = str(tmp_path / "i-idx3-ubyte.gz"), str(tmp_path / "l-idx1-ubyte")
    idx.write_idx(ip, images)
    idx.write_idx(lp, labels)
    return ip, lp, images, labels


def _ingest(spark, tmp_path, ip, lp, validation_rows=100, classes=("a", "b", "c")):
    out = {}
    source = open_idx_pair(ip, lp, str(tmp_path / "scratch"))
    for part in plan_splits(source, None, validation_rows=validation_rows):
        out[part.split] = write_split(spark, part, str(tmp_path / "ds" / part.split), "toy", list(classes),
                                      partition_mb=64, row_group_mb=0.25)
    return out


def test_ingest_writes_contract_readable_everywhere(spark, tmp_path, idx_pair):
    ip, lp, images, labels = idx_pair
    metas = _ingest(spark, tmp_path, ip, lp)
    train_dir = str(tmp_path / "ds" / "train")
    assert metas["train"].num_rows == 400 and metas["val"].num_rows == 100
    assert records.read_meta(train_dir).shape == (8, 6, 1)
    assert sum(metas["train"].class_counts.values()) == 400

    # Spark
    frame = spark.read.parquet(train_dir)
    assert frame.columns == list(records.COLUMNS)
    assert frame.rdd.getNumPartitions() >= 1
    # pyarrow, pixel-exact and in source order
    table = pq.read_table(train_dir).sort_by("id")
    assert table.column("id").to_pylist() == list(range(400))
    np.testing.assert_array_equal(records.decode_images(table.column("image"), (8, 6, 1))[..., 0], images[:400])
    np.testing.assert_array_equal(table.column("label").to_numpy(), labels[:400])
    val = pq.read_table(str(tmp_path / "ds" / "val"))
    assert sorted(val.column("id").to_pylist()) == list(range(400, 500))
    # Petastorm (what training reads): its first pass delivers every row exactly once
    assert sorted(petastorm_first_pass(train_dir, 400, ["id", "image"])) == list(range(400))


def test_rerun_gives_the_same_dataset_without_duplicates(spark, tmp_path, idx_pair):
    ip, lp, *_ = idx_pair
    _ingest(spark, tmp_path, ip, lp)
    first = pq.read_table(str(tmp_path / "ds" / "train")).sort_by("id")
    _ingest(spark, tmp_path, ip, lp)
    second = pq.read_table(str(tmp_path / "ds" / "train")).sort_by("id")
    assert second.num_rows == 400 and second.equals(first)


def test_small_row_groups_give_petastorm_units_to_shard(spark, tmp_path, idx_pair):
    ip, lp, *_ = idx_pair
    _ingest(spark, tmp_path, ip, lp, validation_rows=0)
    files = [f for f in os.listdir(tmp_path / "ds" / "train") if f.endswith(".parquet")]
    assert len(files) >= spark.sparkContext.defaultParallelism


def test_label_outside_class_list_fails_naming_file_and_row(spark, tmp_path, idx_pair):
    ip, lp, _, labels = idx_pair
    bad = labels.copy()
    bad[123] = 9
    idx.write_idx(lp, bad)
    with pytest.raises(Exception, match=r"i-idx3-ubyte: label 9 at row 123 is outside 0..2") as err:
        _ingest(spark, tmp_path, ip, lp)
    # raised inside a Spark task; the CLI reduces Spark's wrapper to this one line
    assert remote_error_message(err.value).endswith("i-idx3-ubyte: label 9 at row 123 is outside 0..2")
    assert not (tmp_path / "ds" / "train").exists()


def test_validation_larger_than_data_is_a_clear_error(tmp_path, idx_pair):
    ip, lp, *_ = idx_pair
    with pytest.raises(IngestError, match="validation_rows=500 leaves no training rows out of 500"):
        plan_splits(open_idx_pair(ip, lp, str(tmp_path / "s")), None, validation_rows=500)
