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
