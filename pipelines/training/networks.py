"""A fresh network to train, from whatever train.model names (pipelines/inference/model_refs.py: an
architecture, a Keras file, a run directory or module:function), built inside a training worker.

Under a mixed-precision policy the zoo's softmax layer is float32 (declared so); another model whose
output is not float32 gets a float32 cast on top, so the loss is float32.
"""
from __future__ import annotations

import importlib

from pipelines.core import storage
from pipelines.core.store import RUN_MODEL
from pipelines.core.tf_runtime import load_model_bytes
from pipelines.training.variants import NAMED, build_variant, resolve
from pipelines.training.zoo import MODELS



def _saved(location: str):
    """A saved Keras model (loaded in safe mode: loading runs no code) from a file or a run directory."""
    import tensorflow as tf
    if not location.lower().endswith((".keras", ".h5")):
        location = storage.join(location, RUN_MODEL)
    if storage.is_remote(location):
        return load_model_bytes(storage.read_bytes(location), "." + location.rsplit(".", 1)[-1])
    return tf.keras.models.load_model(location, compile=False, safe_mode=True)


def build_model(name: str, input_shape, num_classes: int):
    """A fresh, uncompiled model for `name` (a zoo or variant name, a .keras/.h5 file, a run directory or
    module:function); the driver checked the name with model_refs.classify."""
    import tensorflow as tf
    if name in MODELS:
        model = MODELS[name](input_shape, num_classes)
    elif name in NAMED:
        model = build_variant(resolve(name), input_shape, num_classes, name=name)
    elif ":" in name and not storage.is_remote(name):
        module, _, func = name.partition(":")
        model = getattr(importlib.import_module(module), func)(input_shape, num_classes)
    else:
        model = _saved(name)
    if model.outputs[0].dtype != tf.float32:
        cast = tf.keras.layers.Activation("linear", dtype="float32", name="probabilities_float32")
        model = tf.keras.Model(model.inputs, cast(model.outputs[0]), name=model.name)
    return model
