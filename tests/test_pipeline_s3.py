"""The whole pipeline with datasets and runs on s3:// (a real S3-protocol server on 127.0.0.1), run as a
user runs it (`sparkcnn ...` processes): the same datasets and predictions as the local run; ingest and
scoring SIGKILLed at random points leave the previous output readable through the manifest; a killed
training resumes from its checkpoint in S3."""
import json
import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core import storage
from pipelines.core.store import published_files, read_manifest

from conftest import kill_job, kill_rounds

pytestmark = pytest.mark.slow   # Horovod trainings and killed Spark jobs

SPARKCNN = os.path.join(os.path.dirname(sys.executable), "sparkcnn")
SETTINGS = """
spark: {master: "local[2]", driver_memory: 1g}
ingest: {limit_train: 4000, validation_rows: 500, limit_test: 1000, partition_mb: 1}
train: {model: torres, epochs: 2, batch_size: 64, num_proc: 2, deterministic: true, reader_workers: 1}
"""


def sparkcnn(conf, stage, *sets, timeout=900):
    """The stage run whatever its key says (--force all): these tests compare and kill real runs."""
    return subprocess.run([SPARKCNN, stage, "--conf", str(conf), "--force", "all",
                           *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=timeout)


def read_table(files, columns=None):
    tables = []
    for location in files:
        with storage.open_file(location, "rb") as f:
            tables.append(pq.read_table(f, columns=columns))
    return pa.concat_tables(tables)


def local_files(folder):
    real = os.path.realpath(folder)
    return [os.path.join(real, n) for n in sorted(os.listdir(real)) if n.endswith(".parquet")]


def by_id(table):
    order = np.argsort(table.column("id").to_numpy())
    return {name: table.column(name).combine_chunks().to_numpy(zero_copy_only=False)[order] for name in table.column_names}


@pytest.fixture(scope="module")
def s3_conf(s3_server, tmp_path_factory, mnist_files):
    root = tmp_path_factory.mktemp("s3pipe")
    conf = root / "s3.yaml"
    conf.write_text(f"""
run: {{name: s3run, runs_dir: '{s3_server.url("pipe", "runs")}'}}
data: {{datasets_dir: '{s3_server.url("pipe", "datasets")}'}}
""" + SETTINGS + s3_server.conf_yaml())
    with storage.using(s3_server.context()):
        yield root, conf


def test_run_on_s3_gives_the_same_datasets_and_predictions_as_local(s3_server, s3_conf):
    root, conf = s3_conf
    local = root / "local.yaml"
    local.write_text(f"run: {{name: localrun, runs_dir: {root}/runs}}\ndata: {{datasets_dir: {root}/datasets}}\n"
                     + SETTINGS)
    t0 = time.perf_counter()
    here = sparkcnn(local, "run")
    local_s = time.perf_counter() - t0
    assert here.returncode == 0, here.stderr[-3000:]
    t0 = time.perf_counter()
    there = sparkcnn(conf, "run", "tracking.mlflow=true", f"tracking.uri={root}/mlruns")
    s3_s = time.perf_counter() - t0
    assert there.returncode == 0, there.stdout[-2000:] + there.stderr[-3000:]
    print(f"sparkcnn run: local {local_s:.0f}s, S3 {s3_s:.0f}s ({s3_s / local_s:.2f}x)")

    for split in ("train", "val", "test"):
        mine = by_id(read_table(local_files(root / "datasets/mnist" / split)))
        theirs = by_id(read_table(published_files(s3_server.url("pipe", "datasets", "mnist", split))))
        assert np.array_equal(mine["id"], theirs["id"]) and np.array_equal(mine["label"], theirs["label"])
        assert b"".join(mine["image"]) == b"".join(theirs["image"]), split
    mine = by_id(read_table(local_files(root / "runs/localrun/predictions")))
    theirs = by_id(read_table(published_files(s3_server.url("pipe", "runs", "s3run", "predictions"))))
    assert np.array_equal(mine["id"], theirs["id"]) and len(mine["id"]) == 1000
    agree = np.mean(mine["prediction"] == theirs["prediction"])
    print(f"predictions agree on {agree:.4f} of rows")
    assert agree >= 0.99, agree            # same data, seeds and deterministic ops: the same model, near enough
    metrics = json.loads(storage.read_bytes(s3_server.url("pipe", "runs", "s3run", "metrics.json")))
    assert metrics["rows"] == 1000 and metrics["accuracy"] > 0.85
    report = read_manifest(s3_server.url("pipe", "runs", "s3run", "report"))
    names = {e["name"] for e in report["files"]}
    assert {"index.html", "samples.png", "confusion_matrix.png", "training_curves.png"} <= names
    assert f"report: {report['url']}/index.html" in there.stdout
    assert s3_server.secret not in there.stdout + there.stderr
    # MLflow (a local store here) got the run's files from S3: the model, the report, config without secrets
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"file://{root}/mlruns")
    run = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])[0]
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "report", "config.yaml", "metrics.json"} <= logged, logged
    assert {a.path for a in client.list_artifacts(run.info.run_id, "report")} >= {"report/index.html"}
    config = open(client.download_artifacts(run.info.run_id, "config.yaml", str(root))).read()
    assert s3_server.secret not in config and "<redacted>" in config
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])


def _snapshot(dest):
    """What a reader of this project sees through the manifest: rows, distinct ids, id and label sums."""
    table = read_table(published_files(dest), columns=["id", "label"])
    ids = table.column("id").to_numpy()
    return len(ids), len(np.unique(ids)), int(ids.sum()), int(table.column("label").to_numpy().sum())


def _unpublished(dest):
    keep = set((read_manifest(dest) or {}).get("versions", []))
    return [n for n in storage.listdir(dest) if n.startswith("v-") and n not in keep]


def _kill_rounds(conf, stage, outputs, window, seed, rounds=3):
    return kill_rounds([SPARKCNN, stage, "--conf", str(conf), "--force", "all"], _snapshot, outputs, rounds, window, seed,
                       f"{stage} on S3")


def test_ingest_and_scoring_killed_on_s3_keep_the_previous_output(s3_server, s3_conf):
    root, conf = s3_conf
    datasets = [s3_server.url("pipe", "datasets", "mnist", s) for s in ("train", "val", "test")]
    if not all(read_manifest(d) for d in datasets):
        assert sparkcnn(conf, "ingest").returncode == 0
    before = _kill_rounds(conf, "ingest", datasets, (2.0, 9.0), seed=5)
    again = sparkcnn(conf, "ingest")
    assert again.returncode == 0, again.stderr[-3000:]
    for d in datasets:
        assert _snapshot(d) == before[d]                         # same rows, no duplicates
        assert _unpublished(d) == [], _unpublished(d)            # the killed jobs' staging is gone
    assert _snapshot(datasets[0])[:2] == (3500, 3500)

    preds = s3_server.url("pipe", "runs", "s3run", "predictions")
    if not read_manifest(preds):
        from pipelines.core.tf_runtime import model_to_bytes
        from pipelines.training.networks import build_model
        storage.put_bytes(s3_server.url("pipe", "runs", "s3run", "model.keras"),
                          model_to_bytes(build_model("torres", (28, 28, 1), 10)))
        assert sparkcnn(conf, "score").returncode == 0
    _kill_rounds(conf, "score", [preds], (2.0, 8.0), seed=13)
    again = sparkcnn(conf, "score")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _snapshot(preds)[:2] == (1000, 1000) and _unpublished(preds) == []


def test_training_killed_after_an_epoch_resumes_from_the_checkpoint_in_s3(s3_server, s3_conf):
    root, conf = s3_conf
    if not read_manifest(s3_server.url("pipe", "datasets", "mnist", "train")):
        assert sparkcnn(conf, "ingest").returncode == 0
    run = ("run.name=s3resume", "train.epochs=3")
    state = s3_server.url("pipe", "runs", "s3resume", "checkpoints", "state.json")
    mark = uuid.uuid4().hex
    proc = subprocess.Popen([SPARKCNN, "train", "--conf", str(conf), *[a for s in run for a in ("--set", s)]],
                            env=dict(os.environ, SPARKCNN_TEST_MARK=mark), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (storage.exists(state)
                                               and json.loads(storage.read_bytes(state))["epoch"] >= 1):
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.5)
        assert storage.exists(state), "no checkpoint in S3 within 5 minutes"
    finally:
        kill_job(proc, mark)
    killed_at = json.loads(storage.read_bytes(state))["epoch"]
    assert 1 <= killed_at < 3
    assert not storage.exists(s3_server.url("pipe", "runs", "s3resume", "model.keras"))
    rerun = sparkcnn(conf, "train", *run)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming from the checkpoint after epoch {killed_at}" in rerun.stdout
    history = json.loads(storage.read_bytes(s3_server.url("pipe", "runs", "s3resume", "history.json")))
    assert history["resumed_after_epoch"] == killed_at and len(history["metrics"]["loss"]) == 3
    assert history["metrics"]["val_accuracy"][-1] > 0.85
    assert storage.exists(s3_server.url("pipe", "runs", "s3resume", "model.keras"))
    epochs = [n for n in storage.listdir(s3_server.url("pipe", "runs", "s3resume", "checkpoints"))
              if n.startswith("epoch-")]
    assert 1 <= len(epochs) <= 2
