"""The library logs and the CLI prints: a stage function called from a program prints nothing unless the
program configures logging, and its lines arrive as records on "sparkcnn.*" loggers; the CLI's handler
prints them as the message alone; run.verbose lets TensorFlow's INFO lines through in every process."""
import io
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pipelines.core.log_output import lines_to
from pipelines.core.store import RunStore
from pipelines.ingest.stage import ingest_stage

from conftest import make_conf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_npz_conf(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=rng.integers(0, 256, (12, 8, 8), dtype=np.uint8), y=np.arange(12) % 3)
    return make_conf(tmp_path, f"run: {{name: quiet, runs_dir: '{tmp_path}/runs'}}\n"
                               f"data: {{dataset: tiny, format: npz, path: '{path}', datasets_dir: '{tmp_path}/ds'}}\n"
                               "ingest: {validation_rows: 2, test_fraction: 0.0}\n")


def test_a_stage_function_prints_nothing_and_logs_its_lines(spark, tmp_path, capfd, caplog):
    cfg = _tiny_npz_conf(tmp_path)
    metas = ingest_stage(spark, cfg, RunStore(cfg.run_dir))       # no handler, no level: a notebook's first call
    assert metas["train"].num_rows == 10
    assert capfd.readouterr().out == ""

    caplog.set_level(logging.INFO, logger="sparkcnn")                           # the user asks for them
    ingest_stage(spark, cfg, RunStore(cfg.run_dir))
    ours = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("sparkcnn")]
    assert ("sparkcnn.ingest", "INFO", f"[ingest] train: read 10 = written 10 + rejected 0 -> "
            f"{tmp_path}/ds/tiny/train") in ours, ours
    assert all(message.startswith("[ingest] ") for _, _, message in ours), ours
    assert capfd.readouterr().out == ""                       # records, still not printed by the library


def test_the_clis_handler_prints_the_message_alone_and_restores_the_logger():
    out = io.StringIO()
    logger = logging.getLogger("sparkcnn")
    before = (logger.level, logger.propagate, list(logger.handlers))
    with lines_to(out):
        logging.getLogger("sparkcnn.train").info("[train] epoch 1/3: loss 0.5")
        logging.getLogger("sparkcnn.core").warning("[lock] WARNING: taken over")
        logging.getLogger("sparkcnn.train").debug("not at INFO")
        logging.getLogger("elsewhere").warning("another library's record")
    logging.getLogger("sparkcnn.train").info("after the CLI: not printed")
    assert out.getvalue() == "[train] epoch 1/3: loss 0.5\n[lock] WARNING: taken over\n"
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


NOTEBOOK = """
import logging, sys
from pipelines.core.store import RunStore
from pipelines.ingest.stage import ingest_stage
from pipelines.stages import load_config
cfg = load_config(sys.argv[1])
ingest_stage(spark, cfg, RunStore(cfg.run_dir))               # nothing configured
print("--- basicConfig", file=sys.stderr, flush=True)
logging.basicConfig(level=logging.INFO)
ingest_stage(spark, cfg, RunStore(cfg.run_dir))
"""


@pytest.mark.slow   # a Spark session in a fresh interpreter
def test_a_notebook_sees_the_lines_only_once_it_configures_logging(tmp_path):
    _tiny_npz_conf(tmp_path)
    cfg_path = tmp_path / "conf.yaml"                        # make_conf wrote it
    script = ("from pipelines.core.sections import SparkSection\nfrom pipelines.core.session import build_spark\n"
              "spark = build_spark(SparkSection(master='local[1]', driver_memory='1g'))\n" + NOTEBOOK)
    proc = subprocess.run([sys.executable, "-c", script, str(cfg_path)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == ""
    before, after = proc.stderr.split("--- basicConfig\n")
    assert "[ingest]" not in before, before[-2000:]
    assert f"INFO:sparkcnn.ingest:[ingest] train: read 10 = written 10 + rejected 0 -> {tmp_path}/ds/tiny/train" \
        in after.splitlines(), after[-2000:]


TF_IN_EVERY_PROCESS = """
import json, os, sys
from pipelines.core.sections import SparkSection
from pipelines.core.session import build_spark
from pipelines.training.launch import rank_environment
spark = build_spark(SparkSection(master="local[1]", driver_memory="1g"), verbose=sys.argv[1] == "verbose")

def start_tf(_):
    import tensorflow as tf
    return [os.environ.get("TF_CPP_MIN_LOG_LEVEL"), int(tf.constant(1) + 1)]

executor = spark.sparkContext.parallelize([0], 1).map(start_tf).collect()[0]
print(json.dumps({"executor": executor, "rank": rank_environment(spark)["TF_CPP_MIN_LOG_LEVEL"],
                  "conf": spark.sparkContext.getConf().get("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL")}))
"""


@pytest.mark.slow   # two Spark sessions in fresh interpreters, TensorFlow started in an executor of each
@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_info_lines_follow_run_verbose_in_executors_and_ranks(verbose):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}   # as a user's shell has it
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(TF_IN_EVERY_PROCESS),
                           "verbose" if verbose else "quiet"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=dict(env, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    level = "0" if verbose else "1"
    assert seen == {"executor": [level, 2], "rank": level, "conf": level}
    info_lines = [line for line in proc.stderr.splitlines() if " I tensorflow/" in line]
    assert bool(info_lines) == verbose, proc.stderr[-3000:]       # the executor's TF banner, or silence
