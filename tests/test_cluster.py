"""A real Spark standalone cluster on loopback (a master and two workers, separate JVMs), the pipeline
submitted with spark-submit and the library shipped by --py-files; Horovod runs inside the executors.
Then a worker is SIGKILLed while ingest and while scoring run: Spark re-runs the lost tasks and the
outputs still hold exactly the input's rows."""
import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from local_cluster import LocalCluster, free_port, submit_command  # noqa: E402

pytestmark = pytest.mark.slow   # a standalone Spark cluster: make test runs it, make test-fast does not


@pytest.fixture(scope="module")
def py_files(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dist") / "sparkcnn-libs.zip")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_pyfiles.py"), out], check=True, cwd=ROOT)
    return out


def _conf(root, text):
    path = root / "cluster.yaml"
    path.write_text(f"run: {{name: c, runs_dir: {root}/runs}}\ndata: {{datasets_dir: {root}/datasets}}\n" + text)
    return str(path)


def _ids(path):
    t = pq.read_table(os.path.realpath(path), columns=["id", "label"])
    ids = t.column("id").to_pylist()
    return len(ids), len(set(ids)), sum(t.column("label").to_pylist())


def _wait_for_running_tasks(ui_port, proc, timeout=300):
    """Block until the driver reports an active stage with running tasks (or the job ended)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/api/v1/applications", timeout=2) as r:
                app = json.load(r)[0]["id"]
            with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/api/v1/applications/{app}/stages?status=active",
                                        timeout=2) as r:
                if any(s["numActiveTasks"] > 0 for s in json.load(r)):
                    return True
        except (OSError, ValueError, IndexError, KeyError):
            pass
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("stage", ["ingest", "score"])
def test_worker_killed_mid_job_still_completes(tmp_path, py_files, mnist_files, stage):
    conf = _conf(tmp_path, "ingest: {validation_rows: 5000, partition_mb: 2}\n")
    expected = {"ingest": [("datasets/mnist/train", 55000), ("datasets/mnist/val", 5000), ("datasets/mnist/test", 10000)],
                "score": [("runs/c/predictions", 10000)]}[stage]
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    if stage == "score":   # needs test data and a model; prepared in local mode
        sparkcnn = os.path.join(os.path.dirname(sys.executable), "sparkcnn")
        subprocess.run([sparkcnn, "ingest", "--conf", conf, "--set", "ingest.limit_train=1000", "--set", "ingest.validation_rows=0"], check=True,
                       capture_output=True, timeout=600)
        from pipelines.training.networks import build_model
        os.makedirs(tmp_path / "runs/c", exist_ok=True)
        build_model("torres", (28, 28, 1), 10).save(str(tmp_path / "runs/c/model.keras"))
    ui_port = free_port()
    with LocalCluster(workers=2, cores_per_worker=1) as cluster:
        cmd = submit_command(cluster, os.path.join(ROOT, "jobs", f"{stage}.py"), "--conf", conf, py_files=py_files,
                             extra_conf=[f"spark.ui.port={ui_port}", "spark.task.maxFailures=8"])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert _wait_for_running_tasks(ui_port, proc), "the job never had running tasks"
        cluster.kill("worker1")
        out, _ = proc.communicate(timeout=600)
        assert len(cluster.alive_workers()) <= 1
    assert proc.returncode == 0, out[-4000:]
    for rel, rows in expected:
        n, unique, _ = _ids(tmp_path / rel)
        assert n == unique == rows, (rel, n, unique)


def test_pipeline_on_a_standalone_cluster_with_datasets_and_runs_on_s3_matches_local_mode(
        tmp_path, py_files, mnist_files, s3_server):
    """`spark-submit jobs/run.py` with both folders in a bucket: the executors (separate JVMs and Python
    workers) read and write S3 through the storage layer with the options shipped in their task specs;
    the JVMs have no Hadoop S3 connector.  Then the same conf in local mode: same datasets, and the
    cluster-trained model scores the same predictions."""
    from pipelines.core import storage
    from pipelines.core.parquet_remote import read_table
    from pipelines.core.store import published_files, read_manifest
    conf = tmp_path / "cluster_s3.yaml"
    conf.write_text(f"""
run: {{name: c, runs_dir: '{s3_server.url("cluster", "runs")}'}}
data: {{datasets_dir: '{s3_server.url("cluster", "datasets")}'}}
ingest: {{limit_train: 3000, validation_rows: 500, limit_test: 1000}}
train: {{model: torres, epochs: 1, batch_size: 64, num_proc: 2, nics: [lo], export_saved_model: false}}
""" + s3_server.conf_yaml())
    with LocalCluster(workers=2, cores_per_worker=1) as cluster:
        proc = subprocess.run(submit_command(cluster, os.path.join(ROOT, "jobs", "run.py"), "--conf", str(conf),
                                             py_files=py_files),
                              capture_output=True, text=True, timeout=900, cwd=str(tmp_path),
                              env=dict(os.environ, SPARK_LOCAL_IP="127.0.0.1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test accuracy:" in proc.stdout and s3_server.secret not in proc.stdout + proc.stderr

    def outputs():
        test = read_table(s3_server.url("cluster", "datasets", "mnist", "test"), ["id", "label"])
        preds = read_table(s3_server.url("cluster", "runs", "c", "predictions"), ["id", "prediction"])
        order = np.argsort(preds.column("id").to_numpy())
        return (sorted(test.column("id").to_pylist()), test.column("label").to_numpy().sum(),
                preds.column("id").to_numpy()[order].tolist(), preds.column("prediction").to_numpy()[order].tolist())

    with storage.using(s3_server.context()):
        metrics = json.loads(storage.read_bytes(s3_server.url("cluster", "runs", "c", "metrics.json")))
        history = json.loads(storage.read_bytes(s3_server.url("cluster", "runs", "c", "history.json")))
        predictions = read_manifest(s3_server.url("cluster", "runs", "c", "predictions"))
        test_files = published_files(s3_server.url("cluster", "datasets", "mnist", "test"))
        on_cluster = outputs()
        sparkcnn = os.path.join(os.path.dirname(sys.executable), "sparkcnn")
        for stage in ("ingest", "score"):
            local = subprocess.run([sparkcnn, stage, "--conf", str(conf), "--set", "spark.master=local[2]",
                                    "--force", stage],
                                   capture_output=True, text=True, timeout=600)
            assert local.returncode == 0, local.stderr[-2000:]
        in_local_mode = outputs()
    assert metrics["rows"] == 1000 and metrics["accuracy"] > 0.6      # 1 epoch on 2.5k rows; chance is 0.1
    assert history["workers"] == 2                                    # Horovod ran in the cluster's executors
    assert predictions["rows"] == 1000 and len(test_files) >= 2
    assert len(on_cluster[0]) == 1000 and on_cluster == in_local_mode


def test_predict_on_a_standalone_cluster_with_photos_model_and_table_on_s3(tmp_path, py_files, s3_server):
    """`spark-submit jobs/predict.py` on the cluster: photos, the .keras model and the predictions table
    all in the bucket; executors list nothing, read their files and commit their part files through the
    storage layer (no Hadoop connector); a rerun after two new files scores only those two."""
    import io

    import pandas as pd
    from test_predict import make_folder, photo, tiny_model, write_jpeg
    fs = s3_server.fs()
    root = tmp_path / "photos"
    good = make_folder(str(root), count=30)
    for path in [os.path.join(r, n) for r, _, ns in os.walk(root) for n in ns]:
        fs.put_file(path, f"{s3_server.bucket}/cluster/photos/{os.path.relpath(path, root)}")
    fs.put_file(tiny_model(str(tmp_path / "tiny.keras")), f"{s3_server.bucket}/cluster/models/tiny.keras")
    conf = tmp_path / "predict_s3.yaml"
    conf.write_text(f"""
run: {{name: p, runs_dir: '{tmp_path}/runs'}}
predict: {{input: '{s3_server.url("cluster", "photos")}', model: '{s3_server.url("cluster", "models", "tiny.keras")}',
          output: '{s3_server.url("cluster", "predictions")}', files_per_task: 4, max_pixels: 1000000}}
""" + s3_server.conf_yaml())

    def submit(cluster):
        proc = subprocess.run(submit_command(cluster, os.path.join(ROOT, "jobs", "predict.py"), "--conf",
                                             str(conf), py_files=py_files),
                              capture_output=True, text=True, timeout=900, cwd=str(tmp_path),
                              env=dict(os.environ, SPARK_LOCAL_IP="127.0.0.1"))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert s3_server.secret not in proc.stdout + proc.stderr
        return proc.stdout
    listed = len(good) + 4                                 # the four bad files are listed and rejected
    with LocalCluster(workers=2, cores_per_worker=1) as cluster:
        out = submit(cluster)
        assert f"listed {listed} = scored {len(good)} + rejected 4 + unchanged 0" in out, out[-2000:]
        rng = np.random.default_rng(9)
        for i in range(2):
            new = tmp_path / f"new{i}.jpg"
            write_jpeg(str(new), photo(rng, 80, 60))
            fs.put_file(str(new), f"{s3_server.bucket}/cluster/photos/late/new{i}.jpg")
        out = submit(cluster)
        assert f"listed {listed + 2} = scored 2 + rejected 0 + unchanged {listed}" in out, out[-2000:]
    parts = [k for k in fs.find(f"{s3_server.bucket}/cluster/predictions") if k.endswith(".parquet")
             and "/_rejects/" not in k]
    rows = pd.concat([pq.read_table(io.BytesIO(fs.cat_file(k))).to_pandas() for k in parts])
    assert rows.path.is_unique and len(rows) == len(good) + 2
