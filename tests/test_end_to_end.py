"""The whole pipeline as a user runs it: the `sparkcnn` console script on a slice of real MNIST,
2 real Horovod processes on a real local Spark, real Parquet, then the outputs checked."""
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_scaling import check_breakdown

from pipelines.core import records

SPARKCNN = os.path.join(os.path.dirname(sys.executable), "sparkcnn")
# e2e_run (tests/conftest.py): `sparkcnn run` on a slice of MNIST, shared with tests/test_tracking.py


def test_run_prints_accuracy_and_report_path(e2e_run):
    root, proc = e2e_run
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("test accuracy: ")
    assert lines[-1] == f"report: {root}/runs/e2e/report/index.html"
    assert "[train] epoch 2/2: accuracy " in proc.stdout  # per-epoch progress relayed from Horovod rank 0


def test_accuracy_well_above_chance_and_metrics_consistent(e2e_run):
    root, _ = e2e_run
    metrics = json.loads((root / "runs/e2e/metrics.json").read_text())
    assert metrics["rows"] == 2000
    assert metrics["accuracy"] > 0.9, metrics["accuracy"]
    cm = np.array(metrics["confusion_matrix"])
    assert cm.sum() == 2000 and np.trace(cm) / 2000 == pytest.approx(metrics["accuracy"])
    assert len(metrics["per_class"]) == 10 and 0 < metrics["loss"] < 1


def test_history_has_train_and_validation_per_epoch(e2e_run):
    root, _ = e2e_run
    history = json.loads((root / "runs/e2e/history.json").read_text())
    assert history["workers"] == 2 and len(history["epoch_seconds"]) == 2
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history["metrics"][key]) == 2
    assert history["metrics"]["loss"][1] < history["metrics"]["loss"][0]
    check_breakdown(history, 2)                                     # where a step's time went
    assert history["step_breakdown"]["ms_per_step"]["allreduce_ms"] > 0


def test_report_files(e2e_run):
    root, _ = e2e_run
    report = root / "runs/e2e/report"
    for name in ("index.html", "samples.png", "training_curves.png", "confusion_matrix.png"):
        assert (report / name).stat().st_size > 1000, name
    html = (report / "index.html").read_text()
    metrics = json.loads((root / "runs/e2e/metrics.json").read_text())
    assert f"{metrics['accuracy']:.4f}" in html and "training_curves.png" in html
    assert "Where a training step's time goes" in html and "allreduce" in html


def test_saved_model_reproduces_spark_predictions(e2e_run):
    """The saved model, loaded in safe mode in this process, agrees with what Spark wrote."""
    root, _ = e2e_run
    preds = pq.read_table(root / "runs/e2e/predictions").to_pandas().set_index("id").sort_index()
    assert len(preds) == 2000 and preds.index.is_unique
    test = pq.read_table(os.path.realpath(root / "datasets/mnist/test")).sort_by("id").slice(0, 200)
    images = records.decode_images(test.column("image"), (28, 28, 1))
    from pipelines.core.tf_runtime import load_model_bytes
    model = load_model_bytes((root / "runs/e2e/model.keras").read_bytes())
    probs = model.predict(images, verbose=0)
    ids = test.column("id").to_numpy()
    np.testing.assert_array_equal(probs.argmax(1), preds.loc[ids, "prediction"].to_numpy())
    np.testing.assert_allclose(probs, np.stack(preds.loc[ids, "probabilities"].to_numpy()), atol=1e-5)


def test_bad_conf_is_one_clear_line(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text("train: {epoch: 3}\n")
    proc = subprocess.run([SPARKCNN, "train", "--conf", str(conf)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"sparkcnn train: error: {conf}: unknown key 'train.epoch' (did you mean 'epochs'?)"


def test_help_lists_every_stage_with_an_example():
    out = subprocess.run([SPARKCNN, "--help"], capture_output=True, text=True, timeout=60).stdout
    for stage in ("ingest", "train", "score", "report", "run", "transfer"):
        assert f"sparkcnn {stage} --conf" in out


CHROMIUM = next((c for c in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(c)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make install installs it)")
def test_report_renders_in_headless_chromium(e2e_run, tmp_path):
    """Every figure loads in a real browser and the key numbers are on the page."""
    import re
    root, _ = e2e_run
    index = os.path.realpath(root / "runs/e2e/report/index.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path}/profile", "--virtual-time-budget=5000"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", f"file://{index}"], capture_output=True, text=True,
                         timeout=120).stdout
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded, dom[:500]
    assert loaded.group(1) == loaded.group(2) and int(loaded.group(2)) >= 4
    metrics = json.loads((root / "runs/e2e/metrics.json").read_text())
    assert f"{metrics['accuracy']:.4f}" in dom and "Per-class metrics" in dom and "Timings per stage" in dom
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,2400", f"--screenshot={shot}", f"file://{index}"],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20000
