"""What a model setting names: one vocabulary for train.model, predict.model, experiment.architecture and
the featurizers' modelName, read the same way everywhere (driver side, no TensorFlow).

  architecture   a zoo function (pipelines/training/zoo.py) or an experiment variant
                 (pipelines/training/variants.py): a network to train from scratch
  pretrained     a registry network with named weights (pipelines/inference/pretrained/registry.py)
  file           a Keras .keras or .h5 file
  saved_model    a TensorFlow SavedModel directory (saved_model.pb inside)
  run            a sparkcnn run directory: its model.keras, with the run's class names and resize rule
  function       module:function, called as function(input_shape, num_classes) -> keras.Model
  pipeline       a saved Spark ML PipelineModel directory (metadata/ and stages/)
A path that exists is what it holds, on any storage; a name is looked up among the architectures and the
pretrained networks (the two sets share no name).  Each setting takes some of the kinds; naming another
is one error that says what the name is and what the setting takes.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from typing import Iterable

from pipelines.core import storage
from pipelines.core.config import ConfigError
from pipelines.core.store import RUN_MODEL

ARCHITECTURE, PRETRAINED, FILE, SAVED_MODEL, RUN, FUNCTION, PIPELINE = (
    "architecture", "pretrained", "file", "saved_model", "run", "function", "pipeline")
KINDS = {
    ARCHITECTURE: "an architecture to train from scratch",
    PRETRAINED: "a pretrained registry network",
    FILE: "a Keras model file (.keras/.h5)",
    SAVED_MODEL: "a SavedModel directory",
    RUN: "a sparkcnn run directory",
    FUNCTION: "a module:function building a keras.Model",
    PIPELINE: "a saved Spark ML PipelineModel",
}
# what each setting takes
TRAINABLE = (ARCHITECTURE, FILE, RUN, FUNCTION)                 # train.model
SCORABLE = (PRETRAINED, FILE, SAVED_MODEL, RUN, PIPELINE)        # predict.model
MODEL_SUFFIXES = (".keras", ".h5")
_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class ModelRef:
    kind: str
    name: str            # as the setting gave it
    location: str = ""   # files and directories: where the model is (a run's: its model.keras)

    @property
    def described(self) -> str:
        return f"{self.name} ({KINDS[self.kind]})"


def architecture_names() -> list:
    from pipelines.training.variants import NAMED
    from pipelines.training.zoo import MODELS
    return sorted(set(MODELS) | set(NAMED))


def pretrained_names() -> list:
    from pipelines.inference.pretrained.registry import MODELS
    return list(MODELS)


def _path_kind(name: str):
    """The kind of an existing path, or None when nothing is there."""
    if not storage.exists(name):
        return None
    if storage.isfile(name):
        return FILE if name.lower().endswith(MODEL_SUFFIXES) else "unknown file"
    if storage.exists(storage.join(name, RUN_MODEL)):
        return RUN
    if storage.exists(storage.join(name, "metadata")) and storage.exists(storage.join(name, "stages")):
        return PIPELINE
    if storage.exists(storage.join(name, "saved_model.pb")):
        return SAVED_MODEL
    return "unknown directory"


def _vocabulary(accepts: Iterable[str]) -> str:
    parts = []
    for kind in accepts:
        if kind == ARCHITECTURE:
            parts.append("an architecture (" + ", ".join(architecture_names()) + ")")
        elif kind == PRETRAINED:
            parts.append("a pretrained registry network (" + ", ".join(pretrained_names()) + ")")
        else:
            parts.append(KINDS[kind])
    return "; ".join(parts)


def classify(name: str, accepts: Iterable[str], setting: str) -> ModelRef:
    """What `name` is, checked against the kinds `setting` takes; ConfigError names the setting otherwise."""
    accepts = tuple(accepts)
    short = setting.rpartition(": ")[2]          # the setting's name without the conf file it is read from
    if not name:
        raise ConfigError(f"{setting} is empty: name {_vocabulary(accepts)}")
    shown = storage.redact(name)
    kind = None
    if _FUNCTION.match(name):
        kind = FUNCTION
        module = name.partition(":")[0]
        try:
            importable = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            importable = False
        if not importable:
            raise ConfigError(f"{setting}: {shown}: module '{module}' is not importable")
    else:
        found = _path_kind(name)
        if found is not None and found not in KINDS:
            raise ConfigError(f"{setting}: {shown} is a {found.split()[1]} that holds no model; "
                              f"{short} takes {_vocabulary(accepts)}")
        if found is not None:
            kind = found
        elif name in pretrained_names():
            kind = PRETRAINED
        elif name in architecture_names():
            kind = ARCHITECTURE
        elif "/" in name or name.lower().endswith(MODEL_SUFFIXES):
            raise ConfigError(f"{setting}: {shown} does not exist")
        else:
            raise ConfigError(f"{setting}: unknown model '{shown}'; {short} takes {_vocabulary(accepts)}")
    if kind not in accepts:
        raise ConfigError(f"{setting}: {shown} is {KINDS[kind]}; {short} takes {_vocabulary(accepts)}")
    location = storage.join(name, RUN_MODEL) if kind == RUN else (name if kind in (FILE, SAVED_MODEL, PIPELINE)
                                                                  else "")
    return ModelRef(kind, name, location)
