"""One read per fact: a command asks the object store for each dataset's manifest (its published
version) and sidecar (_sparkcnn_dataset.json) once, however many stage keys and stage steps need them.

Counted where it costs: the requests a real S3-protocol server (moto's, on 127.0.0.1) receives, from the
driver and from every Spark or Horovod process, while real commands run.  Before the facts were read once
and handed on, `sparkcnn score` read the test split's manifest 4 times and `sparkcnn train` the train
split's 4 times and its sidecar 3 times."""
import os
import subprocess
import sys
import threading

import pytest

from pipelines.core import storage

from conftest import S3Server

MANIFEST, SIDECAR = "_manifest.json", "_sparkcnn_dataset.json"
SPLITS = ("train", "val", "test")


class RequestLog:
    """WSGI middleware in front of the server's app: (method, path) of every request it answers."""

    def __init__(self, app):
        self.app, self.seen, self._lock = app, [], threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            self.seen.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
        return self.app(environ, start_response)

    def since(self, mark: int) -> list:
        with self._lock:
            return self.seen[mark:]

    def mark(self) -> int:
        with self._lock:
            return len(self.seen)


@pytest.fixture(scope="module")
def counted_s3():
    """A server of its own (other tests' requests do not count), with every request logged.  moto's
    ThreadedMotoServer takes no middleware, so the log is put in front of the app its WSGI server runs."""
    server = S3Server()
    server.requests = RequestLog(server.server._server.app)
    server.server._server.app = server.requests
    yield server
    server.server.stop()


def reads_of(requests: list, output: str) -> tuple:
    """(GETs of `output`'s manifest, GETs of a sidecar in one of its versions) among `requests`."""
    manifest = sum(1 for method, path in requests if method == "GET" and path.endswith(f"/{output}/{MANIFEST}"))
    sidecar = sum(1 for method, path in requests
                  if method == "GET" and f"/{output}/v-" in path and path.endswith(f"/{SIDECAR}"))
    return manifest, sidecar


def dataset_reads(requests: list) -> dict:
    return {split: reads_of(requests, f"datasets/mnist/{split}") for split in SPLITS}


def _conf_text(server, name: str) -> str:
    return f"""
run: {{name: {name}, runs_dir: '{server.url(name, "runs")}'}}
data: {{datasets_dir: '{server.url(name, "datasets")}'}}
spark: {{master: "local[2]", driver_memory: 1g}}
ingest: {{limit_train: 600, validation_rows: 120, limit_test: 200, partition_mb: 1}}
train: {{model: torres, epochs: 1, batch_size: 32, num_proc: 1, reader_workers: 1}}
""" + server.conf_yaml()


@pytest.fixture
def stages_on(counted_s3, tmp_path, mnist_files):
    """run(stage names, cfg) as the CLI runs them, in this process, against the counted server."""
    from pipelines.cli import run_stages
    from pipelines.stages import load_config
    conf = tmp_path / "counted.yaml"
    conf.write_text(_conf_text(counted_s3, "inproc"))
    cfg = load_config(str(conf))

    def run(stages, forced=()):
        return run_stages(stages, cfg, forced=set(forced))
    with storage.using(cfg.storage.context()):       # as the CLI does for the whole command
        yield cfg, run


def test_a_command_keeps_its_first_answer_until_it_publishes_itself(counted_s3):
    """Within `reading_once` an output is read once and stays pinned, whatever another job publishes
    meanwhile; what this process publishes is the answer from then on; outside it every call reads."""
    from pipelines.core.publish_store import new_remote_version, publish_version
    from pipelines.core.published import reading_once
    from pipelines.core.store import atomic_dir, exists, published_files, read_manifest, resolve
    with storage.using(counted_s3.context()):
        dest = counted_s3.url("pinned", "out")

        def publish(content: bytes, by_this_process: bool) -> None:
            if by_this_process:
                with atomic_dir(dest) as staging:
                    storage.put_bytes(storage.join(staging, "part.txt"), content)
                return
            version = new_remote_version(dest)       # another job: straight through the manifest
            storage.put_bytes(storage.join(version.location, "part.txt"), content)
            publish_version(version, dest)

        publish(b"v1", by_this_process=False)
        mark = counted_s3.requests.mark()
        with reading_once():
            first = resolve(dest)
            assert exists(dest) and published_files(dest, ".txt") == [storage.join(first, "part.txt")]
            assert reads_of(counted_s3.requests.since(mark), "pinned/out")[0] == 1
            publish(b"v2", by_this_process=False)
            assert resolve(dest) == first                               # the command's version
            publish(b"v3", by_this_process=True)
            third = read_manifest(dest)["url"]
            assert resolve(dest) == third != first                      # what it published itself
            assert published_files(dest, ".txt") == [storage.join(third, "part.txt")]
        # the command's one read; the other job's publish reads the manifest once and this process's
        # twice (writers see the store as it is: the versions to keep, the history), read_manifest once
        assert reads_of(counted_s3.requests.since(mark), "pinned/out")[0] == 1 + 1 + 2 + 1
        mark = counted_s3.requests.mark()
        assert resolve(dest) == resolve(dest) == third
        assert reads_of(counted_s3.requests.since(mark), "pinned/out")[0] == 2      # no block: each call reads


def test_score_reads_its_dataset_once_and_a_run_of_skips_reads_each_dataset_once(spark, counted_s3, stages_on):
    from pipelines.core.store import RunStore
    from pipelines.core.tf_runtime import model_to_bytes
    from pipelines.training.networks import build_model
    cfg, run = stages_on
    log = counted_s3.requests
    run(("ingest",))
    storage.put_bytes(RunStore(cfg.run_dir).model_path, model_to_bytes(build_model("torres", (28, 28, 1), 10)))

    mark = log.mark()
    assert run(("score",))["score"]["rows"] == 200
    seen = log.since(mark)
    assert dataset_reads(seen) == {"train": (0, 0), "val": (0, 0), "test": (1, 1)}
    # what the stage published (its predictions) is not read back: its key record, the metrics'
    # version line and the metrics' rows take it from the publish
    assert reads_of(seen, "runs/inproc/predictions")[0] == 0

    mark = log.mark()
    assert run(("ingest", "score")) == {"ingest": None, "score": None}     # both up to date
    # ingest's key looks at its three outputs, score's at the test split: one manifest read each, shared
    assert dataset_reads(log.since(mark)) == {"train": (1, 0), "val": (1, 0), "test": (1, 0)}


@pytest.mark.slow   # a Horovod training
def test_train_reads_each_dataset_once(counted_s3, tmp_path, mnist_files):
    """`sparkcnn train` as a user runs it: its key, the estimator, the spec, the resume fingerprint."""
    conf = tmp_path / "train.yaml"
    conf.write_text(_conf_text(counted_s3, "cli"))
    sparkcnn = os.path.join(os.path.dirname(sys.executable), "sparkcnn")

    def command(*argv):
        mark = counted_s3.requests.mark()
        proc = subprocess.run([sparkcnn, *argv, "--conf", str(conf)], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return counted_s3.requests.since(mark)

    command("ingest")
    assert dataset_reads(command("train")) == {"train": (1, 1), "val": (1, 1), "test": (0, 0)}
    # a held-out fraction: the source once; the split it publishes into the run is not read back
    seen = command("train", "--set", "train.validation=0.2", "--set", "run.name=held")
    assert dataset_reads(seen) == {"train": (1, 1), "val": (1, 0), "test": (0, 0)}
    assert reads_of(seen, "runs/held/validation/train") == (0, 0)
    assert reads_of(seen, "runs/held/validation/val") == (0, 0)
