"""The CNN zoo: named functions that each return a fresh `keras.Model`.

Every model takes raw pixels (uint8, HWC) and scales them itself with a
Rescaling layer, so the saved model carries its own preprocessing: scoring,
featurizing and a user's notebook feed it the same bytes training saw.
TensorFlow is imported inside the builders, never at module import: this
module is imported by the driver, and the driver must not initialise TF
before Spark and Horovod fork workers.
"""
from __future__ import annotations

from typing import Callable, Dict

MODELS: Dict[str, Callable] = {}


def register(name: str):
    def wrap(fn):
        MODELS[name] = fn
        return fn
    return wrap


def _inputs(keras, input_shape):
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name="pixels")
    return inputs, keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)


@register("mnist_cnn")
def mnist_cnn(input_shape, num_classes):
    """The Keras mnist_cnn example the seeds start from (1,199,882 params on 28x28x1)."""
    from tensorflow import keras
    L = keras.layers
    inputs, x = _inputs(keras, input_shape)
    x = L.Conv2D(32, (3, 3), activation="relu")(x)
    x = L.Conv2D(64, (3, 3), activation="relu")(x)
    x = L.MaxPooling2D((2, 2))(x)
    x = L.Dropout(0.25)(x)
    x = L.Flatten()(x)
    x = L.Dense(128, activation="relu")(x)
    x = L.Dropout(0.5)(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def build_model(name: str, input_shape, num_classes: int):
    if name not in MODELS:
        raise KeyError(f"unknown model '{name}'; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](input_shape, num_classes)


def make_optimizer(name: str, learning_rate: float):
    """Keras 2 legacy optimizers: the ones Horovod 0.28's DistributedOptimizer is tested with."""
    from tensorflow.keras.optimizers import legacy
    classes = {"adam": legacy.Adam, "adadelta": legacy.Adadelta, "sgd": legacy.SGD,
               "rmsprop": legacy.RMSprop, "adagrad": legacy.Adagrad}
    return classes[name](learning_rate=learning_rate)
