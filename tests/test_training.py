"""Training that survives real use: SIGKILL mid-training, rerun, it resumes from the last epoch
checkpoint and ends with the configured epoch count and a continuous history."""
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from pipelines.core.records import open_dataset
from pipelines.core.store import RunStore, write_json_atomic
from pipelines.training.driver import make_spec
from pipelines.training.resume import plan_resume

from conftest import kill_job, logged_lines

pytestmark = pytest.mark.slow   # Horovod trainings

SPARKCNN = os.path.join(os.path.dirname(sys.executable), "sparkcnn")


@pytest.fixture(scope="module")
def small_conf(tmp_path_factory, mnist_files):
    root = tmp_path_factory.mktemp("resume")
    conf = root / "resume.yaml"
    conf.write_text(f"""
run: {{name: resume, runs_dir: {root}/runs}}
spark: {{master: "local[2]", driver_memory: 1g}}
data: {{datasets_dir: {root}/datasets}}
ingest: {{limit_train: 4000, validation_rows: 500, limit_test: 500}}
train: {{model: torres, epochs: 3, batch_size: 64, num_proc: 2, warmup_epochs: 1}}
""")
    subprocess.run([SPARKCNN, "ingest", "--conf", str(conf)], check=True, capture_output=True, timeout=300)
    return root, conf


def test_killed_training_resumes_from_last_checkpoint(small_conf):
    root, conf = small_conf
    state = root / "runs/resume/checkpoints/state.json"
    mark = uuid.uuid4().hex
    env = dict(os.environ, SPARKCNN_TEST_MARK=mark)
    proc = subprocess.Popen([SPARKCNN, "train", "--conf", str(conf)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (state.exists() and json.loads(state.read_text())["epoch"] >= 1):
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.5)
        assert state.exists(), "no checkpoint within 5 minutes"
    finally:
        kill_job(proc, mark)
    killed_at = json.loads(state.read_text())["epoch"]
    assert 1 <= killed_at < 3 and not (root / "runs/resume/model.keras").exists()

    rerun = subprocess.run([SPARKCNN, "train", "--conf", str(conf)], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming from the checkpoint after epoch {killed_at}" in rerun.stdout
    history = json.loads((root / "runs/resume/history.json").read_text())
    assert history["resumed_after_epoch"] == killed_at
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history["metrics"][key]) == 3, key               # the configured epoch count, in one history
    assert len(history["epoch_seconds"]) == 3
    assert history["metrics"]["val_accuracy"][-1] > 0.85
    assert (root / "runs/resume/saved_model/saved_model.pb").exists()
    assert len([n for n in os.listdir(root / "runs/resume/checkpoints") if n.startswith("epoch-")]) <= 2


def test_changed_setup_starts_afresh(small_conf, tmp_path):
    root, conf = small_conf
    from pipelines.stages import load_config
    cfg = load_config(str(conf), ["run.runs_dir=" + str(tmp_path), "train.batch_size=32"])
    store = RunStore(cfg.run_dir)
    write_json_atomic(os.path.join(store.checkpoint_dir, "state.json"),
                      {"epoch": 2, "prefix": os.path.join(store.checkpoint_dir, "epoch-0002", "ckpt"),
                       "fingerprint": "from-another-setup", "history": {}})
    train = open_dataset(cfg.dataset_dir("train"))
    with logged_lines() as logs:
        spec = plan_resume(make_spec(cfg.train, train, open_dataset(cfg.dataset_dir("val"))), train.meta, store)
    assert spec.initial_epoch == 0 and spec.resume_prefix is None
    assert logs == ["[train] not resuming (the training setup changed): starting from epoch 0"]
    assert os.listdir(store.checkpoint_dir) == []


def split_for(spark, cfg, logs):
    from pipelines.training.validation_split import held_out_datasets
    with logged_lines() as said:
        train, val = held_out_datasets(spark, cfg.train, open_dataset(cfg.dataset_dir(cfg.train.split)), None,
                                       RunStore(cfg.run_dir), cfg.ingest.row_group_mb)
    logs += said
    return train.location, val.location


def test_validation_by_fraction_and_by_column(small_conf, spark, tmp_path):
    """train.validation as Horovod's estimators take it: a fraction of the rows, or a 0/1 column."""
    from pipelines.core import records
    from pipelines.stages import load_config
    from pipelines.training.validation_split import ValidationSplitError
    root, conf = small_conf
    source = load_config(str(conf)).dataset_dir("train")
    all_ids = {r["id"] for r in spark.read.parquet(source).select("id").collect()}

    def ids(path):
        return [r["id"] for r in spark.read.parquet(path).select("id").collect()]

    logs = []
    cfg = load_config(str(conf), [f"run.runs_dir={tmp_path}", "train.validation=0.1"])
    train_dir, val_dir = split_for(spark, cfg, logs)
    train_ids, val_ids = ids(train_dir), ids(val_dir)
    assert set(train_ids) | set(val_ids) == all_ids and not set(train_ids) & set(val_ids)
    assert len(train_ids) == len(set(train_ids)) and 250 <= len(val_ids) <= 450      # ~10% of 3,500
    assert records.read_meta(val_dir).num_rows == len(val_ids)
    again = split_for(spark, cfg, logs)       # a rerun reuses the split
    assert again == (train_dir, val_dir) and "reusing" in logs[-1] and sorted(ids(val_dir)) == sorted(val_ids)

    # a dataset that carries its own 0/1 column
    with_col = tmp_path / "datasets" / "withcol" / "train"
    frame = spark.read.parquet(source)
    frame.withColumn("is_val", (frame["id"] % 5 == 0).cast("int")).write.parquet(str(with_col))
    records.write_meta(str(with_col), records.read_meta(source))
    cfg = load_config(str(conf), [f"run.runs_dir={tmp_path}", f"data.datasets_dir={tmp_path}/datasets",
                                  "data.dataset=withcol", "train.validation=is_val"])
    train_dir, val_dir = split_for(spark, cfg, logs)
    assert sorted(ids(val_dir)) == sorted(i for i in all_ids if i % 5 == 0)
    assert len(ids(train_dir)) == len(all_ids) - len(ids(val_dir))
    assert "is_val" not in spark.read.parquet(val_dir).columns

    cfg = load_config(str(conf), [f"run.runs_dir={tmp_path}", "run.name=nocol", "train.validation=is_holdout"])
    with pytest.raises(ValidationSplitError, match="names column 'is_holdout'"):
        split_for(spark, cfg, logs)


def test_a_dead_horovod_worker_exits_4_with_one_line(small_conf):
    """A rank killed mid-training (OOM killer, lost executor): exit 4, retryable, one line, an event."""
    import psutil

    from pipelines.core.events import read_events
    root, conf = small_conf
    mark = uuid.uuid4().hex
    proc = subprocess.Popen([SPARKCNN, "train", "--conf", str(conf), "--set", "run.name=dead_rank",
                             "--set", "train.epochs=20"], env=dict(os.environ, SPARKCNN_TEST_MARK=mark),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and proc.poll() is None:
        for p in psutil.process_iter():
            try:
                env = p.environ()
            except (psutil.Error, OSError):
                continue
            if env.get("SPARKCNN_TEST_MARK") == mark and env.get("HOROVOD_RANK") == "1" \
                    and any("train_worker" in part or "horovod" in part for part in p.cmdline()):
                if (root / "runs/dead_rank/checkpoints/state.json").exists():   # training is under way
                    p.kill()
                    killed = p.pid
                break
        time.sleep(0.5)
    assert killed is not None, "no Horovod rank 1 found to kill"
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 4, out[-2000:] + err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("sparkcnn train: error: a Horovod worker process died") and "again" in last, last
    end = [e for e in read_events(str(root / "runs/dead_rank")) if e["event"] == "command_end"][-1]
    assert end["exit_code"] == 4 and "Horovod worker" in end["message"]
