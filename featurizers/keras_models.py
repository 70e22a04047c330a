"""Building a registry model in Keras, and the image preparation every model shares.

Imported only where TensorFlow may start: inside executors (featurize_remote)
and in benchmarks/tests, never by driver modules at import time.

Two outputs per model:
  "features"       the input of the ImageNet classifier (sparkdl's choice): the
                   global-average-pooled activations, or fc2 for VGG;
  "probabilities"  the 1000-class softmax.
Both come from one full network, so a single weights file (with classifier)
serves the featurizer and the predictor.
"""
from __future__ import annotations

import os

import numpy as np

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


def to_rgb(images: np.ndarray, bgr: bool) -> np.ndarray:
    """(N, H, W, C) uint8 with C in {1, 3, 4} -> (N, H, W, 3) RGB; grayscale is repeated, alpha dropped."""
    c = images.shape[-1]
    if c == 1:
        return np.repeat(images, 3, axis=-1)
    if c == 4:
        images = images[..., :3]
    return images[..., ::-1] if bgr else images


def resize_crop(images: np.ndarray, size: int):
    """uint8 RGB (N, H, W, 3) -> float32 tensor (N, size, size, 3): shorter side to `size`, centre crop.

    Bilinear with antialiasing, like PIL's resize that the EfficientNet-Lite
    reference accuracy was measured with.
    """
    import tensorflow as tf
    n, h, w, _ = images.shape
    scale = size / min(h, w)
    rh, rw = max(size, round(h * scale)), max(size, round(w * scale))
    x = tf.convert_to_tensor(images, dtype=tf.float32)
    if (rh, rw) != (h, w):
        x = tf.image.resize(x, (rh, rw), method="bilinear", antialias=True)
    top, left = (rh - size) // 2, (rw - size) // 2
    return x[:, top:top + size, left:left + size, :]


def prepare(images: np.ndarray, spec: ModelSpec, bgr: bool = False) -> np.ndarray:
    """What the network's input array is for these raw images: to RGB, resize, crop, normalise."""
    return preprocess(spec)(resize_crop(to_rgb(images, bgr), spec.input_size)).numpy()
