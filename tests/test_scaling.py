"""Horovod scaling (pipelines/training/step.py): the levers change what the workers and Horovod do (their
bad values: tests/test_config.py), the per-step breakdown accounts for the step; the cost model's arithmetic."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks.scaling import allreduce_seconds, predict
from pipelines.training.timeline import load_events, parse_events

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARKCNN = os.path.join(os.path.dirname(sys.executable), "sparkcnn")
MNIST_CNN_PARAMS = 1_199_882       # trainable parameters of mnist_cnn on 28x28x1, 10 classes


def test_ring_allreduce_cost_model():
    # 2 workers: each sends and receives half the gradient twice (reduce-scatter + all-gather) = G
    assert allreduce_seconds(2, 1e9, 1e9, 0.0) == pytest.approx(1.0)
    assert allreduce_seconds(64, 1e9, 1e9, 0.0) == pytest.approx(2 * 63 / 64)
    assert allreduce_seconds(4, 0, 1e9, 1e-5) == pytest.approx(6e-5)          # latency: 2(N-1) hops
    assert allreduce_seconds(1, 1e9, 1e9, 1.0) == 0
    p = predict(0.001, 100, 4e8, 2, 4e9, 0.0)             # compute 0.1 s + allreduce 0.1 s
    assert p["efficiency"] == pytest.approx(0.5) and p["samples_per_second"] == pytest.approx(1000)
    assert predict(0.001, 100, 4e8, 2, 4e9, 0.0, passes=4)["efficiency"] == pytest.approx(0.1 / 0.125)
    assert predict(0.001, 100, 2e8, 2, 4e9, 0.0, overlap=True)["efficiency"] == pytest.approx(1.0)   # all hidden
    # 0.3 s of transfer behind 0.1 s of compute: at most 2/3 x 0.1 s hidden
    assert predict(0.001, 100, 1.2e9, 2, 4e9, 0.0, overlap=True)["efficiency"] == pytest.approx(0.1 / (0.4 - 0.2 / 3))


def test_timeline_parser_counts_bytes_and_fused_time_once():
    events = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "HorovodGroupedAllreduce_sparkcnn_gradients_1of2"}},
              {"name": "process_name", "ph": "M", "pid": 2, "args": {"name": "HorovodGroupedAllreduce_sparkcnn_gradients_2of2"}},
              {"name": "process_name", "ph": "M", "pid": 3, "args": {"name": "loss.1"}}]
    for pid, shape in ((1, "[3, 3, 1, 32]"), (2, "[32]"), (3, "[]")):
        events += [{"ph": "B", "name": "NEGOTIATE_ALLREDUCE", "ts": 0, "pid": pid}, {"ph": "E", "ts": 40, "pid": pid},
                   {"ph": "B", "name": "ALLREDUCE", "ts": 50, "pid": pid},
                   {"ph": "B", "name": "GLOO_ALLREDUCE", "ts": 60, "pid": pid}, {"ph": "E", "ts": 90, "pid": pid},
                   {"ph": "E", "ts": 100, "pid": pid, "args": {"dtype": "float16", "shape": shape}}]
    text = json.dumps(events)[:-1]                        # a timeline still being written: no closing bracket
    out = parse_events(load_events(text))
    assert out["tensor_reductions"] == 2 and out["bytes"] == (288 + 32) * 2 and list(out["bytes_by_dtype"]) == ["float16"]
    assert out["activity_ms"] == {"ALLREDUCE": 0.05, "GLOO_ALLREDUCE": 0.03, "NEGOTIATE_ALLREDUCE": 0.04}


ACCUMULATION = r"""
import numpy as np, tensorflow as tf
from pipelines.training.step import StepClock, install
tf.keras.utils.set_random_seed(0)
def model_and_weights():
    m = tf.keras.Sequential([tf.keras.Input((6, 6, 1)), tf.keras.layers.Conv2D(3, 3, activation="relu"),
                             tf.keras.layers.Flatten(), tf.keras.layers.Dense(4, activation="softmax")])
    return m
rng = np.random.default_rng(1)
x = rng.normal(size=(16, 6, 6, 1)).astype("float32"); y = rng.integers(0, 4, 16)
base = model_and_weights(); start = [w.copy() for w in base.get_weights()]
updates = {}
for passes, batch in ((2, 8), (1, 16)):
    m = model_and_weights(); m.set_weights(start)
    m.compile(optimizer=tf.keras.optimizers.legacy.SGD(learning_rate=1.0), loss="sparse_categorical_crossentropy")
    clock = StepClock()
    install(tf, m, None, clock, passes=passes)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    m.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert int(m.optimizer.iterations.numpy()) == clock.updates   # the public count of updates agrees
    updates[passes] = ([a - b for a, b in zip(m.get_weights(), start)], clock.updates)
(two, n2), (one, n1) = updates[2], updates[1]
assert n2 == n1 == 1, (n2, n1)               # 2 passes of 8: one optimizer update, as one pass of 16
worst = max(float(np.max(np.abs(a - b))) for a, b in zip(two, one))
scale = max(float(np.max(np.abs(b))) for b in one)
assert scale > 1e-3 and worst < 1e-5 * max(1.0, scale), (worst, scale)
print("ok", worst, scale)
"""


@pytest.mark.slow   # a TensorFlow process (10 s)
def test_two_accumulated_passes_equal_one_pass_of_twice_the_batch():
    proc = subprocess.run([sys.executable, "-c", ACCUMULATION], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stdout[-2000:] + proc.stderr[-3000:]


HOST_READS = r"""
import numpy as np, tensorflow as tf
from pipelines.training.step import StepClock, clock_callback, hands_tensor_logs, install
seen = {"batch": [], "epoch": []}
class Probe(tf.keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        seen["batch"].append(type(logs["loss"]).__name__)
    def on_epoch_end(self, epoch, logs=None):
        seen["epoch"].append(type(logs["loss"]).__name__)
def fit(probe):
    m = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3, activation="softmax")])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    clock = StepClock()
    install(tf, m, None, clock)
    x, y = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.arange(32) % 3
    m.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[clock_callback(tf, clock), probe])
    assert clock.epochs[0]["steps"] == 4
for marked in (True, False):
    seen = {"batch": [], "epoch": []}
    fit(hands_tensor_logs(Probe()) if marked else Probe())
    print(marked, sorted(set(seen["batch"])), seen["epoch"])
"""


@pytest.mark.slow   # a TensorFlow process (10 s)
def test_a_steps_loss_stays_on_the_device_until_the_epochs_end():
    """The phased step reads nothing per step, and Keras hands batch logs over as tensors when every batch
    hook is marked (the step clock is): the loss reaches the host once, at the epoch's end.  A callback that
    is not marked still gets host values, every step: what the mark saves."""
    proc = subprocess.run([sys.executable, "-c", HOST_READS], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    marked, unmarked = proc.stdout.strip().splitlines()[-2:]
    assert marked == "True ['EagerTensor'] ['float']", marked
    assert unmarked == "False ['float'] ['float']", unmarked


def check_breakdown(history: dict, workers: int) -> dict:
    """The breakdown is there, every phase non-negative, and the phases account for the step within 10%."""
    breakdown = history["step_breakdown"]
    ms = breakdown["ms_per_step"]
    assert len(breakdown["ranks"]) == workers
    for name in ("input", "compute", "allreduce", "apply"):
        assert ms[f"{name}_ms"] >= 0, (name, ms)
    assert ms["compute_ms"] > 0 and ms["step_ms"] > 0
    assert abs(ms["other_ms"]) <= 0.1 * ms["step_ms"], ms
    for epochs in breakdown["ranks"]:
        for e in epochs:
            parts = sum(e[f"{k}_ms"] for k in ("input", "compute", "allreduce", "apply"))
            assert abs(e["step_ms"] - parts) <= 0.1 * e["step_ms"], e
    return ms


@pytest.mark.slow   # 2 Horovod workers
def test_levers_change_what_horovod_does(e2e_run, tmp_path):
    """fp16 halves the bytes Horovod reports per tensor reduction; 2 backward passes halve the reductions;
    a zero fusion threshold leaves the fusion buffer unused; the breakdown accounts for the step."""
    root, _ = e2e_run
    baseline = json.loads((root / "runs/e2e/history.json").read_text())     # timeline on, no levers
    conf = tmp_path / "levers.yaml"
    conf.write_text(f"""
run: {{name: levers, runs_dir: {tmp_path}/runs}}
spark: {{master: "local[2]", driver_memory: 1g}}
data: {{datasets_dir: {root}/datasets}}
train: {{model: mnist_cnn, epochs: 2, batch_size: 64, num_proc: 2, compression: fp16, backward_passes_per_step: 2,
        fusion_threshold_mb: 0, timeline: true, export_saved_model: false, checkpoint: false}}
""")
    proc = subprocess.run([SPARKCNN, "train", "--conf", str(conf)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    history = json.loads((tmp_path / "runs/levers/history.json").read_text())
    check_breakdown(history, 2)
    assert "[train] epoch 2 step " in proc.stdout and " + allreduce " in proc.stdout

    fp32, fp16 = baseline["horovod_timeline"], history["horovod_timeline"]
    assert list(fp32["bytes_by_dtype"]) == ["float32"] and list(fp16["bytes_by_dtype"]) == ["float16"]
    per32 = fp32["bytes"] / fp32["tensor_reductions"]
    per16 = fp16["bytes"] / fp16["tensor_reductions"]
    assert per16 == pytest.approx(per32 / 2)
    assert fp32["bytes"] == sum(e["updates"] for e in baseline["step_breakdown"]["ranks"][0]) * MNIST_CNN_PARAMS * 4
    updates = sum(e["updates"] for e in history["step_breakdown"]["ranks"][0])
    steps = sum(e["steps"] for e in history["step_breakdown"]["ranks"][0])
    assert steps == 2 * updates
    assert fp16["bytes"] == updates * MNIST_CNN_PARAMS * 2      # every update reduced each gradient once, as float16
    assert "MEMCPY_IN_FUSION_BUFFER" in fp32["activity_ms"] and "MEMCPY_IN_FUSION_BUFFER" not in fp16["activity_ms"]
    assert (tmp_path / "runs/levers/horovod_timeline.json").stat().st_size > 1000
