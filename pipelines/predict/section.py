"""Settings of `sparkcnn predict`: which files, which model, where the predictions go."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipelines.core.config import ConfigError, setting


@dataclass(frozen=True)
class PredictSection:
    input: str = setting("", doc="what to score: a folder, a glob ('s3://b/photos/**/*.jpg'), a .txt/.parquet list "
                                 "of paths, or a Parquet table with an image column (see input_column); any storage")
    input_column: str = setting("", doc="a table input's image column: binary file bytes, Spark's image struct or "
                                        "sparkcnn raw pixels ('' = the input is files)")
    path_column: str = setting("path", doc="a table or list input's column naming each image (its identity)")
    model: str = setting("", doc="a .keras/.h5 file, a SavedModel dir, a run dir (runs/<name>), a registry name "
                                 "(EfficientNetLite0, ResNet50, ...) or a saved Spark ML PipelineModel dir")
    weights: str = setting("imagenet", doc="a registry model's weights: imagenet, random-untrained or a file")
    output: str = setting("", doc="the predictions table (partitioned Parquet, any storage); rejects beside it "
                                  "in <output>/_rejects")
    top_k: int = setting(5, min=1, doc="classes kept per image, best first")
    probabilities: bool = setting(False, doc="also write every class's probability")
    embedding_layer: str = setting("", doc="also write this layer's activations as `embedding` ('' = none; "
                                           "'features' for a registry model: its classifier's input)")
    image_size: Optional[list] = setting(None, doc="[height, width] to score at (default: the model's input)")
    resize: str = setting("auto", choices=("auto", "crop", "stretch", "pad"),
                          doc="fitting an image to the model: auto (a run's ingest.resize, crop for registry and "
                              "other models), crop (cover, centre crop), stretch, pad")
    scale: str = setting("raw", choices=("raw", "unit", "symmetric"),
                         doc="pixels into the model: raw 0..255 (sparkcnn and registry models normalise inside), "
                             "unit 0..1, symmetric -1..1")
    max_pixels: int = setting(89_478_485, min=1, doc="images with more pixels are rejected (decompression bombs)")
    batch_size: int = setting(32, min=1, doc="images per model call inside an executor", runtime=True)
    files_per_task: int = setting(256, min=1, doc="files per task: the unit committed (and redone after a kill)",
                                  runtime=True)
    task_mb: int = setting(64, min=1, doc="at most this many MB of files per task (balances tasks of big files)",
                           runtime=True)

    def check(self, where: str) -> None:
        size = self.image_size
        if size is not None and (len(size) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise ConfigError(f"{where}.image_size must be [height, width] of positive integers, got {size!r}")
