"""Pretrained CNNs as Spark ML stages (sparkdl's DeepImageFeaturizer / DeepImagePredictor, rebuilt).

    from featurizers import DeepImageFeaturizer

    from featurizers import DeepImagePredictor

Importing this package does not start TensorFlow; executors do, when a stage runs.
"""
from pipelines.inference.pretrained.registry import IMAGENET, MODELS, RANDOM_UNTRAINED  # noqa: F401
from .transformers import DeepImageFeaturizer, DeepImagePredictor  # noqa: F401
