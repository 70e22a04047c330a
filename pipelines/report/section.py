"""Settings of `sparkcnn report`."""
from __future__ import annotations

from dataclasses import dataclass

from pipelines.core.config import setting


@dataclass(frozen=True)
class ReportSection:
    samples_per_class: int = setting(10, min=1, max=50)
