"""Shared fixtures: one real local SparkSession for the whole run, real MNIST files, one end-to-end run."""
import contextlib
import logging
import os
import sys

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipelines.core.sections import SparkSection  # noqa: E402


@pytest.fixture(scope="session")
def spark():
    from pipelines.core.session import build_spark
    session = build_spark(SparkSection(master="local[2]", app_name="sparkcnn-tests", driver_memory="2g", conf={}))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def mnist_files():
    """The four real MNIST IDX files, verified (fetched once into the user cache, then reused)."""
    from pipelines.ingest.fetch import fetch_mnist
    return fetch_mnist(os.environ.get("SPARKCNN_CACHE", "~/.cache/sparkcnn/downloads"), "auto")


@pytest.fixture(scope="session")
def foolbox_images():
    """kind -> [(file name, label, HxWxC uint8 array)] of the 20 real test images in the foolbox wheel."""
    import io

    import numpy as np
    from PIL import Image

    from pipelines.ingest.fetch import foolbox_samples

    def load(kind):
        return [(name, label, np.asarray(Image.open(io.BytesIO(png)))) for name, label, png in foolbox_samples(kind)]
    return {kind: load(kind) for kind in ("mnist", "cifar10")}


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory, mnist_files):
    """`sparkcnn run` as a user runs it, on a slice of real MNIST with MLflow tracking on (default store:
    <runs_dir>/mlruns); tests/test_end_to_end.py checks the outputs, tests/test_tracking.py the store."""
    import subprocess
    root = tmp_path_factory.mktemp("e2e")
    conf = root / "e2e.yaml"
    conf.write_text(f"""
run: {{name: e2e, runs_dir: {root}/runs}}
spark: {{master: "local[2]", driver_memory: 2g}}
data: {{datasets_dir: {root}/datasets}}
ingest: {{limit_train: 8000, validation_rows: 1000, limit_test: 2000}}
train: {{model: mnist_cnn, epochs: 2, batch_size: 64, num_proc: 2, optimizer: adam, learning_rate: 0.001, timeline: true}}
tracking: {{mlflow: true}}
""")
    sparkcnn = os.path.join(os.path.dirname(sys.executable), "sparkcnn")
    proc = subprocess.run([sparkcnn, "run", "--conf", str(conf)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return root, proc


@contextlib.contextmanager
def logged_lines(level=logging.INFO):
    """The messages of the records logged on "sparkcnn.*" loggers while the block runs, in order (a list
    filled as they come): what the CLI would print."""
    logger = logging.getLogger("sparkcnn")
    lines = []
    handler = logging.Handler(level)
    handler.emit = lambda record: lines.append(record.getMessage())
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def make_conf(tmp_path, text: str):
    """Write a conf file under tmp_path and load it (tests build small configs inline)."""
    from pipelines.stages import load_config
    path = tmp_path / "conf.yaml"
    path.write_text(text)
    return load_config(str(path))


@pytest.fixture(scope="session")
def imagenet_samples():
    """The 20 real ImageNet images shipped in the foolbox 3.3.4 wheel, as [(file name, true class, JPEG bytes)]."""
    from pipelines.ingest.fetch import foolbox_samples
    samples = foolbox_samples("imagenet")
    assert len(samples) == 20, f"expected 20 ImageNet samples, found {len(samples)}"
    return samples


def kill_job(proc, mark: str) -> None:
    """SIGKILL a job started with start_new_session=True and env SPARKCNN_TEST_MARK=mark: its process
    group, then anything else that inherited the marker (Horovod starts some workers in sessions of
    their own)."""
    import signal

    import psutil
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    for p in psutil.process_iter():
        try:
            if p.environ().get("SPARKCNN_TEST_MARK") == mark:
                p.kill()
        except (psutil.Error, OSError):
            continue


def kill_rounds(argv, snapshot, outputs, rounds, window, seed, label=None):
    """Start `argv` (a sparkcnn job) `rounds` times and SIGKILL it at a random point in `window`
    seconds each time; after every kill each output must read as before.  -> the snapshots."""
    import random
    import subprocess
    import time
    import uuid
    rng = random.Random(seed)
    before = {p: snapshot(p) for p in outputs}
    points = []
    for _ in range(rounds):
        mark = uuid.uuid4().hex
        proc = subprocess.Popen(argv, start_new_session=True, env=dict(os.environ, SPARKCNN_TEST_MARK=mark),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        at = rng.uniform(*window)
        points.append(round(at, 1))
        time.sleep(at)
        kill_job(proc, mark)
        for p in outputs:
            assert snapshot(p) == before[p], f"{p} changed after a kill at {at:.1f}s"
    print(f"{label or ' '.join(argv[1:2])}: killed at {points} s; previous output intact each time")
    return before


def petastorm_first_pass(path: str, rows: int, fields: list, timeout_s: float = 120) -> list:
    """The ids of the first `rows` rows an endless Petastorm reader delivers, read the way training
    reads (num_epochs=None, bounded by count).  Petastorm 0.13.1's finite reader (num_epochs=1,
    workers_count=1) is not used: its thread pool can declare the end before the last ventilated
    row group arrives (38 of 100 one-worker reads of a 2-file dataset came back short here)."""
    import time

    from petastorm import make_batch_reader
    ids, deadline = [], time.time() + timeout_s
    with make_batch_reader("file://" + os.path.realpath(path), num_epochs=None, workers_count=1,
                           shuffle_row_groups=False, schema_fields=fields) as reader:
        for batch in reader:
            ids.extend(batch.id.tolist())
            if len(ids) >= rows or time.time() > deadline:
                break
    return ids[:rows]


def pytest_collection_modifyitems(config, items):
    """Tests that share the end-to-end run (a whole `sparkcnn run` with Horovod) belong to the slow tier."""
    for item in items:
        if "e2e_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def storage_context(options: dict, **policy):
    """The StorageContext that reaches a test server (`policy`: PublishPolicy settings)."""
    from pipelines.core import storage
    return storage.StorageContext(storage.StorageOptions(dict(options)), storage.PublishPolicy(**policy))


class S3Server:
    """A real S3-protocol server (moto's ThreadedMotoServer) on 127.0.0.1, with one bucket.

    Its credentials are made up per run and distinctive, so tests can search every output for them.
    Servers in one process share moto's state: a second one needs a bucket of its own.
    """

    def __init__(self, bucket: str = "sparkcnn-test"):
        import logging
        import uuid

        import boto3
        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.ERROR)     # one line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.bucket = bucket
        self.key = "AKIA" + uuid.uuid4().hex[:16].upper()
        self.secret = "s3cret-" + uuid.uuid4().hex
        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.key,
                     aws_secret_access_key=self.secret, region_name="us-east-1").create_bucket(Bucket=self.bucket)
        self.options = {"endpoint_url": self.endpoint, "region_name": "us-east-1",
                        "key": self.key, "secret": self.secret}

    def url(self, *parts) -> str:
        return "s3://" + "/".join((self.bucket,) + parts)

    def context(self, **policy):
        return storage_context(self.options, **policy)

    def conf_yaml(self) -> str:
        """The storage section of a conf that reaches this server."""
        o = self.options
        return (f"storage: {{options: {{endpoint_url: '{o['endpoint_url']}', region_name: us-east-1, "
                f"key: '{o['key']}', secret: '{o['secret']}'}}}}\n")

    def fs(self):
        import s3fs
        return s3fs.S3FileSystem(key=self.key, secret=self.secret, skip_instance_cache=True,
                                 client_kwargs={"endpoint_url": self.endpoint, "region_name": "us-east-1"})

    def all_bytes(self, prefix: str = "") -> dict:
        """{key: bytes} of every object under the bucket (or a prefix of it)."""
        fs = self.fs()
        return {k: fs.cat_file(k) for k in fs.find(f"{self.bucket}/{prefix}")}


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.server.stop()


@pytest.fixture
def s3_storage(s3_server):
    """The test runs under the storage context of the test server (left when it ends)."""
    from pipelines.core import storage
    with storage.using(s3_server.context()):
        yield s3_server


AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the emulator accepts no other): not a secret of anyone's.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_binary():
    """Azurite's blob server, installed from npm by scripts/bootstrap.sh (or SPARKCNN_AZURITE)."""
    path = os.environ.get("SPARKCNN_AZURITE") or os.path.expanduser(
        "~/.cache/sparkcnn/azurite-3.37.0/node_modules/.bin/azurite-blob")
    return path if os.path.exists(path) else None


class AzuriteServer:
    """Microsoft's Azure Blob Storage emulator (Azurite, from npm) on 127.0.0.1, with one container."""

    def __init__(self, tmp):
        import socket
        import subprocess
        import time
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen([azurite_binary(), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                                      "--location", str(tmp), "--silent", "--skipApiVersionCheck", "--loose"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            self.proc.kill()
            raise RuntimeError(f"Azurite did not listen on 127.0.0.1:{port} within 30 s")
        self.container = "sparkcnn-test"
        self.secret = AZURITE_KEY
        self.connection_string = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                                  f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")
        self.options = {"abfs": {"connection_string": self.connection_string}}
        self.fs().mkdir(self.container)

    def url(self, *parts) -> str:
        return "abfs://" + "/".join((self.container,) + parts)

    def context(self, **policy):
        return storage_context(self.options, **policy)

    def conf_yaml(self) -> str:
        return f"storage: {{options: {{abfs: {{connection_string: '{self.connection_string}'}}}}}}\n"

    def fs(self):
        import adlfs
        return adlfs.AzureBlobFileSystem(connection_string=self.connection_string, skip_instance_cache=True)

    def stop(self):
        import subprocess
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:     # it keeps serving open keep-alive connections
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory):
    if azurite_binary() is None:
        pytest.skip("Azurite is not installed: `make install` installs it from npm into ~/.cache/sparkcnn/azurite-3.37.0")
    server = AzuriteServer(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture(params=["s3", "azure"])
def object_store(request):
    """The test runs under the storage context of a real S3-protocol server, then of Azurite."""
    from pipelines.core import storage
    server = request.getfixturevalue("s3_server" if request.param == "s3" else "azurite_server")
    with storage.using(server.context()):
        yield server
