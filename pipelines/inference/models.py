"""What `predict.model` names, resolved on the driver into something that scores a DataFrame.

The names are the one model vocabulary (pipelines/inference/model_refs.py); predict takes these:

  runs/<name>          a sparkcnn run: its model.keras, with the class names and resize rule of the
                       dataset it was trained on (read from the run's config.yaml)
  *.keras, *.h5        a Keras model file (.keras in safe mode: loading runs no code)
  a SavedModel dir     (saved_model.pb inside)
  a PipelineModel dir  a saved Spark ML pipeline (metadata/ and stages/), e.g. `sparkcnn transfer`'s
                       featurizer + LogisticRegression; it is given sparkcnn record columns
                       (image, height, width, channels) at each file's own size
  a registry name      EfficientNetLite0/2 (weights offline), ResNet50, MobileNetV2, ...
                       (pipelines/inference/pretrained/registry.py) with `predict.weights`
Any of the paths may be on any storage.  The digest names the model's partition of the output: a
different model (other bytes, other weights) scores everything again into its own.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import yaml

from pipelines.core import records, storage
from pipelines.core.config import ConfigError
from pipelines.inference.cnn_model import CNNModel
from pipelines.inference.model_refs import PIPELINE, PRETRAINED, RUN, SCORABLE, classify
from pipelines.inference.network import CLASSIFIER_INPUT, NetworkError


@dataclass
class ResolvedModel:
    digest: str
    description: str
    class_names: tuple
    cnn: Optional[CNNModel] = None          # a network run by CNNModel
    pipeline_dir: Optional[str] = None      # or a saved PipelineModel


def _run_facts(run_dir: str) -> tuple:
    """(class names, ingest resize) of the dataset a run was trained on; ((), None) when unknown."""
    config_path = storage.join(run_dir, "config.yaml")
    if not storage.exists(config_path):
        return (), None
    conf = yaml.safe_load(storage.read_bytes(config_path)) or {}
    data = conf.get("data") or {}
    resize = (conf.get("ingest") or {}).get("resize")
    try:
        dataset = storage.join(storage.normalize(data["datasets_dir"]), data["dataset"], "train")
        return tuple(records.read_meta(dataset).class_names), resize
    except (KeyError, OSError, ValueError):
        return (), resize


def _directory_digest(location: str) -> str:
    digest = hashlib.sha256()
    for rel in storage.walk_files(location):
        digest.update(rel.encode() + b"\0" + storage.read_bytes(storage.join(location, rel)))
    return digest.hexdigest()


def _fit_rule(setting: str, default: str) -> str:
    return default if setting == "auto" else setting


def resolve(section, where: str) -> ResolvedModel:
    """The model `section.model` names (see the module docstring); ConfigError names the setting."""
    ref = classify(section.model, SCORABLE, f"{where}.model")
    name = ref.name
    size = tuple(section.image_size) if section.image_size else None
    params = dict(topK=section.top_k, scale=section.scale, batchSize=section.batch_size,
                  maxPixels=section.max_pixels, embeddingLayer=section.embedding_layer)
    try:
        if ref.kind == PRETRAINED:
            if section.embedding_layer == "features":
                params["embeddingLayer"] = CLASSIFIER_INPUT
            cnn = CNNModel.from_zoo(name, section.weights, resizeMode=_fit_rule(section.resize, "crop"), **params)
            return ResolvedModel(cnn.digest, f"{name} ({section.weights})", tuple(cnn.network.class_names), cnn=cnn)
        if ref.kind == RUN:
            class_names, resize = _run_facts(name)
            rule = _fit_rule(section.resize, resize if resize in ("crop", "stretch", "pad") else "stretch")
            cnn = CNNModel.from_file(ref.location, image_size=size, resizeMode=rule,
                                     classNames=list(class_names), **params)
            return ResolvedModel(cnn.digest, f"run {storage.redact(name)}", class_names, cnn=cnn)
        if ref.kind == PIPELINE:
            return ResolvedModel(_directory_digest(name), f"PipelineModel {storage.redact(name)}", (),
                                 pipeline_dir=name)
        cnn = CNNModel.from_file(name, image_size=size, resizeMode=_fit_rule(section.resize, "crop"), **params)
        return ResolvedModel(cnn.digest, storage.redact(name), (), cnn=cnn)
    except NetworkError as exc:
        raise ConfigError(f"{where}.model: {exc}") from None
