"""Scheduling: exit codes by failure kind, run locks (local flock, S3 conditional PUT + heartbeat),
progress lines, the line relay, events.jsonl, and incremental ingest of an image folder."""
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.core import storage
from pipelines.core.errors import EXIT_CONFIG, EXIT_DATA, EXIT_LOCKED, EXIT_RETRY, LockHeld, classify
from pipelines.core.events import read_events, summary_of
from pipelines.core.line_relay import LineRelay, RelayAddress, RelayHandler
from pipelines.core.progress import StageProgress, format_line
from pipelines.core.run_lock import RunLock, lock_location
from pipelines.core.store import published_files, resolve

from conftest import logged_lines, make_conf

SPARKCNN = os.path.join(os.path.dirname(sys.executable), "sparkcnn")


# -- exit codes ---------------------------------------------------------------------------------

def test_each_failure_kind_has_its_exit_code():
    from pipelines.core.config import ConfigError
    from pipelines.core.errors import IngestCheckError, IngestSetupError
    from pipelines.core.leases import PublishConflict
    from pipelines.ingest.fetch import ChecksumError, FetchError
    from pipelines.ingest.idx import IdxFormatError
    from pipelines.training.launch import TrainError, WorkerLostError
    cases = [(ConfigError("x"), EXIT_CONFIG), (IngestSetupError("x"), EXIT_CONFIG), (TrainError("x"), EXIT_CONFIG),
             (FileNotFoundError("x"), EXIT_CONFIG), (PermissionError("x"), EXIT_CONFIG),
             (IdxFormatError("x"), EXIT_DATA), (ChecksumError("x"), EXIT_DATA),
             (WorkerLostError("x"), EXIT_RETRY), (FetchError("x"), EXIT_RETRY), (IngestCheckError("x"), EXIT_RETRY),
             (PublishConflict("x"), EXIT_RETRY), (ConnectionRefusedError("x"), EXIT_RETRY),
             (storage.StorageError("x"), EXIT_RETRY), (LockHeld("x"), EXIT_LOCKED)]
    for exc, code in cases:
        assert classify(exc) == (code, "x"), type(exc).__name__
    assert classify(ValueError("a bug")) is None and classify(KeyError("k")) is None


@pytest.mark.slow   # a Spark job
def test_an_error_raised_in_a_spark_task_keeps_its_exit_code(spark):
    def task(_):
        from pipelines.ingest.idx import IdxFormatError
        raise IdxFormatError("/data/x-idx3-ubyte: header says 5 items")
    with pytest.raises(Exception) as info:
        spark.sparkContext.parallelize([1], 1).map(task).collect()
    assert classify(info.value) == (EXIT_DATA, "/data/x-idx3-ubyte: header says 5 items")


@pytest.mark.slow   # two CLI processes
def test_cli_config_error_exits_2_and_help_lists_the_codes(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(f"run: {{name: x, runs_dir: {tmp_path}/runs}}\ntrain: {{epoch: 3}}\n")
    proc = subprocess.run([SPARKCNN, "train", "--conf", str(conf)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("sparkcnn train: error:")
    assert "unknown key 'train.epoch'" in proc.stderr
    helped = subprocess.run([SPARKCNN, "run", "--help"], capture_output=True, text=True, timeout=120)
    for code in ("0", "2", "3", "4", "5"):
        assert f"\n  {code}  " in helped.stdout, helped.stdout[-1500:]
    assert "--force STAGE|all" in helped.stdout


@pytest.mark.slow   # the S3 client retries for ~12 s before it gives up
def test_cli_exits_4_when_the_store_cannot_be_reached(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(f"""
run: {{name: unreachable, runs_dir: {tmp_path}/runs}}
data: {{datasets_dir: 's3://nightly/datasets'}}
storage: {{options: {{endpoint_url: 'http://127.0.0.1:9', region_name: us-east-1, key: AKIAX, secret: very-secret-value}}}}
""")
    proc = subprocess.run([SPARKCNN, "ingest", "--conf", str(conf)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_RETRY, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sparkcnn ingest: error: s3://nightly/datasets/mnist/_sparkcnn.lock: the store could "
                           "not be reached"), last
    assert "Traceback" not in proc.stderr and "very-secret-value" not in proc.stdout + proc.stderr


# -- locks --------------------------------------------------------------------------------------

def test_local_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    folder = str(tmp_path / "run")
    with RunLock(folder, "run directory", "sparkcnn train --conf a.yaml"):
        with pytest.raises(LockHeld) as info:
            RunLock(folder, "run directory", "sparkcnn train --conf b.yaml").acquire()
        assert "sparkcnn train --conf a.yaml" in str(info.value) and f"pid {os.getpid()}" in str(info.value)
    RunLock(folder, "run directory", "again").acquire().release()          # released: free again
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pipelines.core.run_lock import RunLock; "
        f"RunLock({folder!r}, 'run directory', 'holder').acquire(); print('held', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockHeld):
        RunLock(folder, "run directory", "me").acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    RunLock(folder, "run directory", "me").acquire().release()              # the kernel dropped the dead holder's lock


@pytest.mark.slow   # a CLI process
def test_cli_exits_5_when_the_run_directory_is_locked(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(f"run: {{name: locked, runs_dir: {tmp_path}/runs}}\n")
    with RunLock(str(tmp_path / "runs" / "locked"), "run directory", "sparkcnn run --conf nightly.yaml"):
        proc = subprocess.run([SPARKCNN, "report", "--conf", str(conf)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_LOCKED, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("sparkcnn report: error:") and "sparkcnn run --conf nightly.yaml" in line
    end = [e for e in read_events(str(tmp_path / "runs" / "locked")) if e["event"] == "command_end"]
    assert end[-1]["exit_code"] == EXIT_LOCKED


def test_s3_lock_heartbeat_takeover_and_race(s3_storage):
    folder = s3_storage.url("locks", "run1")
    first = RunLock(folder, "run directory", "first", ttl=1.0).acquire()
    try:
        time.sleep(1.6)                                      # longer than the ttl: only the heartbeat keeps it
        with pytest.raises(LockHeld):
            RunLock(folder, "run directory", "second", ttl=1.0).acquire()
    finally:
        first.release()
    assert not storage.exists(lock_location(folder))          # released: the object is gone
    # A holder on another host that stopped beating: taken over once its ttl has passed.
    stale = {"owner": "1-abc-otherhost", "host": "otherhost", "pid": 1, "command": "old", "started": 0,
             "heartbeat": time.time() - 30, "ttl": 10}
    storage.put_bytes(lock_location(folder), json.dumps(stale).encode())
    seen = storage.etag(lock_location(folder))
    with logged_lines() as said:
        taker = RunLock(folder, "run directory", "taker", ttl=10).acquire()
    try:
        assert any("took over the stale lock" in m for m in said)
        with pytest.raises(storage.PreconditionFailed):       # a second taker holding the same stale ETag loses
            storage.put_bytes(lock_location(folder), b"{}", if_match=seen)
        with pytest.raises(LockHeld):
            RunLock(folder, "run directory", "late", ttl=10).acquire()
    finally:
        taker.release()
    fresh = dict(stale, heartbeat=time.time())               # a live holder elsewhere: never taken over
    storage.put_bytes(lock_location(folder), json.dumps(fresh).encode())
    with pytest.raises(LockHeld):
        RunLock(folder, "run directory", "me", ttl=10).acquire()


# -- progress, relay, events --------------------------------------------------------------------

def test_progress_lines_while_a_spark_job_runs(spark):
    with logged_lines() as lines, StageProgress(spark, "ingest", every=0.3):
        spark.sparkContext.parallelize(range(4), 4).map(lambda x: time.sleep(0.5 + x * 0.2)).collect()
    assert len(lines) >= 3, lines
    assert all(line.startswith("[ingest] progress: ") and "s elapsed" in line for line in lines)
    assert any("/4 tasks" in line for line in lines), lines
    assert format_line("x", 3, 12, 2, 30.0, 10.0, 6000) == \
        "[x] progress: 3/12 tasks (25%), ~1500/6000 rows, 0.10 tasks/s, ETA 90 s, 2 running, 30 s elapsed"


# A Horovod rank as far as the relay sees it: another process, logging on "sparkcnn" loggers inside relayed().
RANK = """
import logging, sys
from pipelines.core.line_relay import RelayAddress, relayed
host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with relayed(RelayAddress(host, port, token)):
    logging.getLogger("sparkcnn.training").info("[train] epoch 1/3: loss 0.5")
    print("sent", flush=True)
    sys.stdin.readline()                             # still connected until the test says so
    logging.getLogger("sparkcnn.training").warning("[train] epoch 2/3: loss 0.4")
    logging.getLogger("sparkcnn.core").info("[gpu] rank 1 -> GPU 1")
"""


def test_relayed_records_reach_the_drivers_loggers_as_they_are_sent():
    got, arrived = [], threading.Event()

    class Arrivals(logging.Handler):
        def emit(self, record):
            got.append((record.name, record.levelno, record.getMessage(), time.monotonic()))
            arrived.set()
    logger = logging.getLogger("sparkcnn")
    arrivals, before = Arrivals(), logger.level
    logger.addHandler(arrivals)
    logger.setLevel(logging.INFO)
    try:
        with LineRelay("127.0.0.1") as relay:
            a = relay.address
            rank = subprocess.Popen([sys.executable, "-c", RANK, a.host, str(a.port), a.token], text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__))))
            assert rank.stdout.readline().strip() == "sent"
            sent_at = time.monotonic()
            assert arrived.wait(5), "the line did not arrive while the sender was still open"
            assert got[0][:3] == ("sparkcnn.training", logging.INFO, "[train] epoch 1/3: loss 0.5")
            assert got[0][3] - sent_at < 2 and rank.poll() is None
            intruder = RelayHandler(RelayAddress("127.0.0.1", a.port, "wrong-token"))
            intruder.handle(logging.makeLogRecord({"name": "sparkcnn.training", "msg": "injected",
                                                   "levelno": logging.INFO, "levelname": "INFO"}))
            intruder.close()
            rank.communicate("go on\n", timeout=30)
            time.sleep(0.5)
    finally:
        logger.removeHandler(arrivals)
        logger.setLevel(before)
    assert rank.returncode == 0
    assert [g[:3] for g in got] == [("sparkcnn.training", logging.INFO, "[train] epoch 1/3: loss 0.5"),
                                    ("sparkcnn.training", logging.WARNING, "[train] epoch 2/3: loss 0.4"),
                                    ("sparkcnn.core", logging.INFO, "[gpu] rank 1 -> GPU 1")]


def test_a_record_without_a_relay_is_printed(capsys):
    RelayHandler(None).handle(logging.makeLogRecord({"name": "sparkcnn.training", "msg": "[train] epoch 1/1",
                                                     "levelno": logging.INFO, "levelname": "INFO"}))
    assert capsys.readouterr().out == "[train] epoch 1/1\n"


def test_event_summaries_keep_counts_not_arrays():
    from pipelines.core.records import DatasetMeta
    meta = DatasetMeta(name="m", split="train", num_rows=5, height=2, width=2, channels=1, class_names=["a"],
                       class_counts={"0": 5})
    out = summary_of({"train": meta, "accuracy": np.float64(0.5), "series": list(range(100)), "arr": np.zeros(3)})
    assert out["train"]["num_rows"] == 5 and out["accuracy"] == 0.5 and "series" not in out and "arr" not in out
    json.dumps(out)


# -- incremental ingest of an image folder --------------------------------------------------------

def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _content(dataset_root: str) -> dict:
    """{split: sorted [(id, label, image bytes)]} and the rejects, as published."""
    out = {}
    for split in ("train", "test", "rejects"):
        rows = []
        for location in published_files(storage.join(dataset_root, split)):
            with storage.open_file(location, "rb") as f:
                rows.extend(pq.read_table(f).to_pylist())
        out[split] = sorted(((r["path"], r["reason"]) if split == "rejects" else (r["id"], r["label"], r["image"])
                             for r in rows), key=lambda t: t[0])
    return out


def _part_identity(location: str):
    """What a carried-over part shares with its previous version: the inode locally, the bytes' ETag on S3."""
    return os.stat(location).st_ino if not storage.is_remote(location) else storage.etag(location)


@pytest.mark.slow   # three Spark ingests
@pytest.mark.parametrize("where", ["local", "s3"])
def test_incremental_folder_ingest_equals_a_full_one(spark, tmp_path, where, request):
    from pipelines.ingest.stage import ingest
    if where == "s3":
        server = request.getfixturevalue("s3_storage")
        datasets, storage_conf = server.url(tmp_path.name, "DIR"), server.conf_yaml()
    else:
        datasets, storage_conf = f"{tmp_path}/DIR", ""
    root = tmp_path / "imgs"
    for k in range(120):
        folder = root / f"class{k % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{k:03d}.png").write_bytes(_png(k))
    (root / "class1" / "broken.png").write_bytes(b"\x89PNG not really")
    text = f"""
run: {{name: inc, runs_dir: {tmp_path}/runs}}
data: {{format: folder, path: {root}, dataset: shapes, datasets_dir: '{datasets}'}}
ingest: {{partition_mb: 1, test_fraction: 0.25}}
""" + storage_conf
    cfg = make_conf(tmp_path, text.replace("DIR", "ds"))
    ingest(spark, cfg)
    dataset = storage.join(datasets.replace("DIR", "ds"), "shapes")
    parts_before = {_part_identity(p) for split in ("train", "test") for p in published_files(storage.join(dataset, split))}

    time.sleep(0.05)
    for k in range(120, 130):                                             # 10 new
        (root / f"class{k % 4}" / f"img{k:03d}.png").write_bytes(_png(k))
    for k in (1, 2, 3):                                                   # 3 changed
        (root / f"class{k % 4}" / f"img{k:03d}.png").write_bytes(_png(1000 + k))
    for k in (4, 5):                                                      # 2 removed
        os.remove(root / f"class{k % 4}" / f"img{k:03d}.png")
    with logged_lines() as log:
        metas = ingest(spark, cfg)
    said = "\n".join(log)
    assert "incremental: 10 new, 3 changed, 2 removed, 116 unchanged since the last ingest" in said, said
    reads = [line for line in log if " = written " in line]
    total = {k: sum(int(line.split(f"{k} ")[1].split()[0].rstrip(";")) for line in reads)
             for k in ("read", "written", "rejected", "unchanged")}
    assert total == {"read": 129, "written": 13, "rejected": 0, "unchanged": 116}, reads
    assert sum(m.num_rows for m in metas.values()) == 128 and sum(m.rejected for m in metas.values()) == 1
    parts_after = {_part_identity(p) for split in ("train", "test") for p in published_files(storage.join(dataset, split))}
    assert parts_before & parts_after, "no part file was carried over: everything was decoded again"

    with storage.open_file(storage.join(resolve(storage.join(dataset, "files")), "part-00000.parquet")) as f:
        index = pq.read_table(f)
    statuses = index.column("status").to_pylist()
    assert statuses.count("removed") == 2 and statuses.count("rejected") == 1 and statuses.count("row") == 128

    full = make_conf(tmp_path, text.replace("DIR", "full"))
    ingest(spark, full)
    assert _content(dataset) == _content(storage.join(datasets.replace("DIR", "full"), "shapes"))


@pytest.mark.slow   # three Spark ingests
def test_a_file_list_ingests_like_its_folder_and_incrementally(spark, tmp_path):
    from pipelines.ingest.stage import ingest
    root = tmp_path / "photos"
    for k in range(60):
        split = "test" if k % 5 == 0 else "train"
        folder = root / split / f"c{k % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"p{k:02d}.png").write_bytes(_png(k))
    listed = sorted(str(p.relative_to(tmp_path)) for p in root.rglob("*.png"))
    file_list = tmp_path / "photos.txt"
    file_list.write_text("# tonight's photos\n" + "\n".join(listed[:50] + ["photos/train/c1/missing.png"]) + "\n")
    text = f"""
run: {{name: lst, runs_dir: {tmp_path}/runs}}
data: {{format: folder, path: PATH, dataset: photos, datasets_dir: {tmp_path}/DIR}}
"""
    cfg = make_conf(tmp_path, text.replace("PATH", str(file_list)).replace("DIR", "ds"))
    ingest(spark, cfg)
    rejects = _content(str(tmp_path / "ds" / "photos"))["rejects"]
    assert [(p.rsplit("/", 1)[1], reason.split(":")[0]) for p, reason in rejects] == \
        [("missing.png", "unreadable file")]

    file_list.write_text("\n".join(listed) + "\n")                     # ten more files listed
    with logged_lines() as log:
        ingest(spark, cfg)
    assert any("incremental: 10 new, 0 changed, 1 removed, 50 unchanged" in line for line in log), log
    folder_cfg = make_conf(tmp_path, text.replace("PATH", str(root)).replace("DIR", "full"))
    ingest(spark, folder_cfg)
    assert _content(str(tmp_path / "ds" / "photos")) == _content(str(tmp_path / "full" / "photos"))


@pytest.mark.slow   # a full MNIST ingest, stopped
def test_sigterm_discards_what_was_half_written_and_exits_143(tmp_path, mnist_files):
    conf = tmp_path / "c.yaml"
    conf.write_text(f"""
run: {{name: term, runs_dir: {tmp_path}/runs}}
spark: {{master: "local[2]", driver_memory: 1g}}
data: {{datasets_dir: {tmp_path}/ds}}
ingest: {{validation_rows: 5000, partition_mb: 4}}
""")
    proc = subprocess.Popen([SPARKCNN, "ingest", "--conf", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("[ingest] running"):
            break
    deadline = time.time() + 60
    while time.time() < deadline and not any(".staging-" in n for n in os.listdir(tmp_path / "ds" / "mnist")
                                             if (tmp_path / "ds" / "mnist").exists()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("sparkcnn ingest: error: stopped by SIGTERM"), err[-2000:]
    time.sleep(2)                                            # a cancelled task would write after this point
    left = [n for n in os.listdir(tmp_path / "ds" / "mnist") if ".staging-" in n]
    assert left == [] and not (tmp_path / "ds" / "mnist" / "train").exists(), left
    end = [e for e in read_events(str(tmp_path / "runs" / "term")) if e["event"] == "command_end"][-1]
    assert end["exit_code"] == 143


def test_the_code_version_is_the_same_from_the_py_files_zip(tmp_path):
    """spark-submit --py-files runs the library from a zip: its stage keys must match an installed run's."""
    from pipelines.core.stage_cache import code_version
    from pipelines.train.key import TRAIN_KEY
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    zipped = tmp_path / "libs.zip"
    subprocess.run([sys.executable, os.path.join(root, "scripts", "make_pyfiles.py"), str(zipped)], check=True,
                   cwd=root, capture_output=True, timeout=120)
    out = subprocess.run([sys.executable, "-c", "import pipelines, sys; from pipelines.core.stage_cache import "
                          "code_version; from pipelines.train.key import TRAIN_KEY; "
                          "assert pipelines.__file__.startswith(sys.argv[1]); print(code_version(TRAIN_KEY))",
                          str(zipped)], env=dict(os.environ, PYTHONPATH=str(zipped)), cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == code_version(TRAIN_KEY)
