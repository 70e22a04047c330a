"""CNNModel: a trained or pretrained CNN as a Spark ML Transformer (Params, keyword_only, save/load).

    model = CNNModel.from_file("runs/mnist/model.keras", inputCol="image")     # or a SavedModel dir
    model = CNNModel.from_zoo("EfficientNetLite0", weights="imagenet", inputCol="content")
    PipelineModel(stages=[model]).write().overwrite().save("/models/pets")   # and PipelineModel.load

Input column, in one of three forms (`inputFormat`, "auto" picks by type):
  - "encoded": binary bytes of an image file (spark.read.format("binaryFile")'s `content`);
  - "struct":  Spark's image struct (spark.read.format("image")), BGR(A) or gray;
  - "record":  a sparkcnn dataset's raw `image` bytes with its height/width/channels columns.
Added columns: `predictionCol` (int class index), `topKCol` (array of (classIndex, className,
probability), best first), optionally `probabilityCol` (array<float>, every class),
`embeddingCol` (array<float>, the output of `embeddingLayer`), `imageHeightCol`/`imageWidthCol`
(the image's size as stored) and `errorCol`: null, or why the row could not be scored (its
prediction columns are then null).  Nothing image-sized reaches the driver.

Saved form: the stage's Params as Spark's JSON metadata, plus the network (what it is, its input
size, its digest) and, for a file model, the model's bytes under `data/`: a saved CNNModel is
self-contained and loads where the original file no longer exists.  A registry model saves its
name and weights setting only (its weights ship in a pip package, as for DeepImageFeaturizer).
Executors run it through pipelines.inference.cnn_model_remote with the model loaded once per
Python worker; size Arrow batches with spark.sql.execution.arrow.maxRecordsPerBatch (each batch
of encoded photos is held in memory at once).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Optional

from pyspark import keyword_only
from pyspark.ml import Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from pipelines.core import storage
from pipelines.core.tf_runtime import threads_per_task
from pipelines.images.image_struct import is_image_struct
from pipelines.inference import cnn_model_remote as remote
from pipelines.inference.model_files import network_from_file, network_from_zoo
from pipelines.inference.network import KERAS, RESIZE_MODES, SAVED_MODEL, SCALES, NetworkError, NetworkSpec

RECORD_SHAPE_COLUMNS = ("height", "width", "channels")
INPUT_FORMATS = ("auto", remote.ENCODED, remote.STRUCT, remote.RECORD)
DEFAULT_MAX_PIXELS = 89_478_485          # PIL's own decompression-bomb limit
TOP_K_TYPE = T.ArrayType(T.StructType([
    T.StructField("classIndex", T.IntegerType()),
    T.StructField("className", T.StringType()),
    T.StructField("probability", T.FloatType()),
]))
FLOATS = T.ArrayType(T.FloatType())


def choice_converter(name: str, allowed):
    def convert(value):
        value = TypeConverters.toString(value)
        if value not in allowed:
            raise NetworkError(f"{name} must be one of {', '.join(allowed)}; got '{value}'")
        return value
    return convert


def input_form(dataset: DataFrame, name: str, form: str = "auto") -> str:
    """How column `name` holds images (encoded, struct or record); "auto" picks by its type."""
    if name not in dataset.columns:
        raise NetworkError(f"inputCol '{name}' is not a column; columns: {', '.join(dataset.columns)}")
    dtype = dataset.schema[name].dataType
    if form == "auto":
        if is_image_struct(dtype):
            form = remote.STRUCT
        elif isinstance(dtype, T.BinaryType):
            form = remote.RECORD if set(RECORD_SHAPE_COLUMNS) <= set(dataset.columns) else remote.ENCODED
        else:
            raise NetworkError(f"inputCol '{name}' is {dtype.simpleString()}; expected binary (image file bytes "
                               "or sparkcnn raw pixels) or Spark's image struct")
    if form == remote.RECORD:
        missing = [c for c in RECORD_SHAPE_COLUMNS if c not in dataset.columns]
        if missing:
            raise NetworkError(f"inputFormat record needs the columns {', '.join(missing)} beside '{name}'")
    return form


# ---- the Transformer ------------------------------------------------------------------------

class _CNNModelParams(HasInputCol):
    inputFormat = Param(Params._dummy(), "inputFormat",
                        "how inputCol holds images: auto, encoded (image file bytes), struct (Spark's image "
                        "struct), record (sparkcnn raw pixels with height/width/channels columns)",
                        typeConverter=choice_converter("inputFormat", INPUT_FORMATS))
    predictionCol = Param(Params._dummy(), "predictionCol", "output: the most likely class index",
                          typeConverter=TypeConverters.toString)
    topKCol = Param(Params._dummy(), "topKCol", "output: the topK (classIndex, className, probability), best "
                    "first ('' = not added)", typeConverter=TypeConverters.toString)
    topK = Param(Params._dummy(), "topK", "how many classes topKCol keeps", typeConverter=TypeConverters.toInt)
    probabilityCol = Param(Params._dummy(), "probabilityCol", "output: every class's probability "
                           "('' = not added)", typeConverter=TypeConverters.toString)
    embeddingLayer = Param(Params._dummy(), "embeddingLayer", "name of a layer whose output is added as "
                           "embeddingCol ('' = none)", typeConverter=TypeConverters.toString)
    embeddingCol = Param(Params._dummy(), "embeddingCol", "output: the embeddingLayer's activations, flattened",
                         typeConverter=TypeConverters.toString)
    errorCol = Param(Params._dummy(), "errorCol", "output: null, or why the row could not be scored",
                     typeConverter=TypeConverters.toString)
    imageHeightCol = Param(Params._dummy(), "imageHeightCol", "output: the image's height as stored ('' = not added)",
                           typeConverter=TypeConverters.toString)
    imageWidthCol = Param(Params._dummy(), "imageWidthCol", "output: the image's width as stored ('' = not added)",
                          typeConverter=TypeConverters.toString)
    resizeMode = Param(Params._dummy(), "resizeMode", "how an image of another size is fitted to the network: "
                       "crop (cover, centre crop), stretch, pad (black borders)",
                       typeConverter=choice_converter("resizeMode", RESIZE_MODES))
    scale = Param(Params._dummy(), "scale", "pixel scaling before the network: raw (0..255: sparkcnn models and "
                  "registry models normalise inside), unit (0..1), symmetric (-1..1)",
                  typeConverter=choice_converter("scale", tuple(SCALES)))
    classNames = Param(Params._dummy(), "classNames", "class names by index (empty: names are null)",
                       typeConverter=TypeConverters.toListString)
    batchSize = Param(Params._dummy(), "batchSize", "images per model call inside an executor",
                      typeConverter=TypeConverters.toInt)
    maxPixels = Param(Params._dummy(), "maxPixels", "images with more pixels are errors (decompression bombs)",
                      typeConverter=TypeConverters.toInt)


_DEFAULTS = dict(inputCol="image", inputFormat="auto", predictionCol="prediction", topKCol="top_k", topK=5,
                 probabilityCol="", embeddingLayer="", embeddingCol="embedding", errorCol="error",
                 imageHeightCol="", imageWidthCol="", resizeMode="crop", scale="raw", classNames=[],
                 batchSize=32, maxPixels=DEFAULT_MAX_PIXELS)


class CNNModel(Model, _CNNModelParams, MLReadable, MLWritable):
    """A CNN classifier applied to an image column; see the module docstring."""

    @keyword_only
    def __init__(self, *, inputCol="image", inputFormat="auto", predictionCol="prediction", topKCol="top_k",
                 topK=5, probabilityCol="", embeddingLayer="", embeddingCol="embedding", errorCol="error",
                 imageHeightCol="", imageWidthCol="", resizeMode="crop", scale="raw", classNames=None,
                 batchSize=32, maxPixels=DEFAULT_MAX_PIXELS):
        super().__init__()
        self._setDefault(**_DEFAULTS)
        self._set(**self._given())
        self._network: Optional[NetworkSpec] = None
        self._payload: Optional[bytes] = None

    @keyword_only
    def setParams(self, *, inputCol="image", inputFormat="auto", predictionCol="prediction", topKCol="top_k",
                  topK=5, probabilityCol="", embeddingLayer="", embeddingCol="embedding", errorCol="error",
                  imageHeightCol="", imageWidthCol="", resizeMode="crop", scale="raw", classNames=None,
                  batchSize=32, maxPixels=DEFAULT_MAX_PIXELS):
        return self._set(**self._given())

    def _given(self) -> dict:
        """The keyword arguments passed to __init__/setParams (classNames=None: not given)."""
        return {k: v for k, v in self._input_kwargs.items() if not (k == "classNames" and v is None)}

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_file(cls, location: str, image_size=None, channels: int = 0, **params) -> "CNNModel":
        """A .keras/.h5 file or SavedModel directory (any storage); its bytes are held by the stage."""
        h, w = image_size or (0, 0)
        network, payload = network_from_file(location, h, w, channels)
        return cls(**params)._with_network(network, payload)

    @classmethod
    def from_zoo(cls, name: str, weights: str = "imagenet", **params) -> "CNNModel":
        """A registry model (pipelines/inference/pretrained/registry.py) with its ImageNet class names and preprocessing."""
        network = network_from_zoo(name, weights)
        params.setdefault("classNames", list(network.class_names))
        params.setdefault("resizeMode", network.resize)
        return cls(**params)._with_network(network, None)

    def _with_network(self, network: NetworkSpec, payload: Optional[bytes]) -> "CNNModel":
        self._network, self._payload = network, payload
        return self

    def copy(self, extra=None):
        that = super().copy(extra)
        return that._with_network(self._network, self._payload)

    # -- what it is -------------------------------------------------------------------------
    @property
    def network(self) -> NetworkSpec:
        """The network as executors run it: the stored spec with this stage's Params applied."""
        if self._network is None:
            raise NetworkError("CNNModel has no network: build it with CNNModel.from_file / from_zoo or load it")
        g = self.getOrDefault
        return dataclasses.replace(self._network, resize=g(self.resizeMode), scale=g(self.scale),
                                   class_names=tuple(g(self.classNames)), embedding_layer=g(self.embeddingLayer))

    @property
    def payload(self) -> Optional[bytes]:
        """The model file's bytes (None for a registry model: its weights are named, not carried)."""
        return self._payload

    @property
    def digest(self) -> str:
        """sha256 of the weights (file bytes, or the registry name and weights): what a prediction came from."""
        return self.network.digest

    def columns_for(self, dataset: DataFrame) -> remote.Columns:
        name = self.getOrDefault(self.inputCol)
        return self.columns(name, input_form(dataset, name, self.getOrDefault(self.inputFormat)))

    def columns(self, name: str, form: str) -> remote.Columns:
        """The executor's view of this stage's column Params, for input column `name` in `form`."""
        g = self.getOrDefault
        embedding = g(self.embeddingCol) if g(self.embeddingLayer) else ""
        return remote.Columns(input=name, form=form, height="height", width="width", channels="channels",
                              prediction=g(self.predictionCol), top_k=g(self.topKCol),
                              probabilities=g(self.probabilityCol), embedding=embedding, error=g(self.errorCol),
                              image_height=g(self.imageHeightCol), image_width=g(self.imageWidthCol))

    def output_schema(self, dataset: DataFrame, cols: remote.Columns) -> T.StructType:
        """The input's fields (those in cols.keep, or all) followed by the added ones."""
        types = {cols.prediction: T.IntegerType(), cols.top_k: TOP_K_TYPE, cols.probabilities: FLOATS,
                 cols.embedding: FLOATS, cols.error: T.StringType(), cols.image_height: T.IntegerType(),
                 cols.image_width: T.IntegerType()}
        added = cols.added()
        kept = [f for f in dataset.schema.fields if f.name not in added and (cols.keep is None or f.name in cols.keep)]
        return T.StructType(kept + [T.StructField(name, types[name], True) for name in added])

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return self.transform_keeping(dataset, None)

    def transform_keeping(self, dataset: DataFrame, keep) -> DataFrame:
        """transform(), passing through only the input columns in `keep` (None: all): a scorer that wants
        (id, label) beside the predictions spares the images' trip back from Python."""
        network = self.network
        cols = dataclasses.replace(self.columns_for(dataset), keep=None if keep is None else tuple(keep))
        g = self.getOrDefault
        if g(self.batchSize) < 1 or g(self.topK) < 1:
            raise NetworkError(f"batchSize and topK must be at least 1; got {g(self.batchSize)}, {g(self.topK)}")
        sc = dataset.sparkSession.sparkContext
        payload_bc = sc.broadcast(self._payload) if self._payload is not None else None
        body = functools.partial(remote.transform_batches, network, payload_bc, cols, g(self.batchSize),
                                 g(self.topK), g(self.maxPixels), threads_per_task(dataset.sparkSession))
        return dataset.mapInArrow(body, self.output_schema(dataset, cols))

    # -- persistence ------------------------------------------------------------------------
    def write(self) -> MLWriter:
        return _CNNModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _CNNModelReader(cls)


def add_accessors(cls, names):
    """pyspark-style getX/setX for every Param (one declaration: the Param; the accessors follow)."""
    for name in names:
        suffix = name[0].upper() + name[1:]
        if not hasattr(cls, "set" + suffix):
            setattr(cls, "set" + suffix, lambda self, value, _n=name: self._set(**{_n: value}))
        if not hasattr(cls, "get" + suffix):
            setattr(cls, "get" + suffix, lambda self, _n=name: self.getOrDefault(_n))


add_accessors(CNNModel, _DEFAULTS)

_PAYLOAD_NAMES = {KERAS: "model{suffix}", SAVED_MODEL: "saved_model.zip"}


class _CNNModelWriter(MLWriter):
    def __init__(self, instance: CNNModel):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        network = self.instance._network
        if network is None:
            raise NetworkError("CNNModel has no network to save")
        fields = {k: v for k, v in dataclasses.asdict(network).items() if k not in ("class_names", "origin")}
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc, extraMetadata={"network": fields})
        if network.kind in _PAYLOAD_NAMES:
            name = _PAYLOAD_NAMES[network.kind].format(suffix=network.suffix)
            storage.makedirs(storage.join(path, "data"))
            storage.put_bytes(storage.join(path, "data", name), self.instance._payload)


class _CNNModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> CNNModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        instance = self.cls()
        DefaultParamsReader.getAndSetParams(instance, metadata)
        fields = dict(metadata["network"])
        network = NetworkSpec(**fields, origin=storage.redact(path))
        payload = None
        if network.kind in _PAYLOAD_NAMES:
            payload = storage.read_bytes(storage.join(path, "data", _PAYLOAD_NAMES[network.kind].format(
                suffix=network.suffix)))
            if hashlib.sha256(payload).hexdigest() != network.digest:
                raise NetworkError(f"{storage.redact(path)}: the saved model's bytes do not match its digest "
                                   "(a partial or altered copy)")
        return instance._with_network(network, payload)
