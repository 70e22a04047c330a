"""examples/airflow/sparkcnn_nightly.py run by Airflow itself: `airflow dags test` against local Spark.

Airflow and its Spark provider live in a test-only venv of their own (scripts/airflow_venv.sh,
cached in ~/.cache/sparkcnn/airflow-venv-<versions>, built from PyPI on first use: the only
download these tests make); the tasks' spark-submit is the project venv's pyspark, through a
`spark_default` connection to local[2].  The slice is small: 2,000 MNIST training digits, one
epoch on one Horovod worker, 200 real MNIST test digits as PNG files for predict.

What is checked: a whole DAG run (every task succeeds at its first try; model, that day's
predictions table and report exist); a config error (sparkcnn exit 2) fails its task at the first
try although the task has retries; a run lock held by another process (exit 5) is retried and the
retry succeeds once the lock is free; and, with a stand-in spark-submit that exits with a given
code, the real SparkSubmitHook's failures for 1..5 map to "fail now" (2, 3) or "retry" (1, 4, 5),
in the operator and in a DAG run (exit 4: every retry used).
"""
import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAG_FOLDER = os.path.join(ROOT, "examples", "airflow")
DAG_FILE = os.path.join(DAG_FOLDER, "sparkcnn_nightly.py")
TASKS = ("ingest", "train", "score", "predict", "report")
ONLY_INGEST = "^(train|score|predict|report)$"      # --mark-success-pattern: run ingest alone
RETRIES = 3                                          # the DAG's default_args
IMAGES = 200


@pytest.fixture(scope="module")
def airflow_venv():
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "airflow_venv.sh")],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode == 10:
        pytest.skip("Airflow cannot be installed from the package index (scripts/airflow_venv.sh): "
                    + proc.stderr.strip()[-1500:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def _idx(path: str) -> np.ndarray:
    """An IDX file's array (MNIST's format: magic, dims, then uint8 data)."""
    import gzip
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


class Airflow:
    """`airflow` of the test venv with its own AIRFLOW_HOME (sqlite), the example's DAG folder and a
    spark_default connection to local[2]."""

    def __init__(self, venv: str, home: str):
        import pyspark
        self.venv, self.home = venv, home
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update({
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": DAG_FOLDER,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",           # seconds: retries come at once here
            "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
            "PATH": os.pathsep.join([os.path.join(os.path.dirname(pyspark.__file__), "bin"),
                                     os.path.join(venv, "bin"), env.get("PATH", "")]),
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        })
        self.env = env
        proc = subprocess.run([self.airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    @property
    def airflow(self) -> str:
        return os.path.join(self.venv, "bin", "airflow")

    def dags_test(self, day: str, params: dict, env: dict = None, only_ingest=False, timeout=600):
        """`airflow dags test sparkcnn_nightly <day> -c <params>` -> (exit code, output); output also in
        <home>/dags-test-<day>.log."""
        argv = [self.airflow, "dags", "test", "sparkcnn_nightly", day, "-c", json.dumps(params)]
        if only_ingest:
            argv += ["--mark-success-pattern", ONLY_INGEST]
        proc = subprocess.run(argv, env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        with open(os.path.join(self.home, f"dags-test-{day}.log"), "w") as f:
            f.write(proc.stdout)
        return proc.returncode, proc.stdout

    def run_state(self, day: str) -> tuple:
        """(DAG run state, {task_id: (state, try_number, max_tries)}) of the run for `day`."""
        with sqlite3.connect(os.path.join(self.home, "airflow.db")) as db:
            runs = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = 'sparkcnn_nightly' "
                              "AND logical_date LIKE ?", (day + "%",)).fetchall()
            assert len(runs) == 1, runs
            tis = db.execute("SELECT task_id, state, try_number, max_tries FROM task_instance "
                             "WHERE dag_id = 'sparkcnn_nightly' AND run_id = ?", (runs[0][0],)).fetchall()
        return runs[0][1], {t: (state, tries, max_tries) for t, state, tries, max_tries in tis}


@pytest.fixture(scope="module")
def nightly(tmp_path_factory, airflow_venv, mnist_files):
    """The test's install: a small conf, 200 real MNIST test digits as PNGs in images/<day>/<label>/,
    the library zip for --py-files, an AIRFLOW_HOME; -> (Airflow, root, params)."""
    from PIL import Image
    root = tmp_path_factory.mktemp("airflow")
    conf = root / "nightly.yaml"
    conf.write_text(f"""
spark: {{master: "local[2]", driver_memory: 2g}}
data: {{source: dir, path: {os.path.dirname(mnist_files['train_images'])}}}
ingest: {{limit_train: 2000, validation_rows: 200, limit_test: 500}}
train: {{model: mnist_cnn, epochs: 1, batch_size: 64, num_proc: 1}}
""")
    digits, labels = _idx(mnist_files["test_images"]), _idx(mnist_files["test_labels"])
    for i in range(9000, 9000 + IMAGES):
        folder = root / "images" / "2026-12-01" / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits[i]).save(folder / f"{i}.png")
    libs = str(root / "sparkcnn-libs.zip")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_pyfiles.py"), libs],
                   check=True, cwd=ROOT, capture_output=True)
    params = {"project_dir": ROOT, "python": sys.executable, "libs_zip": libs, "conf": str(conf),
              "datasets_dir": str(root / "datasets"), "runs_dir": str(root / "runs"), "run_name": "nightly",
              "images": str(root / "images"), "images_per_day": True, "predictions": str(root / "predictions")}
    return Airflow(airflow_venv, str(root / "airflow-home")), root, params


def test_nightly_dag_runs_every_stage(nightly):
    import pyarrow.parquet as pq
    airflow, root, params = nightly
    code, out = airflow.dags_test("2026-12-01", params)
    state, tis = airflow.run_state("2026-12-01")
    assert code == 0 and state == "success", out[-6000:]
    assert tis == {t: ("success", 1, RETRIES) for t in TASKS}, tis

    assert (root / "runs" / "nightly" / "model.keras").is_file()
    report = (root / "runs" / "nightly" / "report" / "index.html").read_text()
    assert "test-accuracy" in report
    table = pq.read_table(str(root / "predictions" / "ds=2026-12-01"), columns=["path", "prediction"])  # the day's
    paths, predicted = table.column("path").to_pylist(), table.column("prediction").to_pylist()
    assert len(paths) == len(set(paths)) == IMAGES
    truth = [int(os.path.basename(os.path.dirname(p))) for p in paths]      # images/<day>/<label>/<i>.png
    accuracy = float(np.mean([int(p) == t for p, t in zip(predicted, truth)]))
    assert accuracy > 0.6, f"{accuracy:.3f} on {IMAGES} digits after one epoch on 2,000"
    assert f"predict.input={root}/images/2026-12-01" in out       # the day's folder, templated from ds


def test_config_error_fails_at_once(nightly):
    """A bad --set (exit 2) is failed at its first try: no retry can fix a conf."""
    airflow, root, params = nightly
    code, out = airflow.dags_test("2026-12-02", {**params, "overrides": "train.epoch=1", "daily_runs": True})
    state, tis = airflow.run_state("2026-12-02")
    assert code != 0 and state == "failed", out[-4000:]
    assert ("AirflowFailException: sparkcnn exit 2, not retried (usage or config error: fix the conf or the params): "
            "sparkcnn ingest: error: ") in out and "unknown key 'train.epoch'" in out, out[-4000:]
    assert "--set run.name=nightly-20261202" in out                # daily_runs: a run per day
    assert tis["ingest"] == ("failed", 1, RETRIES), tis
    assert {tis[t][0] for t in TASKS[1:]} == {"upstream_failed"}, tis


def test_held_lock_is_retried(nightly):
    """Another process holds the run directory's lock (exit 5): the task is retried, and the retry
    after the lock is free succeeds."""
    airflow, root, params = nightly
    run_dir = root / "runs" / "nightly"
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir / "_sparkcnn.lock", "a+")        # pipelines/core/run_lock.py: flock on this file
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    argv = [airflow.airflow, "dags", "test", "sparkcnn_nightly", "2026-12-03", "-c", json.dumps(params),
            "--mark-success-pattern", ONLY_INGEST]
    proc = subprocess.Popen(argv, env={**airflow.env, "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(400, proc.kill)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Error code is: 5" in line and not lock.closed:
                lock.close()                               # the other run ends; the retry finds the lock free
        proc.wait()
    finally:
        timer.cancel()
        lock.close()
    out = "".join(lines)
    with open(os.path.join(airflow.home, "dags-test-2026-12-03.log"), "w") as f:
        f.write(out)
    state, tis = airflow.run_state("2026-12-03")
    assert proc.returncode == 0 and state == "success", out[-6000:]
    assert "Error code is: 5" in out
    assert tis["ingest"] == ("success", 2, RETRIES), tis


FAKE_SPARK_SUBMIT = """#!/bin/sh
echo "stand-in spark-submit"
echo "sparkcnn train: error: stand-in failure $SPARKCNN_FAKE_EXIT"
exit "$SPARKCNN_FAKE_EXIT"
"""

MAPPING = """
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("sparkcnn_nightly", sys.argv[1])
dag_file = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dag_file)
out = {}
for code in (1, 2, 3, 4, 5):
    os.environ["SPARKCNN_FAKE_EXIT"] = str(code)
    # a setting whose value looks like the hook's message: the code is read from the hook's own words
    op = dag_file.SparkcnnSubmitOperator(task_id=f"t{code}", stage="train", stage_conf="/conf.yaml",
                                         sets={"run.name": "Error code is: 3"}, overrides="train.epochs=1")
    try:
        op.execute({})
    except Exception as error:
        cause = error.__cause__ or error
        out[code] = {"raised": type(error).__name__, "message": str(error), "hook_error": type(cause).__name__,
                     "hook_message": str(cause), "code": dag_file.exit_code_of(cause)}
print(json.dumps(out))
"""


def test_exit_codes_decide_retries(nightly, tmp_path):
    """A stand-in spark-submit exits 1..5: the real hook's AirflowException carries the code, the
    operator turns 2 and 3 into AirflowFailException and lets 1, 4 and 5 retry; in a DAG run exit 4
    uses every retry and exit 3 none."""
    airflow, root, params = nightly
    (tmp_path / "spark-submit").write_text(FAKE_SPARK_SUBMIT)
    (tmp_path / "spark-submit").chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{airflow.env['PATH']}"}

    proc = subprocess.run([os.path.join(airflow.venv, "bin", "python"), "-c", MAPPING, DAG_FILE],
                          env={**airflow.env, **env}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    for code in (1, 2, 3, 4, 5):
        assert seen[code]["hook_error"] == "AirflowException", seen[code]
        assert f"Error code is: {code}." in seen[code]["hook_message"], seen[code]
        assert seen[code]["code"] == code, seen[code]
        assert seen[code]["raised"] == ("AirflowFailException" if code in (2, 3) else "AirflowException"), seen
    assert seen[3]["message"] == ("sparkcnn exit 3, not retried (bad input data: fix the data): "
                                  "sparkcnn train: error: stand-in failure 3"), seen[3]

    for day, code, tries in (("2026-12-04", 4, RETRIES + 1), ("2026-12-05", 3, 1)):
        rc, out = airflow.dags_test(day, params, env={**env, "SPARKCNN_FAKE_EXIT": str(code)}, only_ingest=True)
        state, tis = airflow.run_state(day)
        assert state == "failed" and f"Error code is: {code}" in out, out[-4000:]
        assert tis["ingest"] == ("failed", tries, RETRIES), (code, tis)
