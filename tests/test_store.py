import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.store import (
    RunStore,
    atomic_dir,
    atomic_dirs,
    read_json,
    write_json_atomic,
)


def _write_table(path, n):
    os.makedirs(path, exist_ok=True)
    pq.write_table(pa.table({"x": list(range(n))}), os.path.join(path, "part-0.parquet"))


def test_publish_replaces_content_and_cleans_old_versions(tmp_path):
    dest = str(tmp_path / "ds")
    with atomic_dir(dest) as staging:
        _write_table(staging, 3)
    assert pq.read_table(dest).num_rows == 3
    with atomic_dir(dest) as staging:
        _write_table(staging, 5)
    assert pq.read_table(dest).num_rows == 5
    assert sorted(n.split(".")[1].split("-")[0] for n in os.listdir(tmp_path) if n != "ds") == ["v"]


def test_failure_inside_block_keeps_previous_output(tmp_path):
    dest = str(tmp_path / "ds")
    with atomic_dir(dest) as staging:
        _write_table(staging, 3)
    with pytest.raises(RuntimeError):
        with atomic_dir(dest) as staging:
            _write_table(staging, 9)
            raise RuntimeError("job failed mid-write")
    assert pq.read_table(dest).num_rows == 3
    assert not [n for n in os.listdir(tmp_path) if ".staging-" in n]


def test_outputs_of_one_job_are_published_together_or_not_at_all(tmp_path):
    train, test, rejects = (str(tmp_path / n) for n in ("train", "test", "rejects"))
    with atomic_dirs([train, test, rejects]) as staging:
        for dest, rows in ((train, 3), (test, 2), (rejects, 1)):
            assert os.path.isdir(staging[dest])             # made up front: tasks write into them
            _write_table(staging[dest], rows)
    assert [pq.read_table(d).num_rows for d in (train, test, rejects)] == [3, 2, 1]
    with pytest.raises(RuntimeError):
        with atomic_dirs([train, test, rejects]) as staging:
            _write_table(staging[train], 30)
            _write_table(staging[test], 20)
            raise RuntimeError("a check failed after the tasks wrote")
    assert [pq.read_table(d).num_rows for d in (train, test, rejects)] == [3, 2, 1]
    with atomic_dirs([train, test, rejects]) as staging:
        _write_table(staging[train], 5)
        _write_table(staging[rejects], 0)
        shutil.rmtree(staging[test])                           # a split with no rows is not written
    assert [pq.read_table(d).num_rows for d in (train, test, rejects)] == [5, 2, 0]
    assert not [n for n in os.listdir(tmp_path) if ".staging-" in n]


def test_plain_directory_destination_is_replaced(tmp_path):
    dest = str(tmp_path / "ds")
    _write_table(dest, 2)
    with atomic_dir(dest) as staging:
        _write_table(staging, 4)
    assert os.path.islink(dest) and pq.read_table(dest).num_rows == 4


def test_sigkill_mid_write_leaves_previous_output_readable(tmp_path):
    """A real process killed with SIGKILL while writing; the next writer cleans up after it."""
    dest = str(tmp_path / "ds")
    with atomic_dir(dest) as staging:
        _write_table(staging, 3)
    script = textwrap.dedent(f"""
        import os, sys, time
        import pyarrow as pa, pyarrow.parquet as pq
        from pipelines.core.store import atomic_dir
        with atomic_dir({dest!r}) as staging:
            os.makedirs(staging)
            for i in range(1000):
                pq.write_table(pa.table({{"x": [i]}}), os.path.join(staging, f"part-{{i}}.parquet"))
                if i == 5:
                    print("writing", flush=True)
                time.sleep(0.01)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert pq.read_table(dest).num_rows == 3
    assert [n for n in os.listdir(tmp_path) if ".staging-" in n], "the killed writer's staging dir should exist"
    with atomic_dir(dest) as staging:
        _write_table(staging, 7)
    assert pq.read_table(dest).num_rows == 7
    assert not [n for n in os.listdir(tmp_path) if ".staging-" in n]


def test_json_written_atomically_and_timings_accumulate(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    store.record_timing("ingest", 1.234)
    store.record_timing("train", 5)
    assert read_json(store.timings_path) == {"ingest": 1.23, "train": 5}
    write_json_atomic(store.metrics_path, {"a": 1})
    assert read_json(store.metrics_path) == {"a": 1}
    assert not [n for n in os.listdir(store.root) if ".tmp-" in n]
    with pytest.raises(FileNotFoundError, match="run `sparkcnn train`"):
        store.require(store.model_path, "train")
