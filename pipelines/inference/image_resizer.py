"""ImageResizer: any image column -> Spark's image struct at one size, as a pyspark.ml Transformer.

    resizer = ImageResizer(inputCol="content", outputCol="image", height=64, width=64, channels=3)
    Pipeline(stages=[resizer, CNNEstimator(inputCol="image", ...)]).fit(photos)

For pipelines that fix the image size before a stage that needs one (CNNEstimator over photos of
many sizes, a featurizer), saved and loaded with the pipeline (DefaultParamsWritable).  Input:
image file bytes (binaryFile's `content`), Spark's image struct, or sparkcnn record pixels (with
height/width/channels columns), as for CNNModel; output: Spark's image struct (BGR colour), the
same pixels CNNModel would feed a network of that size.  Undecodable rows get Spark's invalid-image
marker (sizes -1, no data) so the next stage can reject them by row.
"""
from __future__ import annotations

import functools

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from pipelines.images import image_struct
from pipelines.inference import image_resizer_remote as remote
from pipelines.inference.cnn_model import DEFAULT_MAX_PIXELS, INPUT_FORMATS, choice_converter, input_form
from pipelines.inference.cnn_model_remote import Columns
from pipelines.inference.network import RESIZE_MODES, NetworkError, NetworkSpec

def _positive(name: str):
    def convert(value):
        value = TypeConverters.toInt(value)
        if value < 1:
            raise NetworkError(f"ImageResizer.{name} must be at least 1; got {value}")
        return value
    return convert


def _channels(value):
    value = TypeConverters.toInt(value)
    if value not in (1, 3):
        raise NetworkError(f"ImageResizer.channels must be 1 (gray) or 3 (colour); got {value}")
    return value


_DEFAULTS = dict(inputCol="image", outputCol="resized", inputFormat="auto", height=224, width=224, channels=3,
                 resizeMode="crop", maxPixels=DEFAULT_MAX_PIXELS)


class ImageResizer(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """Fit every image of inputCol to height x width x channels; see the module docstring."""

    inputFormat = Param(Params._dummy(), "inputFormat", "how inputCol holds images (see CNNModel.inputFormat)",
                        typeConverter=choice_converter("inputFormat", INPUT_FORMATS))
    height = Param(Params._dummy(), "height", "output height in pixels", typeConverter=_positive("height"))
    width = Param(Params._dummy(), "width", "output width in pixels", typeConverter=_positive("width"))
    channels = Param(Params._dummy(), "channels", "1 (gray) or 3 (colour)", typeConverter=_channels)
    resizeMode = Param(Params._dummy(), "resizeMode", "crop (cover, centre crop), stretch, or pad (black borders)",
                       typeConverter=choice_converter("resizeMode", RESIZE_MODES))
    maxPixels = Param(Params._dummy(), "maxPixels", "larger images become invalid rows (decompression bombs)",
                      typeConverter=TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, inputCol="image", outputCol="resized", inputFormat="auto", height=224, width=224,
                 channels=3, resizeMode="crop", maxPixels=DEFAULT_MAX_PIXELS):
        super().__init__()
        self._setDefault(**_DEFAULTS)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol="image", outputCol="resized", inputFormat="auto", height=224, width=224,
                  channels=3, resizeMode="crop", maxPixels=DEFAULT_MAX_PIXELS):
        return self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        g = self.getOrDefault
        name, output = g(self.inputCol), g(self.outputCol)
        form = input_form(dataset, name, g(self.inputFormat))
        spec = NetworkSpec(kind="resize", digest="", height=g(self.height), width=g(self.width),
                           channels=g(self.channels), resize=g(self.resizeMode))
        cols = Columns(input=name, form=form, height="height", width="width", channels="channels")
        kept = [f for f in dataset.schema.fields if f.name != output]
        schema = T.StructType(kept + [T.StructField(output, image_struct.spark_type(), True)])
        body = functools.partial(remote.resize_batches, spec, cols, output, g(self.maxPixels))
        return dataset.mapInArrow(body, schema)
