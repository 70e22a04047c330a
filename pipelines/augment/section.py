"""Settings of `sparkcnn augment` (and of train.augment's on-the-fly pipeline)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipelines.augmentation.params import AugmentError
from pipelines.augmentation.pipeline import Pipeline
from pipelines.core.config import ConfigError, setting


@dataclass(frozen=True)
class AugmentSection:
    pipeline: Optional[list] = setting(None, doc="operations in order: [{op: rotate, p: 0.9, degrees: [-25, 25]}, ...]; "
                                               "see pipelines/augmentation/pipeline.py OPS")
    seed: int = setting(0, doc="same seed, same images, whatever the partitioning")
    n_per_image: int = setting(1, min=0, doc="augmented samples per source image")
    keep_originals: bool = setting(True, doc="also write each source image unchanged (sample 0)")
    balance_classes: bool = setting(False, doc="augment smaller classes more, up to the largest class's row count")
    splits: Optional[list] = setting(None, doc="splits to augment (default [train])")
    output_suffix: str = setting("_aug", doc="split <s> is written as <s><suffix> next to it")
    partitions: Optional[int] = setting(None, min=1, doc="spread the source rows over N tasks (default: as read); "
                                                     "the output is the same whatever N")
    report_images: int = setting(8, min=1, max=50, doc="source images in the before/after figure")

    def check(self, where: str) -> None:
        try:
            Pipeline.parse(self.pipeline, self.seed, where=f"{where}.pipeline")
        except AugmentError as exc:
            raise ConfigError(str(exc)) from None
        if self.splits is not None and not (self.splits and all(isinstance(x, str) and x for x in self.splits)):
            raise ConfigError(f"{where}.splits: expected a list of split names, got {self.splits!r}")
        if not self.output_suffix or "/" in self.output_suffix:
            raise ConfigError(f"{where}.output_suffix: {self.output_suffix!r} must be a non-empty plain suffix")
