"""sparkcnn: distributed Spark deep-learning pipeline for image CNNs.

The pinned stack lives in requirements.txt; Horovod is built by
scripts/bootstrap.sh after TensorFlow (it must compile against that exact TF),
so it is not an install_requires here.
"""
import re

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"', open("pipelines/__init__.py").read()).group(1)

setup(
    name="sparkcnn",
    version=VERSION,
    description="Spark + Horovod + Keras pipeline for image CNNs: ingest, train, score, report",
    packages=find_packages(include=["pipelines", "pipelines.*", "featurizers", "jobs"]),
    package_data={"": ["*.yaml"]},
    python_requires=">=3.10,<3.12",
    install_requires=[
        "numpy>=1.26,<2",
        "pyarrow>=10,<11",
        "pyspark>=3.5,<4",
        "pyyaml>=6",
        "pillow>=10",
    ],
    entry_points={"console_scripts": ["sparkcnn=pipelines.cli:main"]},
)
