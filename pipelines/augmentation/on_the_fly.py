"""Augmentation inside a training worker's tf.data pipeline (executor code): each batch drawn anew.

Used by the training engine for `train.augment_on_the_fly`; the augment stage's batch path is
pipelines.augment.remote.
"""
from __future__ import annotations

import numpy as np

from pipelines.augmentation.pipeline import Pipeline


class OnTheFly:
    """Augment training batches inside a worker: a numpy function for tf.numpy_function.

    Draws are keyed by (seed, stream, running image count), so each epoch sees new
    augmentations and a rerun with the same seed and input order sees the same ones.
    """

    def __init__(self, spec: dict, stream: int):
        self.pipeline = Pipeline.from_spec(spec)
        self.stream = int(stream)
        self.seen = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        n = len(images)
        counter = np.arange(self.seen, self.seen + n, dtype=np.int64)
        self.seen += n
        return self.pipeline.apply(images, np.full(n, self.stream, np.int64), counter)


def augment_tf_dataset(ds, spec: dict, stream: int):
    """Map (uint8 images [B,H,W,C], labels) batches through the pipeline; shapes and dtypes kept."""
    import tensorflow as tf

    fn = OnTheFly(spec, stream)

    def aug(images, labels):
        out = tf.numpy_function(fn, [images], tf.uint8, stateful=True)
        return tf.ensure_shape(out, images.shape), labels
    return ds.map(aug).prefetch(2)
