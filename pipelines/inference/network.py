"""What a trained or pretrained CNN is to the executors that run it: a small frozen spec plus its bytes.

A `NetworkSpec` says how to rebuild the network and how to feed it (input size, channels,
resize rule, pixel scaling, class names, embedding layer); it is pickled into every task and
holds no weights.  The weights travel separately: a Keras file's or a zipped SavedModel's bytes
as a Spark broadcast, or nothing at all for a registry model (its weights ship in a pip package
on every executor, see pipelines/inference/pretrained/registry.py).

`load_network` runs in executors: it builds the traced call once per Python worker through the
worker's one model cache (pipelines.core.tf_runtime.MODELS), keyed by the spec's digest and the
outputs asked for, so scoring, the CNNModel transformer and the predict stage share a loaded model.
"""
from __future__ import annotations

import io
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import numpy as np

from pipelines.core.errors import SparkcnnError
from pipelines.core.tf_runtime import MODELS, configure_threads, load_model_bytes

KERAS, SAVED_MODEL, ZOO = "keras", "saved_model", "zoo"
KINDS = (KERAS, SAVED_MODEL, ZOO)
RESIZE_MODES = ("crop", "stretch", "pad")
# embedding_layer naming the classifier's input (DeepImageFeaturizer's "features"), whatever the layer is called
CLASSIFIER_INPUT = "classifier_input"

# How 0..255 pixels become the network's input.  Models trained by sparkcnn carry their own
# Rescaling layer and registry models their own normalisation: both take raw 0..255 floats.
SCALES = {
    "raw": lambda x: x,                          # 0..255
    "unit": lambda x: x / 255.0,                 # 0..1
    "symmetric": lambda x: x / 127.5 - 1.0,      # -1..1
}


class NetworkError(SparkcnnError, ValueError):
    """A model that cannot be run as asked; the message names the model and the setting."""


@dataclass(frozen=True)
class NetworkSpec:
    kind: str                       # KERAS (bytes of a .keras/.h5 file), SAVED_MODEL (zip of the dir), ZOO
    digest: str                     # sha256 of what the weights are: the file's bytes, or the zoo name+weights
    height: int
    width: int
    channels: int                   # 1 or 3: what the network's input takes
    resize: str = "crop"            # RESIZE_MODES: how an image of another size is fitted
    scale: str = "raw"              # SCALES
    class_names: Tuple[str, ...] = ()
    embedding_layer: str = ""       # a layer name whose (flattened) output is returned beside the classes
    suffix: str = ".keras"          # KERAS: the file suffix Keras dispatches its loader on
    zoo_name: str = ""
    zoo_weights: str = ""
    origin: str = field(default="", compare=False)   # where the model came from, for messages only

    @property
    def size(self) -> Tuple[int, int]:
        return self.height, self.width


def zip_directory(directory: str) -> bytes:
    """A SavedModel directory as zip bytes (the broadcast form); paths relative to it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for root, _, files in os.walk(directory):
            for name in sorted(files):
                full = os.path.join(root, name)
                zf.write(full, os.path.relpath(full, directory))
    return buffer.getvalue()


class _Unpacked:
    """A SavedModel unpacked for this worker's lifetime (the loaded model reads variables lazily)."""

    def __init__(self, payload: bytes):
        self._dir = tempfile.TemporaryDirectory(prefix="sparkcnn-savedmodel-")
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            zf.extractall(self._dir.name)
        self.path = self._dir.name


def _keras_model(spec: NetworkSpec, payload: bytes):
    import tensorflow as tf
    if spec.kind == KERAS:
        return load_model_bytes(payload, spec.suffix), None
    unpacked = _Unpacked(payload)
    try:
        return tf.keras.models.load_model(unpacked.path, compile=False), unpacked
    except Exception:
        loaded = tf.saved_model.load(unpacked.path)
        serve = loaded.signatures["serving_default"]
        name = next(iter(serve.structured_input_signature[1]))
        # keep `loaded` alive with the signature: its variables belong to it
        return (lambda x, training=False, _keep=loaded: next(iter(serve(**{name: x}).values()))), unpacked


def _zoo_model(spec: NetworkSpec):
    from pipelines.inference.pretrained import keras_models
    from pipelines.inference.pretrained.registry import get_spec
    return keras_models.build_model(get_spec(spec.zoo_name), spec.zoo_weights, keras_models.PROBABILITIES)


def _with_embedding(model, layer_name: str, origin: str):
    import tensorflow as tf
    if layer_name == CLASSIFIER_INPUT:
        return tf.keras.Model(model.inputs, [model.outputs[0], model.layers[-1].input])
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        names = ", ".join(layer.name for layer in model.layers[-8:])
        raise NetworkError(f"model {origin}: no layer named '{layer_name}' (embedding_layer); "
                           f"its last layers: {names}") from None
    return tf.keras.Model(model.inputs, [model.outputs[0], layer.output])


def _normaliser(spec: NetworkSpec):
    """How the network's float32 0..255 input is normalised: a registry model's own preprocessing, else `scale`."""
    if spec.kind == ZOO:
        from pipelines.inference.pretrained import keras_models
        from pipelines.inference.pretrained.registry import get_spec
        return keras_models.preprocess(get_spec(spec.zoo_name))
    return SCALES[spec.scale]


def network_input(spec: NetworkSpec, images: np.ndarray, bgr: bool = False) -> np.ndarray:
    """uint8 images (N, H, W, C) of one size -> the float32 array the network itself receives: fitted by the
    one pixel rule (pipelines.images.pixels) and normalised as load_network does.  For baselines and tests
    that call the Keras model directly on the same input."""
    from pipelines.images.pixels import fit_batch
    return np.asarray(_normaliser(spec)(fit_batch(images, spec, bgr).astype(np.float32)), np.float32)


def load_network(spec: NetworkSpec, payload_fn: Callable[[], Optional[bytes]], threads: int):
    """-> run(uint8 (N, H, W, C)) -> (probabilities (N, K) float32, embeddings (N, D) float32 or None).

    Built once per Python worker and kept in the worker's model cache; `payload_fn` is called
    only when the network is not cached (a broadcast's .value costs a deserialisation).
    """
    def build():
        import tensorflow as tf
        configure_threads(threads)
        keep = None
        if spec.kind == ZOO:
            model = _zoo_model(spec)
        else:
            model, keep = _keras_model(spec, payload_fn())
        normalise = _normaliser(spec)
        if spec.embedding_layer:
            if not isinstance(model, tf.keras.Model):
                raise NetworkError(f"model {spec.origin}: embedding_layer needs a Keras model; "
                                   "this SavedModel loads only as a serving signature")
            model = _with_embedding(model, spec.embedding_layer, spec.origin)

        @tf.function(input_signature=[tf.TensorSpec([None, spec.height, spec.width, spec.channels], tf.uint8)],
                     reduce_retracing=True)
        def call(x):
            out = model(normalise(tf.cast(x, tf.float32)), training=False)
            if spec.embedding_layer:
                probs, embedding = out
                return tf.cast(probs, tf.float32), tf.reshape(tf.cast(embedding, tf.float32),
                                                              [tf.shape(embedding)[0], -1])
            return tf.cast(out, tf.float32), tf.zeros([tf.shape(x)[0], 0], tf.float32)

        def run(images: np.ndarray):
            probs, embedding = call(images)
            return probs.numpy(), (embedding.numpy() if spec.embedding_layer else None)
        run.keep = keep          # a SavedModel's unpacked files live as long as the cached call
        return run
    # what the traced call depends on: the weights, the outputs, the scaling and the input shape it was traced for
    key = ("network", spec.digest, spec.embedding_layer, spec.scale, spec.height, spec.width, spec.channels)
    return MODELS.get(key, build)
