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
    outputs = L.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")


@register("simple_conv")
def simple_conv(input_shape, num_classes):
    """Seed: one conv layer straight into a dense layer (2,770,634 params on 28x28x1)."""
    from tensorflow import keras
    L = keras.layers
    inputs, x = _inputs(keras, input_shape)
    x = L.Conv2D(32, (3, 3), activation="relu")(x)
    x = L.Flatten()(x)
    x = L.Dense(128, activation="relu")(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="simple_conv")


def _lenet(input_shape, num_classes, dropout: float, name: str):
    from tensorflow import keras
    L = keras.layers
    inputs, x = _inputs(keras, input_shape)
    x = L.Conv2D(32, (4, 4), padding="same", activation="relu")(x)
    x = L.MaxPooling2D((2, 2))(x)
    x = L.Conv2D(64, (4, 4), padding="same", activation="relu")(x)
    x = L.MaxPooling2D((2, 2))(x)
    x = L.Flatten()(x)
    x = L.Dense(1024, activation="relu")(x)
    if dropout:
        x = L.Dropout(dropout)(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


@register("lenet")
def lenet(input_shape, num_classes):
    """Seed: TensorFlow-tutorial LeNet (3,255,914 params on 28x28x1)."""
    return _lenet(input_shape, num_classes, 0.0, "lenet")


@register("lenet_cifar")
def lenet_cifar(input_shape, num_classes):
    """Seed: the same LeNet with dropout before the classifier, for CIFAR-10 (4,239,978 params on 32x32x3)."""
    return _lenet(input_shape, num_classes, 0.5, "lenet_cifar")


@register("mnist_cnn_exp2")
def mnist_cnn_exp2(input_shape, num_classes):
    """Seed experiment 2: first conv 5x5, the Conv/Conv/MaxPool/Dropout block repeated (reported 99.51%)."""
    from tensorflow import keras
    L = keras.layers
    inputs, x = _inputs(keras, input_shape)
    for filters, kernel in ((32, (5, 5)), (64, (3, 3))):
        x = L.Conv2D(filters, kernel, padding="same", activation="relu")(x)
        x = L.Conv2D(filters, kernel, padding="same", activation="relu")(x)
        x = L.MaxPooling2D((2, 2))(x)
        x = L.Dropout(0.25)(x)
    x = L.Flatten()(x)
    x = L.Dense(256, activation="relu")(x)
    x = L.Dropout(0.5)(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn_exp2")


@register("vgg_bn")
def vgg_bn(input_shape, num_classes):
    """Two VGG-style 3x3 conv pairs with batch normalisation (871,978 params on 28x28x1).

    Not a seed model: the zoo's answer for Fashion-MNIST, where the seed models
    underfit in the epochs two cores afford (mnist_cnn_exp2 with augmentation was
    still at 0.91 training accuracy after 10 epochs).  Batch normalisation lets a
    higher learning rate converge in fewer epochs; each Horovod worker keeps its
    own batch statistics and the model rank 0 returns carries rank 0's.
    """
    from tensorflow import keras
    L = keras.layers
    inputs, x = _inputs(keras, input_shape)
    for filters in (32, 64):
        for _ in range(2):
            x = L.Conv2D(filters, (3, 3), padding="same", use_bias=False)(x)
            x = L.BatchNormalization()(x)
            x = L.Activation("relu")(x)
        x = L.MaxPooling2D((2, 2))(x)
        x = L.Dropout(0.25)(x)
    x = L.Flatten()(x)
    x = L.Dense(256, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.Dropout(0.5)(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="vgg_bn")


@register("torres")
def torres(input_shape, num_classes):
    """Seed (Torres' book): two 5x5 conv/pool stages straight into softmax (62,346 params on 28x28x1)."""
    from tensorflow import keras
    L = keras.layers
    inputs, x = _inputs(keras, input_shape)
    x = L.Conv2D(32, (5, 5), activation="relu")(x)
    x = L.MaxPooling2D((2, 2))(x)
    x = L.Conv2D(64, (5, 5), activation="relu")(x)
    x = L.MaxPooling2D((2, 2))(x)
    x = L.Flatten()(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="torres")


@register("basic")
def basic(input_shape, num_classes):
    """Seed: Conv 64 then Conv 32, no pooling (203,434 params on 28x28x1)."""
    from tensorflow import keras
    L = keras.layers
    inputs, x = _inputs(keras, input_shape)
    x = L.Conv2D(64, (3, 3), activation="relu")(x)
    x = L.Conv2D(32, (3, 3), activation="relu")(x)
    x = L.Flatten()(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="basic")


# The optimizers train.optimizer and experiment.optimizer accept (make_optimizer builds them).
OPTIMIZERS = ("adam", "adadelta", "sgd", "rmsprop", "adagrad")


def make_optimizer(name: str, learning_rate: float):
    """Keras 2 legacy optimizers: the ones Horovod 0.28's DistributedOptimizer is tested with."""
    from tensorflow.keras.optimizers import legacy
    classes = {"adam": legacy.Adam, "adadelta": legacy.Adadelta, "sgd": legacy.SGD,
               "rmsprop": legacy.RMSprop, "adagrad": legacy.Adagrad}
    return classes[name](learning_rate=learning_rate)
