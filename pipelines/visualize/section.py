"""Settings of `sparkcnn visualize`."""
from __future__ import annotations

from dataclasses import dataclass

from pipelines.core.config import setting


@dataclass(frozen=True)
class VisualizeSection:
    split: str = setting("train")
    samples_per_class: int = setting(10, min=1, max=50)
    predictions: bool = setting(False, doc="join the run's predictions and mark the misclassified")
