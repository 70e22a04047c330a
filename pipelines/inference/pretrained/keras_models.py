"""Building a registry model in Keras, and its input normalisation.

How an image is fitted to the model's input is the inference engine's one rule
(pipelines.images.pixels; pipelines.inference.network.network_input for arrays).

Imported only where TensorFlow may start: inside executors (the inference engine's
pipelines.inference.network.load_network) and in benchmarks/tests, never by driver modules at import time.

Two outputs per model:
  "features"       the input of the ImageNet classifier (sparkdl's choice): the
                   global-average-pooled activations, or fc2 for VGG;
  "probabilities"  the 1000-class softmax.
Both come from one full network, so a single weights file (with classifier)
serves the featurizer and the predictor.
"""
from __future__ import annotations

import os

from . import efficientnet_lite
from .registry import (
    IMAGENET,
    RANDOM_UNTRAINED,
    ModelSpec,
    module_for,
    packaged_weights_path,
)
from .torch_weights import read_state_dict

FEATURES = "features"
PROBABILITIES = "probabilities"
RANDOM_SEED = 1234


def build_model(spec: ModelSpec, weights: str, output: str):
    """A keras.Model taking float32 (N, S, S, 3) preprocessed by `preprocess(spec)`; output per `output`."""
    import tensorflow as tf
    if weights == RANDOM_UNTRAINED:
        tf.keras.utils.set_random_seed(RANDOM_SEED)  # same random network in every executor
    if spec.keras_name:
        builder = getattr(tf.keras.applications, spec.keras_name)
        keras_weights = None if weights == RANDOM_UNTRAINED else (
            IMAGENET if weights == IMAGENET else os.path.expanduser(weights))
        full = builder(include_top=True, weights=keras_weights, input_shape=(spec.input_size, spec.input_size, 3))
    else:
        full = efficientnet_lite.build(spec.name, include_top=True)
        if weights != RANDOM_UNTRAINED:
            path = packaged_weights_path(spec) if weights == IMAGENET else os.path.expanduser(weights)
            efficientnet_lite.load_state_dict(full, read_state_dict(path), path)
    if output == PROBABILITIES:
        return full
    # The classifier's input: layers[-1] is the Dense softmax; some nets put a Dropout before it.
    head_input = full.layers[-1].input
    return tf.keras.Model(full.input, head_input, name=f"{full.name}_features")


def preprocess(spec: ModelSpec):
    """The model's own input normalisation, as a function of a float32 tensor of 0..255 RGB."""
    if spec.preprocess == "lite":
        return lambda x: (x - 127.0) / 128.0
    return module_for(spec).preprocess_input
