"""Settings of `sparkcnn ingest`: how raw files become dataset splits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipelines.core.config import ConfigError, setting


@dataclass(frozen=True)
class IngestSection:
    validation_rows: int = setting(0, min=0, doc="last N training images become the 'val' split")
    limit_train: Optional[int] = setting(None, min=1, doc="ingest only the first N training images")
    limit_test: Optional[int] = setting(None, min=1, doc="ingest only the first N test images")
    partition_mb: int = setting(128, min=1, doc="target uncompressed MB per Parquet file")
    row_group_mb: float = setting(4.0, min=0.25, doc="target uncompressed MB per row group (the unit Petastorm shards and shuffles)")
    image_size: Optional[list] = setting(None, doc="[height, width] for image folders (default: the first image's size)")
    channels: Optional[int] = setting(None, choices=(1, 3), doc="1 = grayscale, 3 = RGB (default: the first image's)")
    resize: str = setting("reject", choices=("reject", "stretch", "pad", "crop"),
                       doc="images of another size: reject, stretch to size, pad (keep aspect) or centre-crop")
    max_pixels: int = setting(50_000_000, min=1, doc="images with more pixels are rejected (decompression bombs)")
    coarse_labels: bool = setting(False, doc="CIFAR-100: the 20 superclasses instead of the 100 classes")
    incremental: bool = setting(True, doc=(
        "image folders: decode only files that are new or changed since the last ingest of this dataset with "
        "the same settings (rows of unchanged files are carried over; removed files' rows leave)"))
    test_fraction: float = setting(0.2, min=0.0, max=0.9,
                                doc="image folders without train/ and test/ subfolders: share of files (by path hash) for test")

    def check(self, where: str) -> None:
        size = self.image_size
        if size is not None and (len(size) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise ConfigError(f"{where}.image_size must be [height, width] of positive integers, got {size!r}")
