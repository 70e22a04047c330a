"""GPU executors without a GPU: Spark's GPU scheduling on a real standalone cluster whose workers advertise
fake GPUs (the shipped discovery script over a stand-in nvidia-smi), the fail-fast checks, and mixed
precision trained for real (bfloat16 on this CPU)."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pipelines.core.config import ConfigError
from pipelines.core.resources import ResourcesSection, spark_defaults

from conftest import make_conf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARKCNN = os.path.join(os.path.dirname(sys.executable), "sparkcnn")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from local_cluster import LocalCluster, submit_command  # noqa: E402


@pytest.mark.parametrize("text, message", [
    ("resources: {gpus_per_task: -1}", "resources.gpus_per_task: -1.0 is below the minimum 0"),
    ("resources: {gpus_per_task: 1.5}", "resources.gpus_per_task: 1.5 — Spark takes fractions below 1"),
    ("resources: {require_gpu: true}", "resources.require_gpu: true needs resources.gpus_per_task > 0"),
    ("resources: {gpus_per_task: 2, gpus_per_executor: 1}", "more than resources.gpus_per_executor 1"),
    ("resources: {gpu_per_task: 1}", "did you mean 'gpus_per_task'"),
    ("train: {mixed_precision: float16}", "train.mixed_precision: 'float16' is not one of"),
])
def test_bad_gpu_settings_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_conf(tmp_path, text + "\n")


def test_spark_settings_follow_the_section():
    assert spark_defaults(ResourcesSection()) == {}
    assert spark_defaults(ResourcesSection(gpus_per_task=0.5, require_gpu=True)) == {
        "spark.task.resource.gpu.amount": "0.5", "spark.executor.resource.gpu.amount": "1",
        "spark.executorEnv.SPARKCNN_REQUIRE_GPU": "1"}
    assert spark_defaults(ResourcesSection(gpus_per_task=2, gpus_per_executor=4, discovery_script="./d.sh")) == {
        "spark.task.resource.gpu.amount": "2", "spark.executor.resource.gpu.amount": "4",
        "spark.executor.resource.gpu.discoveryScript": "./d.sh"}


@pytest.mark.parametrize("master, reason", [
    ("local[2]", "local mode never gives GPUs to tasks"),
    # a master nobody listens on: the check must come before Spark tries to reach it
    ("spark://127.0.0.1:9", "has tensorflow-cpu 2.15.1, which cannot use a GPU; install the GPU build with "
                            "`make install GPU=1`"),
])
def test_require_gpu_without_a_gpu_fails_fast_with_one_line(tmp_path, master, reason):
    conf = tmp_path / "g.yaml"
    conf.write_text(f"run: {{runs_dir: {tmp_path}/runs}}\nspark: {{master: '{master}'}}\n"
                    f"data: {{datasets_dir: {tmp_path}/datasets}}\n"
                    "resources: {gpus_per_task: 1, require_gpu: true}\n")
    proc = subprocess.run([SPARKCNN, "train", "--conf", str(conf)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparkcnn train: error: resources."), proc.stderr
    assert reason in lines[0]
    assert "SparkContext" not in proc.stdout + proc.stderr and not (tmp_path / "datasets").exists()


def _check_float32_model(model_path, test_dir):
    """The saved model of a mixed-precision run: float32 layers, float32 probabilities that sum to 1."""
    import pyarrow.parquet as pq
    import tensorflow as tf

    from pipelines.core import records
    model = tf.keras.models.load_model(str(model_path), compile=False, safe_mode=True)
    assert {layer.dtype_policy.name for layer in model.layers if layer.weights} == {"float32"}
    assert not any("bfloat16" in layer.dtype_policy.name for layer in model.layers)
    table = pq.read_table(str(test_dir))
    images = records.decode_images(table.column(records.IMAGE), (28, 28, 1))     # uint8: the model scales
    probs = model.predict(images[:200], verbose=0)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    labels = np.asarray(table.column(records.LABEL).to_pylist()[:200])
    assert np.mean(probs.argmax(axis=1) == labels) > 0.5                       # chance is 0.1


@pytest.fixture(scope="module")
def py_files(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dist") / "sparkcnn-libs.zip")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_pyfiles.py"), out], check=True, cwd=ROOT)
    return out


@pytest.mark.slow
def test_fake_gpu_cluster_gives_each_rank_and_task_its_own_gpu(tmp_path, py_files, mnist_files):
    """Two workers advertising GPU "0" and GPU "1"; `sparkcnn run` with one GPU per task and num_proc null,
    training in mixed_bfloat16 (the mixed precision this CPU runs), then scripts/gpu_check.py."""
    conf = tmp_path / "gpus.yaml"
    conf.write_text(f"""
run: {{name: gpus, runs_dir: {tmp_path}/runs}}
data: {{datasets_dir: {tmp_path}/datasets}}
resources: {{gpus_per_task: 1}}
ingest: {{limit_train: 2500, validation_rows: 500, limit_test: 1000, partition_mb: 1}}
train: {{model: torres, epochs: 1, batch_size: 64, num_proc: null, nics: [lo], mixed_precision: mixed_bfloat16}}
""")
    with LocalCluster(workers=2, cores_per_worker=1, worker_gpus=[["0"], ["1"]]) as cluster:
        cmd = submit_command(cluster, os.path.join(ROOT, "jobs", "run.py"), "--conf", str(conf), py_files=py_files)
        env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        logs = cluster.executor_logs()
        # the user's first-GPU-run command, on the same cluster
        check = subprocess.run(submit_command(cluster, os.path.join(ROOT, "scripts", "gpu_check.py"),
                                              "--images", "1000", "--store", str(tmp_path / "check"),
                                              py_files=py_files), capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 Horovod workers" in proc.stdout        # num_proc null: one per GPU slot

    history = json.loads((tmp_path / "runs/gpus/history.json").read_text())
    assert history["mixed_precision"] == "mixed_bfloat16" and "lr 0.002, mixed_bfloat16" in proc.stdout
    assert history["metrics"]["val_accuracy"][-1] > 0.5, history["metrics"]
    _check_float32_model(tmp_path / "runs/gpus/model.keras", tmp_path / "datasets/mnist/test")
    devices = history["devices"]
    assert sorted(d["who"] for d in devices) == ["rank 0", "rank 1"]
    assert sorted(d["assigned"][0] for d in devices) == ["0", "1"]        # different GPUs, one each
    for d in devices:
        assert d["source"] == "spark" and d["visible"] == d["assigned"][0] and d["tf_gpus"] == 0
        assert (f"[gpu] {d['who']} -> GPU {d['visible']} (CUDA_VISIBLE_DEVICES={d['visible']}; "
                "TensorFlow sees no GPU device, so it runs on the CPU)") in proc.stdout

    # Scoring ran in both workers' Python workers; each was placed on its own worker's GPU and only that one.
    placed = {w: set(re.findall(r"\[gpu\] task \d+ \(stage \d+, partition \d+\) -> GPU (\S+) "
                                r"\(CUDA_VISIBLE_DEVICES=(\S+);", text)) for w, text in logs.items()}
    assert placed["worker0"] and placed["worker1"], logs
    addresses = {w: {a for a, _ in pairs} for w, pairs in placed.items()}
    assert all(a == v for pairs in placed.values() for a, v in pairs)     # what it set is what it was given
    assert len(addresses["worker0"]) == len(addresses["worker1"]) == 1
    assert addresses["worker0"] != addresses["worker1"]
    assert "was assigned GPU" not in "".join(logs.values())            # one GPU per executor: never a mismatch
    metrics = json.loads((tmp_path / "runs/gpus/metrics.json").read_text())
    assert metrics["rows"] == 1000 and metrics["accuracy"] > 0.5

    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    tasks = re.findall(r"\[gpu_check\] task on .*: Spark assigned (\S+); CUDA_VISIBLE_DEVICES=(\S+);", check.stdout)
    ranks = re.findall(r"\[gpu_check\] rank \d: Spark assigned (\S+); CUDA_VISIBLE_DEVICES=(\S+);", check.stdout)
    for found in (tasks, ranks):
        assert sorted(a for a, _ in found) == ["0", "1"] and all(a == v for a, v in found), check.stdout
    assert re.search(r"\[gpu_check\] training: 1 epoch of \d+ images .* images/s", check.stdout)
    assert re.search(r"\[gpu_check\] scoring: 1000 images in .* images/s", check.stdout)


FLOAT16_ORDER = r"""
import numpy as np, tensorflow as tf, horovod.tensorflow as hvd
from pipelines.training.remote import _optimizer
from pipelines.training.section import TrainSection
from pipelines.training.networks import build_model
from pipelines.training.step import StepClock, install
hvd.init()
tf.keras.mixed_precision.set_global_policy("mixed_float16")
opt = _optimizer(tf, TrainSection(mixed_precision="mixed_float16"), 0.01)
assert isinstance(opt, tf.keras.mixed_precision.LossScaleOptimizer), type(opt)
seen = tf.Variable(0.0)
def allreduce(grads):      # Horovod's own grouped reduction (one process here), watched on the way in
    largest = tf.reduce_max([tf.reduce_max(tf.abs(tf.cast(g, tf.float32))) for g in grads])
    with tf.control_dependencies([seen.assign(tf.maximum(seen, largest))]):
        return hvd.grouped_allreduce(grads, op=hvd.Average)
model = build_model("torres", (28, 28, 1), 10)
model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
install(tf, model, allreduce, StepClock())
x = np.random.default_rng(0).integers(0, 255, (32, 28, 28, 1), dtype=np.uint8)
y = np.arange(32) % 10
model.fit(x, y, batch_size=32, epochs=1, verbose=0)
# Horovod reduced the scaled gradients (unscaled after it): about loss_scale times the unscaled ones,
# which are O(1) for this loss.
assert float(seen) > 100, (float(seen), float(opt.loss_scale))
print("ok", float(opt.loss_scale), float(seen))
"""


@pytest.mark.slow    # a TF + Horovod process start (11 s)
def test_float16_loss_scaling_wraps_horovods_allreduce():
    """mixed_float16: Horovod averages the *scaled* gradients (the train step unscales them after), so every
    rank's finiteness check agrees."""
    proc = subprocess.run([sys.executable, "-c", FLOAT16_ORDER], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stdout[-2000:] + proc.stderr[-3000:]
