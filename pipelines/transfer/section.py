"""Settings of `sparkcnn transfer`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipelines.core.config import setting


@dataclass(frozen=True)
class TransferSection:
    """`sparkcnn transfer`: pretrained CNN features (featurizers/) + Spark LogisticRegression."""
    model: str = setting("EfficientNetLite0", doc="featurizer model name (pipelines/inference/pretrained/registry.py MODELS)")
    weights: str = setting("imagenet", doc="'imagenet', a weights file path, or 'random-untrained' (tests only)")
    batch_size: int = setting(32, min=1, doc="images per model call inside an executor")
    train_rows: Optional[int] = setting(None, min=1, doc="use the first N training images (default: all)")
    test_rows: Optional[int] = setting(None, min=1, doc="evaluate on the first N test images (default: all)")
    max_iter: int = setting(200, min=1, doc="LogisticRegression iterations")
    reg_param: float = setting(0.0, min=0.0, doc="LogisticRegression regularisation strength")
    elastic_net: float = setting(0.0, min=0.0, max=1.0, doc="0: L2, 1: L1")
