"""The seed-003 architecture family: mnist_cnn with its knobs exposed, for experiment grids.

The zoo (pipelines/training/zoo.py) holds fixed, named architectures; experiments
need the same network with one thing changed at a time (kernel size, filters,
dense width, an extra or a missing layer).  A variant is a small frozen
description; `build_variant` turns it into a Keras model the same way the zoo
does (raw uint8 pixels in, Rescaling first), so an experiment's model can be
saved and scored like any other.  The baseline is exactly the zoo's mnist_cnn
(1,199,882 parameters on 28x28x1).

NAMED holds the seed's architecture table: the baseline and ten
modifications, each changing one aspect of it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from pipelines.training.zoo import MODELS, _inputs


@dataclass(frozen=True)
class Variant:
    filters: Tuple[int, ...] = (32, 64)   # one valid-padded conv layer per entry
    kernel_size: int = 3
    pool: bool = True                      # 2x2 max pooling after the conv layers
    dropout: bool = True                   # 0.25 after the conv block, 0.5 after each hidden dense layer
    dense: Tuple[int, ...] = (128,)        # hidden dense layers

    def describe(self) -> str:
        parts = [f"conv {'-'.join(map(str, self.filters))} {self.kernel_size}x{self.kernel_size}"]
        parts.append("pool" if self.pool else "no pool")
        parts.append(f"dense {'-'.join(map(str, self.dense))}")
        if not self.dropout:
            parts.append("no dropout")
        return ", ".join(parts)


BASELINE = Variant()

# The seed's architecture table: the baseline and ten one-change modifications.
NAMED = {
    "baseline": BASELINE,
    "one_conv": dataclasses.replace(BASELINE, filters=(32,)),
    "three_conv": dataclasses.replace(BASELINE, filters=(32, 64, 128)),
    "filters_half": dataclasses.replace(BASELINE, filters=(16, 32)),
    "filters_double": dataclasses.replace(BASELINE, filters=(64, 128)),
    "kernel_5x5": dataclasses.replace(BASELINE, kernel_size=5),
    "kernel_7x7": dataclasses.replace(BASELINE, kernel_size=7),
    "dense_64": dataclasses.replace(BASELINE, dense=(64,)),
    "dense_512": dataclasses.replace(BASELINE, dense=(512,)),
    "two_dense": dataclasses.replace(BASELINE, dense=(128, 128)),
    "no_dropout": dataclasses.replace(BASELINE, dropout=False),
}


def is_variant(architecture: str) -> bool:
    return architecture in NAMED


def check_architecture(architecture: str, kernel_size=None, filters=None, dense_width=None) -> None:
    """Driver-side check (no TensorFlow): a variant name, or a zoo model without variant overrides."""
    if architecture in NAMED:
        return
    if architecture in MODELS:
        given = [k for k, v in (("kernel_size", kernel_size), ("filters", filters), ("dense_width", dense_width))
                 if v is not None]
        if given:
            raise KeyError(f"architecture '{architecture}' is a fixed zoo model; {', '.join(given)} only apply "
                           f"to the variants ({', '.join(NAMED)})")
        return
    raise KeyError(f"unknown architecture '{architecture}'; variants: {', '.join(NAMED)}; "
                   f"zoo models: {', '.join(sorted(MODELS))}")


def resolve(architecture: str, kernel_size: Optional[int] = None, filters=None,
            dense_width: Optional[int] = None) -> Variant:
    """The named variant with the grid's overrides applied."""
    variant = NAMED[architecture]
    if kernel_size is not None:
        variant = dataclasses.replace(variant, kernel_size=int(kernel_size))
    if filters is not None:
        variant = dataclasses.replace(variant, filters=tuple(int(f) for f in filters))
    if dense_width is not None:
        variant = dataclasses.replace(variant, dense=tuple(int(dense_width) for _ in variant.dense))
    return variant


def build_variant(variant: Variant, input_shape, num_classes: int, name: str = "seed003"):
    from tensorflow import keras
    L = keras.layers
    inputs, x = _inputs(keras, input_shape)
    for filters in variant.filters:
        x = L.Conv2D(filters, (variant.kernel_size, variant.kernel_size), activation="relu")(x)
    if variant.pool:
        x = L.MaxPooling2D((2, 2))(x)
    if variant.dropout:
        x = L.Dropout(0.25)(x)
    x = L.Flatten()(x)
    for width in variant.dense:
        x = L.Dense(width, activation="relu")(x)
        if variant.dropout:
            x = L.Dropout(0.5)(x)
    outputs = L.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def build_architecture(architecture: str, input_shape, num_classes: int, kernel_size=None, filters=None,
                       dense_width=None):
    """A fresh model for an experiment trial: a (modified) variant or a zoo model."""
    if architecture in NAMED:
        return build_variant(resolve(architecture, kernel_size, filters, dense_width), input_shape, num_classes,
                             name=architecture)
    return MODELS[architecture](input_shape, num_classes)
