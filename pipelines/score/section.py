"""Settings of `sparkcnn score`."""
from __future__ import annotations

from dataclasses import dataclass

from pipelines.core.config import setting


@dataclass(frozen=True)
class ScoreSection:
    split: str = setting("test")
    batch_size: int = setting(1024, min=1, doc="images per model call inside an executor")
