"""The fully-convolutional form of a chain classifier, and the check that it computes the same function.

Used on both sides: the driver proves the equivalence (localise.stage), executors build the
form once per worker to run it over canvases (localise.remote).  TensorFlow is imported
inside the functions, so importing this module stays cheap.
"""
from __future__ import annotations

import numpy as np

from pipelines.core.errors import SparkcnnError


class ConversionError(SparkcnnError, ValueError):
    """The model has a layer with no fully-convolutional equivalent."""


def to_fully_convolutional(model):
    """The fully-convolutional equivalent of a chain classifier, weights reshaped (see the module docstring)."""
    import tensorflow as tf
    L = tf.keras.layers
    channels = model.input_shape[-1]
    inputs = tf.keras.Input(shape=(None, None, channels), dtype=model.inputs[0].dtype, name="pixels")
    x = inputs
    flat_shape = None      # the feature map a Flatten saw; the next Dense covers all of it
    flattened = False
    for layer in model.layers:
        if isinstance(layer, (tf.keras.layers.InputLayer, L.Dropout)):
            continue
        if isinstance(layer, L.Flatten):
            flat_shape = tuple(layer.input_shape[1:])
            flattened = True
            continue
        if isinstance(layer, L.Dense):
            if not flattened:
                raise ConversionError(f"layer '{layer.name}': a Dense layer before any Flatten has no conv form")
            weights, bias = layer.get_weights()
            if flat_shape is not None:
                kernel = weights.reshape(*flat_shape, weights.shape[1])
                flat_shape = None
            else:
                kernel = weights.reshape(1, 1, *weights.shape)
            conv = L.Conv2D(weights.shape[1], kernel.shape[:2], activation=layer.activation,
                            name=f"{layer.name}_as_conv")
            x = conv(x)
            conv.set_weights([kernel, bias])
            continue
        if flattened:
            raise ConversionError(f"layer '{layer.name}' ({type(layer).__name__}) after Flatten is not supported")
        if isinstance(layer, (L.Conv2D, L.MaxPooling2D, L.AveragePooling2D, L.Rescaling, L.ReLU, L.Activation,
                              L.BatchNormalization)):
            clone = type(layer).from_config(layer.get_config())
            x = clone(x)
            clone.set_weights(layer.get_weights())
            continue
        raise ConversionError(f"layer '{layer.name}' ({type(layer).__name__}) has no fully-convolutional equivalent")
    if not flattened:
        raise ConversionError(f"model '{model.name}' has no Flatten + Dense classifier to convert")
    return tf.keras.Model(inputs, x, name=f"{model.name}_fcn")


def equivalence(model, fcn, images: np.ndarray, batch_size: int = 1000) -> dict:
    """Classifier and FCN on the same digit-sized images: the largest probability difference and argmax agreement."""
    max_diff, agree = 0.0, 0
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        p = model(chunk, training=False).numpy()
        q = fcn(chunk, training=False).numpy()
        q = q.reshape(len(chunk), -1)
        max_diff = max(max_diff, float(np.abs(p - q).max()))
        agree += int((p.argmax(axis=1) == q.argmax(axis=1)).sum())
    return {"rows": int(len(images)), "max_abs_diff": max_diff, "argmax_agree": agree,
            "identical_predictions": agree == len(images)}


# ---- the stage ----------------------------------------------------------------------------------------------
