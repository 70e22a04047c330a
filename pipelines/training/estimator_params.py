"""CNNEstimator's Params, generated from declarations: the train section's and the estimator's own.

One declaration of the training settings (pipelines/training/section.py) serves the conf file's
`train:` section, `sparkcnn train --help`, the executor spec, the resume fingerprint and, here,
the pyspark.ml Params: `batch_size` becomes the Param `batchSize` with the same default, doc,
type, bounds and choices, so a setting added to the section is a Param without a line here.
The estimator's own settings (columns, store, image size: what a conf file gets from the
dataset instead) are declared the same way in EstimatorSection.

Every Param's typeConverter runs the config engine's own check, so a bad value fails when it is
set, with the Param's name: `CNNEstimator.batchSize: 0 is below the minimum 1`.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass
from typing import Dict, Optional

from pyspark.ml.param import Param, Params

from pipelines.augmentation.params import AugmentError
from pipelines.augmentation.pipeline import Pipeline
from pipelines.core.config import ConfigError, check_value, setting, suggest
from pipelines.inference.cnn_model import add_accessors
from pipelines.inference.network import RESIZE_MODES
from pipelines.training.section import TrainSection

WHERE = "CNNEstimator"
INPUT_FORMATS = ("auto", "encoded", "struct", "record")

# Train settings that are not Params, and why (a new train setting becomes a Param unless listed).
NOT_PARAMS = {
    "split": "the CLI's choice of a dataset split; the estimator trains on the DataFrame it is given",
    "augment": "the CLI's switch for the augment section's pipeline; the `augmentation` Param is the pipeline",
}


@dataclass(frozen=True)
class EstimatorSection:
    """What a conf file's dataset tells `sparkcnn train` and a DataFrame does not: declared like a section."""
    input_col: str = setting("image", doc="the image column: Spark's image struct, image file bytes "
                                          "(binaryFile `content`) or sparkcnn record pixels")
    input_format: str = setting("auto", choices=INPUT_FORMATS,
                                doc="how inputCol holds images; auto picks by type (see CNNModel.inputFormat)")
    label_col: str = setting("label", doc="integer class indices, or strings (indexed in sorted order; the "
                                          "mapping is kept in the model as its class names)")
    store: str = setting("", doc="a folder or URL (s3://, gs://, abfs://, hdfs://) executors can reach: the "
                                 "materialised DataFrames (store/materialised/<key>) and runs (store/runs/<key>)")
    run_dir: str = setting("", doc="where this fit's checkpoints, model and history go (default: "
                                   "store/runs/<data key>-<settings key>; the same fit again resumes there)")
    image_size: Optional[list] = setting(None, raw=True, doc="[height, width] every image is fitted to; "
                                                              "null: the images' own size (they must all match)")
    channels: int = setting(0, min=0, max=3, doc="1 (gray) or 3 (RGB); 0: the first image's")
    resize_mode: str = setting("crop", choices=RESIZE_MODES, doc="how an image of another size is fitted")
    augmentation: Optional[list] = setting(None, raw=True, doc="an augment pipeline "
                                           "([{op: rotate, p: 0.9, degrees: [-10, 10]}, ...]) applied to every "
                                           "training batch on the fly; null: none")
    augmentation_seed: int = setting(0, doc="seed of the augmentation draws")
    row_group_mb: float = setting(4.0, min=0.25, doc="row groups of the materialised data (Petastorm's unit)")
    max_pixels: int = setting(89_478_485, min=1, doc="larger images are rejected (decompression bombs)")
    prediction_col: str = setting("prediction", doc="the fitted CNNModel's prediction column")
    probability_col: str = setting("probability", doc="the fitted CNNModel's every-class probabilities "
                                                      "column ('' = not added)")

    def check(self, where: str) -> None:
        size = self.image_size
        if size is not None and not (isinstance(size, list) and len(size) == 2
                                     and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise ConfigError(f"{where}.image_size: expected [height, width] in pixels, got {size!r}")
        if self.channels == 2:
            raise ConfigError(f"{where}.channels: 2 is not an image layout; use 1 (gray), 3 (RGB) or 0 (the data's)")
        try:
            Pipeline.parse(self.augmentation, self.augmentation_seed, where=f"{where}.augmentation")
        except AugmentError as exc:
            raise ConfigError(str(exc)) from None


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@dataclass(frozen=True)
class Declared:
    """One Param's origin: the section class and the field it is generated from."""
    section: type
    field: dataclasses.Field

    @property
    def default(self):
        return self.field.default

    @property
    def doc(self) -> str:
        return self.field.metadata.get("doc", "")


def _declared() -> Dict[str, Declared]:
    out = {}
    for section in (TrainSection, EstimatorSection):
        for f in dataclasses.fields(section):
            if section is TrainSection and f.name in NOT_PARAMS:
                continue
            out[camel(f.name)] = Declared(section, f)
    return out


DECLARED = _declared()


def _converter(name: str, d: Declared):
    hint = typing.get_type_hints(d.section)[d.field.name]

    def convert(value):
        value = check_value(f"{WHERE}.{name}", value, hint, d.field.metadata)
        if hasattr(d.section, "check"):      # the section's own checks, on this value among defaults
            try:
                d.section(**{d.field.name: value}).check(WHERE)
            except ConfigError as exc:
                raise ConfigError(_camel_message(str(exc), d.section)) from None
        return value
    return convert


def add_params(cls) -> None:
    """Declare every generated Param on `cls` (a Params class), with getX/setX accessors."""
    for name, d in DECLARED.items():
        setattr(cls, name, Param(Params._dummy(), name, d.doc, typeConverter=_converter(name, d)))
    add_accessors(cls, DECLARED)


def defaults() -> dict:
    return {name: d.default for name, d in DECLARED.items() if d.default is not None}


def check_names(kwargs: dict) -> None:
    for key in kwargs:
        if key not in DECLARED:
            raise ConfigError(f"{WHERE}: unknown Param '{key}'" + suggest(key, DECLARED))


def signature() -> inspect.Signature:
    """The keyword-only signature the constructor and setParams show to help() and notebooks."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d.default)
               for name, d in DECLARED.items()]
    return inspect.Signature(params)


def sections_of(instance) -> tuple:
    """(TrainSection, EstimatorSection) from an estimator's Param values, checked across keys."""
    values = {TrainSection: {}, EstimatorSection: {}}
    for name, d in DECLARED.items():
        values[d.section][d.field.name] = instance.getOrDefault(name) if instance.isDefined(name) else None
    own = EstimatorSection(**values[EstimatorSection])
    train = TrainSection(**values[TrainSection], augment=own.augmentation is not None)
    for section in (train, own):
        try:
            section.check(WHERE)
        except ConfigError as exc:
            raise ConfigError(_camel_message(str(exc), section)) from None
    return train, own


def _camel_message(message: str, section) -> str:
    """A section check's message with the Params' names (`CNNEstimator.image_size` -> `.imageSize`)."""
    for f in dataclasses.fields(section):
        message = message.replace(f"{WHERE}.{f.name}", f"{WHERE}.{camel(f.name)}")
    return message


def from_section(train: TrainSection) -> dict:
    """Param values (camel-case names) for a train section's settings: the CLI's way in."""
    return {camel(f.name): getattr(train, f.name) for f in dataclasses.fields(train) if f.name not in NOT_PARAMS}
