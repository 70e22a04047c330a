"""What a model file is, read on the driver: its kind, input shape and digest, without running it.

A .keras file's input shape comes from its config.json (no TensorFlow on the driver); an .h5 file
or a SavedModel directory is loaded once to ask.  The bytes (a SavedModel zipped) are what a
CNNModel carries and broadcasts; the digest (sha256 of them, or of a registry name and weights
setting) names the model wherever its predictions are stored.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile

from pipelines.core import storage
from pipelines.core.tf_runtime import load_model_bytes
from pipelines.inference.network import KERAS, SAVED_MODEL, ZOO, NetworkError, NetworkSpec, zip_directory


def _keras_input_shape(payload: bytes, origin: str):
    """(height, width, channels) from a .keras file's config.json, without TensorFlow."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            config = json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise NetworkError(f"{origin}: not a Keras .keras file ({exc})") from None
    for layer in config.get("config", {}).get("layers", []):
        if layer.get("class_name") == "InputLayer":
            shape = layer["config"].get("batch_input_shape") or layer["config"].get("batch_shape")
            return tuple(shape[1:])
    return None


def _loaded_input_shape(path: str, origin: str):
    import tensorflow as tf
    try:
        model = tf.keras.models.load_model(path, compile=False)
        return tuple(model.input_shape[1:])
    except Exception:
        loaded = tf.saved_model.load(path)
        spec = next(iter(loaded.signatures["serving_default"].structured_input_signature[1].values()))
        return tuple(spec.shape[1:])


def _shape_settings(shape, origin: str, height: int, width: int, channels: int):
    shape = tuple(shape or ())
    if len(shape) != 3:
        raise NetworkError(f"{origin}: input shape {shape} is not (height, width, channels)")
    h, w, c = (height or shape[0], width or shape[1], channels or shape[2])
    if not h or not w:
        raise NetworkError(f"{origin}: the model takes any image size; set the image size to score at "
                           "(predict.image_size / imageHeight+imageWidth)")
    if c not in (1, 3):
        raise NetworkError(f"{origin}: the model takes {c} channels; supported: 1 (gray) or 3 (RGB)")
    return int(h), int(w), int(c)


def network_from_file(location: str, height: int = 0, width: int = 0, channels: int = 0):
    """(NetworkSpec, payload bytes) for a .keras/.h5 file or a SavedModel directory, on any storage."""
    origin = storage.redact(location)
    if storage.isdir(location):
        with tempfile.TemporaryDirectory() as scratch:
            local = location
            if storage.is_remote(location):
                storage.download_dir(location, scratch)
                local = scratch
            if not os.path.exists(os.path.join(local, "saved_model.pb")):
                raise NetworkError(f"{origin}: a directory without saved_model.pb is not a SavedModel")
            payload = zip_directory(local)
            shape = _loaded_input_shape(local, origin)
        kind, suffix = SAVED_MODEL, ""
    else:
        suffix = os.path.splitext(storage.basename(location))[1].lower()
        if suffix not in (".keras", ".h5", ".hdf5"):
            raise NetworkError(f"{origin}: expected a .keras or .h5 file, or a SavedModel directory")
        payload = storage.read_bytes(location)
        kind = KERAS
        if suffix == ".keras":
            shape = _keras_input_shape(payload, origin)
        else:
            shape = tuple(load_model_bytes(payload, suffix).input_shape[1:])
    h, w, c = _shape_settings(shape, origin, height, width, channels)
    spec = NetworkSpec(kind=kind, digest=hashlib.sha256(payload).hexdigest(), height=h, width=w, channels=c,
                       suffix=suffix, origin=origin)
    return spec, payload


def network_from_zoo(name: str, weights: str):
    """NetworkSpec of a registry model (pipelines/inference/pretrained/registry.py); its weights are named, not carried."""
    from pipelines.inference.pretrained.registry import check_weights, get_spec, imagenet_class_names
    registry_spec = get_spec(name)
    check_weights(registry_spec, weights)
    identity = f"zoo:{name}:{weights}"
    if os.path.isfile(os.path.expanduser(weights)):
        with open(os.path.expanduser(weights), "rb") as f:
            identity += ":" + hashlib.sha256(f.read()).hexdigest()
    size = registry_spec.input_size
    return NetworkSpec(kind=ZOO, digest=hashlib.sha256(identity.encode()).hexdigest(), height=size, width=size,
                       channels=3, resize="crop", class_names=tuple(imagenet_class_names() or ()),
                       zoo_name=name, zoo_weights=weights, origin=f"{name} ({weights})")
