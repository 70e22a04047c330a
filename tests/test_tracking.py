"""MLflow tracking (`tracking.mlflow: true`): the end-to-end `sparkcnn run` of tests/conftest.py logs into a
real local MLflow file store, read back here with MlflowClient; then the settings and the failure paths."""
import json
import os
import subprocess
import sys

import pytest

from pipelines.core.config import ConfigError
from pipelines.core.store import RunStore, write_bytes_atomic
from pipelines.tracking.tracker import TrackingError, tracked

from conftest import logged_lines, make_conf

SPARKCNN = os.path.join(os.path.dirname(sys.executable), "sparkcnn")


@pytest.fixture(scope="module")
def tracked_e2e(e2e_run):
    """The e2e run's MLflow run, found the way a user would: default store, experiment = the dataset."""
    from mlflow.tracking import MlflowClient
    root, proc = e2e_run
    client = MlflowClient(tracking_uri=(root / "runs/mlruns").as_uri())
    experiment = client.get_experiment_by_name("mnist")
    assert experiment is not None, os.listdir(root / "runs/mlruns")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return root, proc, client, runs[0]


def test_run_is_finished_with_the_config_as_params(tracked_e2e):
    root, proc, _, run = tracked_e2e
    assert run.info.status == "FINISHED" and run.info.run_name == "e2e"
    params = run.data.params
    assert params["train.model"] == "mnist_cnn" and params["train.epochs"] == "2"
    assert params["ingest.limit_train"] == "8000" and params["tracking.uri"] == (root / "runs/mlruns").as_uri()
    assert run.data.tags["sparkcnn.stages"] == "ingest,train,score,report"
    assert run.data.tags["sparkcnn.run_dir"] == str(root / "runs/e2e")
    assert f"[tracking] MLflow run {run.info.run_id} in experiment 'mnist'" in proc.stdout


def test_per_epoch_metrics_follow_the_history(tracked_e2e):
    root, _, client, run = tracked_e2e
    history = json.loads((root / "runs/e2e/history.json").read_text())
    series = dict(history["metrics"], epoch_seconds=history["epoch_seconds"])
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(series)
    for key, values in series.items():
        logged = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in logged] == [1, 2], key            # step = epoch number
        assert [m.value for m in logged] == pytest.approx(values), key


def test_test_metrics_and_stage_timings(tracked_e2e):
    root, _, _, run = tracked_e2e
    metrics = json.loads((root / "runs/e2e/metrics.json").read_text())
    logged = run.data.metrics
    assert logged["test_accuracy"] == pytest.approx(metrics["accuracy"]) and logged["test_accuracy"] > 0.9
    assert logged["test_loss"] == pytest.approx(metrics["loss"]) and logged["test_rows"] == 2000
    timings = json.loads((root / "runs/e2e/timings.json").read_text())
    for stage in ("ingest", "train", "score", "report"):
        assert logged[f"{stage}_seconds"] == pytest.approx(timings[stage], abs=0.01), stage


def test_report_model_and_config_are_artifacts(tracked_e2e, tmp_path):
    root, _, client, run = tracked_e2e
    run_dir = root / "runs/e2e"
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "history.json", "metrics.json", "timings.json", "model", "report"} <= top
    client.download_artifacts(run.info.run_id, "", str(tmp_path))
    for name in ("index.html", "training_curves.png", "confusion_matrix.png"):
        assert (tmp_path / "report" / name).read_bytes() == (run_dir / "report" / name).read_bytes(), name
    assert (tmp_path / "model/model.keras").read_bytes() == (run_dir / "model.keras").read_bytes()
    assert (tmp_path / "model/saved_model/saved_model.pb").stat().st_size > 1000
    assert (tmp_path / "config.yaml").read_text() == (run_dir / "config.yaml").read_text()


def test_defaults_file_store_under_runs_dir_and_dataset_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = make_conf(tmp_path, "run: {runs_dir: out}\ndata: {dataset: digits}\ntracking: {mlflow: true}\n")
    assert cfg.tracking.uri == (tmp_path / "out/mlruns").as_uri() and cfg.tracking.experiment == "digits"
    cfg = make_conf(tmp_path, "tracking: {uri: store, experiment: sweeps}\n")
    assert cfg.tracking.uri == (tmp_path / "store").as_uri() and cfg.tracking.experiment == "sweeps"
    assert make_conf(tmp_path, "tracking: {uri: 'http://mlflow:5000'}").tracking.uri == "http://mlflow:5000"


def test_mlflow_true_without_mlflow_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)   # what `import mlflow` meets where it is not installed
    assert make_conf(tmp_path, "tracking: {mlflow: false}").tracking.mlflow is False
    with pytest.raises(ConfigError, match=r"conf.yaml: tracking.mlflow is true but mlflow cannot be imported .*"
                                          r"pip install mlflow-skinny==2\.22\.5.* or set tracking.mlflow: false"):
        make_conf(tmp_path, "tracking: {mlflow: true}")


def _tracked_conf(tmp_path, uri: str):
    cfg = make_conf(tmp_path, f"run: {{name: t, runs_dir: {tmp_path}/runs}}\n"
                              f"tracking: {{mlflow: true, uri: '{uri}', experiment: failures}}\n")
    store = RunStore(cfg.run_dir)
    write_bytes_atomic(store.config_path, b"run: {name: t}\n")
    return cfg, store


def test_failed_stage_marks_the_run_failed_and_keeps_its_error(tmp_path):
    from mlflow.tracking import MlflowClient
    cfg, store = _tracked_conf(tmp_path, str(tmp_path / "mlruns"))
    with pytest.raises(RuntimeError, match="stage broke"), logged_lines() as lines:
        with tracked(cfg, store, ["score"]):
            raise RuntimeError("stage broke")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("failures").experiment_id])
    assert run.info.status == "FAILED" and run.data.params["train.model"] == "mnist_cnn"
    assert run.data.tags["sparkcnn.command"] == "score" and lines[0].startswith("[tracking] MLflow run ")


@pytest.mark.slow   # over 5 s: make test, not the everyday tier
def test_unusable_store_is_one_line_naming_the_setting(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the store should be")
    cfg, store = _tracked_conf(tmp_path, str(blocker))
    with pytest.raises(TrackingError, match=r"tracking.mlflow: could not open the store \(MLflow store "
                                            rf"tracking.uri={blocker.as_uri()}, experiment 'failures'\): .*"):
        with tracked(cfg, store, ["score"]):
            pytest.fail("the block must not run when the store cannot be opened")
    # the same through the CLI, before Spark starts: one line, exit status 2
    conf = tmp_path / "conf.yaml"
    proc = subprocess.run([SPARKCNN, "score", "--conf", str(conf)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("sparkcnn score: error: tracking.mlflow: could not open the store"), proc.stderr
