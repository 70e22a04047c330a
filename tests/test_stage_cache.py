"""`sparkcnn run` as a nightly scheduler runs it: stages skipped exactly when nothing they depend on
changed, epoch lines in the log as they happen, events.jsonl.  One real pipeline (IDX files in a folder,
Horovod training on local Spark), changed one input kind at a time."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from pipelines.core.events import read_events

SPARKCNN = os.path.join(os.path.dirname(sys.executable), "sparkcnn")
STAGES = ("ingest", "train", "score", "report")


def _ran(stdout: str) -> tuple:
    """The stages that ran, from their '[stage] running: ...' / '[stage] up to date' lines."""
    ran = [s for s in STAGES if f"[{s}] running: " in stdout]
    skipped = [s for s in STAGES if f"[{s}] up to date (key " in stdout]
    assert sorted(ran + skipped) == sorted(STAGES), stdout[-3000:]
    return tuple(ran)


@pytest.mark.slow   # three Horovod trainings, nine pipeline runs
def test_stages_rerun_exactly_when_their_inputs_change(tmp_path, mnist_files):
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in mnist_files.values():
        shutil.copy(path, raw / os.path.basename(path))
    conf = tmp_path / "nightly.yaml"
    settings = {"run": {"name": "nightly", "runs_dir": str(tmp_path / "runs")},
                "spark": {"master": "local[2]", "driver_memory": "2g"},
                "data": {"format": "idx", "path": str(raw), "dataset": "digits", "datasets_dir": str(tmp_path / "ds")},
                "ingest": {"limit_train": 2000, "validation_rows": 400, "limit_test": 600},
                "train": {"model": "torres", "epochs": 3, "batch_size": 64, "num_proc": 2},
                "report": {"samples_per_class": 4}}

    def run(*extra, stdout=None):
        conf.write_text(yaml.safe_dump(settings))
        t0 = time.perf_counter()
        proc = subprocess.run([SPARKCNN, "run", "--conf", str(conf), *extra], capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return _ran(proc.stdout), time.perf_counter() - t0, proc.stdout

    # First run, its stdout a file as under a scheduler: epoch lines must arrive while training goes on.
    conf.write_text(yaml.safe_dump(settings))
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([SPARKCNN, "run", "--conf", str(conf)], stdout=log, stderr=subprocess.DEVNULL)
        seen_first_epoch = None
        while proc.poll() is None:
            text = log_path.read_text()
            if "[train] epoch 1/3:" in text and seen_first_epoch is None:
                seen_first_epoch = text
            time.sleep(0.05)
    first = log_path.read_text()
    assert proc.returncode == 0, first[-3000:]
    assert _ran(first) == STAGES
    assert seen_first_epoch is not None and "[train] epoch 3/3:" not in seen_first_epoch, \
        "epoch lines reached the log in one burst"
    assert "[train] model ->" not in seen_first_epoch

    again, seconds, out = run()
    assert again == (), out
    assert seconds < 60, f"a run with every stage up to date took {seconds:.0f} s"
    events = read_events(str(tmp_path / "runs" / "nightly"))
    last = [e for e in events if e["invocation"] == events[-1]["invocation"]]
    assert [e["event"] for e in last] == ["command_start"] + ["stage_skipped"] * 4 + ["command_end"]
    assert last[-1]["exit_code"] == 0
    ended = [e for e in events if e["event"] == "stage_end" and e["stage"] == "score"]
    assert ended and 0 < ended[0]["result"]["accuracy"] <= 1

    settings["report"]["samples_per_class"] = 3                       # a report setting
    assert run()[0] == ("report",)
    settings["score"] = {"batch_size": 128}                          # a score setting
    assert run()[0] == ("score", "report")
    settings["train"]["learning_rate"] = 0.002                        # a train setting
    assert run()[0] == ("train", "score", "report")
    os.utime(raw / "t10k-labels-idx1-ubyte", (time.time() + 5, time.time() + 5))   # a raw file
    assert run()[0] == STAGES
    shutil.rmtree(os.path.realpath(tmp_path / "runs" / "nightly" / "predictions"))  # an output gone
    os.remove(tmp_path / "runs" / "nightly" / "predictions")
    assert run()[0] == ("score", "report")
    assert run("--force", "report")[0] == ("report",)
    assert run()[0] == ()
    bad = subprocess.run([SPARKCNN, "run", "--conf", str(conf), "--force", "trian"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--force trian" in bad.stderr.strip().splitlines()[-1]
    record = json.loads((tmp_path / "ds" / "digits" / "_stage_ingest.json").read_text())
    assert record["stage"] == "ingest" and set(record["outputs"]) == {str(tmp_path / "ds" / "digits" / s)
                                                                     for s in ("train", "val", "test")}
