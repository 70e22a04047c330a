"""The predict engine as `make bench-predict` calls it: a folder scored by a registry model into a fresh table."""
from __future__ import annotations

from pipelines.predict.section import PredictSection
from pipelines.predict.stage import predict_files


def score_folder(spark, folder: str, model_name: str, weights: str, output_dir: str, batch_size: int = 32) -> int:
    """Score every file under `folder` into `output_dir` (which should not hold this model's rows); -> rows scored."""
    section = PredictSection(input=folder, model=model_name, weights=weights, output=output_dir,
                             batch_size=batch_size)
    summary = predict_files(spark, section)
    return summary["scored"] + summary["rejected"]
