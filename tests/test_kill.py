"""Nothing lost, nothing half-written: ingest and scoring jobs SIGKILLed at random points, repeatedly.
The previous output stays readable and unchanged; a rerun completes with exactly the expected rows."""
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from conftest import kill_rounds as kill_job_rounds

pytestmark = pytest.mark.slow   # jobs killed mid-write and run again: minutes

SPARKCNN = os.path.join(os.path.dirname(sys.executable), "sparkcnn")


def run(conf, stage, *sets):
    """The stage run whatever its key says (--force all): a rerun after kills must really run."""
    return subprocess.run([SPARKCNN, stage, "--conf", str(conf), "--force", "all",
                           *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=600)


def snapshot(path):
    """What a reader sees: row count, id checksum, label checksum (read through the published link)."""
    table = pq.read_table(os.path.realpath(path), columns=["id", "label"])
    ids = table.column("id").to_pylist()
    return len(ids), len(set(ids)), sum(ids), sum(table.column("label").to_pylist())


def kill_rounds(conf, stage, outputs, rounds, window, seed):
    return kill_job_rounds([SPARKCNN, stage, "--conf", str(conf), "--force", "all"], snapshot, outputs, rounds, window, seed, stage)


@pytest.fixture(scope="module")
def conf(tmp_path_factory, mnist_files):
    root = tmp_path_factory.mktemp("kill")
    path = root / "kill.yaml"
    path.write_text(f"""
run: {{name: kill, runs_dir: {root}/runs}}
spark: {{master: "local[2]", driver_memory: 1g}}
data: {{datasets_dir: {root}/datasets}}
ingest: {{validation_rows: 5000, partition_mb: 4}}
""")
    return root, path


def test_ingest_killed_mid_write_keeps_previous_dataset(conf):
    root, path = conf
    first = run(path, "ingest")
    assert first.returncode == 0, first.stderr[-2000:]
    outputs = [root / "datasets/mnist" / s for s in ("train", "val", "test")]
    before = kill_rounds(path, "ingest", outputs, rounds=3, window=(2.0, 9.0), seed=7)
    again = run(path, "ingest")
    assert again.returncode == 0, again.stderr[-2000:]
    for p in outputs:
        assert snapshot(p) == before[p]                      # same rows, no duplicates
    assert snapshot(outputs[0])[:2] == (55000, 55000) and snapshot(outputs[2])[:2] == (10000, 10000)
    leftovers = [n for n in os.listdir(root / "datasets/mnist") if ".staging-" in n]
    assert leftovers == [], leftovers                       # the rerun cleaned up after the killed jobs


def test_scoring_killed_mid_write_keeps_previous_predictions(conf):
    root, path = conf
    from pipelines.training.networks import build_model
    os.makedirs(root / "runs/kill", exist_ok=True)
    build_model("torres", (28, 28, 1), 10).save(str(root / "runs/kill/model.keras"))
    first = run(path, "score")
    assert first.returncode == 0, first.stderr[-2000:]
    preds = root / "runs/kill/predictions"
    kill_rounds(path, "score", [preds], rounds=3, window=(2.0, 8.0), seed=11)
    again = run(path, "score")
    assert again.returncode == 0, again.stderr[-2000:]
    assert snapshot(preds)[:2] == (10000, 10000)


def test_augmentation_killed_mid_write_keeps_previous_output(conf):
    root, path = conf
    aug_conf = root / "kill_aug.yaml"
    aug_conf.write_text(path.read_text() + """
augment:
  seed: 3
  n_per_image: 2
  pipeline:
    - {op: rotate, p: 0.9, degrees: [-25, 25]}
    - {op: shift, p: 0.5, x: [-0.25, 0.25], y: [-0.25, 0.25]}
""")
    if not (root / "datasets/mnist/train").exists():
        assert run(path, "ingest").returncode == 0
    first = run(aug_conf, "augment")
    assert first.returncode == 0, first.stderr[-2000:]
    out = root / "datasets/mnist/train_aug"
    before = kill_rounds(aug_conf, "augment", [out], rounds=3, window=(2.0, 8.0), seed=5)
    again = run(aug_conf, "augment")
    assert again.returncode == 0, again.stderr[-2000:]
    assert snapshot(out) == before[out] and snapshot(out)[:2] == (165000, 165000)   # byte-identical rerun
