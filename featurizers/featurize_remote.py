"""Executor side of DeepImageFeaturizer / DeepImagePredictor: one loaded model per Python worker.

Spark reuses Python workers (spark.python.worker.reuse, set by build_spark), so
the worker's model cache (pipelines.core.tf_runtime.MODELS) keeps each (model,
weights, output) network loaded across all the tasks and batches that worker runs.  Rows arrive as Arrow batches of a
normalised image struct (origin, height, width, channels, data); images are
resized in chunks of `batch_size`, so memory stays bounded by one chunk at the
model's input size whatever the Arrow batch holds, and rows of different sizes
(Spark's image source) share model calls.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np

from pipelines.core.errors import DataError
from pipelines.core.tf_runtime import MODELS, configure_threads

# Field names of the struct the transformers hand to the UDF (see transformers._image_struct).
ORIGIN, HEIGHT, WIDTH, CHANNELS, DATA = "origin", "height", "width", "channels", "data"
SUPPORTED_CHANNELS = (1, 3, 4)


class ImageInputError(DataError, ValueError):
    """An input image that cannot be featurized; the message names the image and the reason."""


def _network(model_name: str, weights: str, output: str, threads: int):
    """(spec, traced call) for a registry model, from this worker's model cache (pipelines.core.tf_runtime)."""
    def build():
        import tensorflow as tf

        from . import keras_models
        from .registry import get_spec
        configure_threads(threads)
        spec = get_spec(model_name)
        model = keras_models.build_model(spec, weights, output)
        normalise = keras_models.preprocess(spec)
        size = spec.input_size
        run = tf.function(lambda x: model(normalise(x), training=False),
                          input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        return spec, run
    return MODELS.get(("featurizer", model_name, weights, output), build)


def _check_rows(frame) -> None:
    h, w, c = (frame[k].fillna(0).to_numpy().astype(np.int64) for k in (HEIGHT, WIDTH, CHANNELS))
    lengths = frame[DATA].map(lambda b: len(b) if isinstance(b, (bytes, bytearray)) else 0).to_numpy()
    bad = (h <= 0) | (w <= 0) | ~np.isin(c, SUPPORTED_CHANNELS) | (lengths != h * w * c)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        origin = frame[ORIGIN].iloc[i]
        if h[i] <= 0 or lengths[i] == 0:
            reason = "it could not be decoded (no pixels; spark.read.format('image') marks unreadable files this way)"
        elif c[i] not in SUPPORTED_CHANNELS:
            reason = f"it has {c[i]} channels; supported: 1 (grayscale), 3 (RGB/BGR), 4 (with alpha)"
        else:
            reason = f"it has {lengths[i]} bytes of pixels, expected {h[i]}x{w[i]}x{c[i]}={h[i] * w[i] * c[i]}"
        raise ImageInputError(f"image {origin}: cannot featurize: {reason}")


def _chunks(frame, batch_size: int) -> Iterator[Tuple[np.ndarray, list]]:
    """(row positions, [(positions, uint8 images of one shape), ...]) per chunk of `batch_size` rows.

    Rows are grouped by shape first so a chunk holds few distinct shapes (one for a dataset
    of equal-sized images), and each shape group is resized with one call.
    """
    shapes = frame[[HEIGHT, WIDTH, CHANNELS]].to_numpy()
    order = np.lexsort(shapes.T[::-1]) if len(frame) > 1 else np.arange(len(frame))
    data = frame[DATA].to_numpy()
    for lo in range(0, len(order), batch_size):
        rows = order[lo:lo + batch_size]
        groups = []
        chunk_shapes = shapes[rows]
        start = 0
        while start < len(rows):
            stop = start + 1
            while stop < len(rows) and (chunk_shapes[stop] == chunk_shapes[start]).all():
                stop += 1
            h, w, c = (int(v) for v in chunk_shapes[start])
            blob = b"".join(data[rows[start:stop]])
            groups.append((np.arange(start, stop), np.frombuffer(blob, np.uint8).reshape(stop - start, h, w, c)))
            start = stop
        yield rows, groups


def apply_model(model_name: str, weights: str, output: str, batch_size: int, threads: int, bgr: bool,
                frames: Iterator) -> Iterator[np.ndarray]:
    """For each pandas frame of image structs, the model's output rows as one float32 array (N, D)."""
    from . import keras_models
    spec, run = _network(model_name, weights, output, threads)
    size = spec.input_size
    for frame in frames:
        n = len(frame)
        _check_rows(frame)
        result = None
        for rows, groups in _chunks(frame, batch_size):
            batch = np.empty((len(rows), size, size, 3), np.float32)
            for positions, images in groups:
                batch[positions] = keras_models.resize_crop(keras_models.to_rgb(images, bgr), size).numpy()
            out = run(batch).numpy()
            if result is None:
                result = np.empty((n, out.shape[1]), np.float32)
            result[rows] = out
        yield result if result is not None else np.zeros((0, 0), np.float32)


def features_udf_body(model_name: str, weights: str, batch_size: int, threads: int, bgr: bool, frames):
    import pandas as pd

    from .keras_models import FEATURES
    for out in apply_model(model_name, weights, FEATURES, batch_size, threads, bgr, frames):
        yield pd.Series(list(out))


def top_k_udf_body(model_name: str, weights: str, batch_size: int, threads: int, bgr: bool, top_k: int,
                   class_names, frames):
    """Top-K (classIndex, className, probability) per row, highest first; className is None when names are unknown."""
    import pandas as pd

    from .keras_models import PROBABILITIES
    for probs in apply_model(model_name, weights, PROBABILITIES, batch_size, threads, bgr, frames):
        k = min(top_k, probs.shape[1]) if len(probs) else 0
        best = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        rows = []
        for i in range(len(probs)):
            rows.append([{"classIndex": int(j), "className": class_names[j] if class_names else None,
                          "probability": float(probs[i, j])} for j in best[i]])
        yield pd.Series(rows, dtype=object)


def probabilities_udf_body(model_name: str, weights: str, batch_size: int, threads: int, bgr: bool, frames):
    import pandas as pd

    from .keras_models import PROBABILITIES
    for probs in apply_model(model_name, weights, PROBABILITIES, batch_size, threads, bgr, frames):
        yield pd.Series(list(probs))
