"""Settings of `sparkcnn localise`."""
from __future__ import annotations

from dataclasses import dataclass

from pipelines.core.config import setting


@dataclass(frozen=True)
class LocaliseSection:
    compare: bool = setting(False, doc="train two mnist_cnn models (plain, shift-augmented) and compare them; "
                                    "otherwise localise with the run's trained model")
    canvas: int = setting(224, min=28, doc="composite images are canvas x canvas pixels")
    cell: int = setting(40, min=28, doc="grid cell size; at most one digit per cell, at a random offset inside it")
    fill: float = setting(0.5, min=0.0, max=1.0, doc="probability that a grid cell holds a digit")
    images: int = setting(32, min=1, doc="composite images to build and localise")
    threshold: float = setting(0.5, min=0.0, max=1.0, doc="heatmap pixels with class probability above it are hits")
    tolerance: int = setting(4, min=0, doc="a hit counts for a digit when its window centre is this close (pixels)")
    heatmap_images: int = setting(2, min=0, doc="composites that get per-class heatmap PNGs")
    seed: int = setting(7)
    split: str = setting("test", doc="digits come from this split")
    train_samples: int = setting(12000, min=1, doc="compare: training rows for each of the two models")
    epochs: int = setting(3, min=1, doc="compare: epochs for each of the two models")
    batch_size: int = setting(128, min=1, doc="compare: mini-batch size")
    shift: int = setting(7, min=1, doc="compare: the augmented model's maximum shift in pixels (a quarter of 28)")
    background: float = setting(0.0, min=0.0, max=4.0,
                             doc="compare: when > 0, also train a shifted model with a background class "
                                 "(this many off-centre or empty windows per training digit)")
