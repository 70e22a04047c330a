"""sparkcnn: distributed Spark deep-learning pipeline for image CNNs."""

__version__ = "0.2.0"
