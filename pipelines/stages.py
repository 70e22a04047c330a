"""The stage table: every `sparkcnn` command, the function that runs it and the settings it reads.

Adding a stage means writing its sub-package (`section.py` with its settings, `stage.py`
with a function `(spark, cfg, store)` logging on "sparkcnn.<stage>", `remote.py` for what runs
in executors) and one line in STAGES below; the CLI, `--help`, config validation and the jobs/ entry points
all derive from this table.

Stage modules import TensorFlow, Horovod and MLflow only inside the functions that need
them, so importing this table (which `sparkcnn --help` and every config check do) stays
cheap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from pipelines.augment.section import AugmentSection
from pipelines.augment.stage import augment
from pipelines.core import config as config_engine
from pipelines.core.config import Config
from pipelines.core.sections import CORE_SECTIONS
from pipelines.core.stage_cache import StageKey
from pipelines.experiments.section import ExperimentSection
from pipelines.experiments.stage import experiment
from pipelines.export.section import ExportSection
from pipelines.export.stage import export_stage
from pipelines.ingest.key import INGEST_KEY
from pipelines.ingest.section import IngestSection
from pipelines.ingest.stage import ingest_stage
from pipelines.localise.section import LocaliseSection
from pipelines.localise.stage import localise
from pipelines.predict.section import PredictSection
from pipelines.predict.stage import predict
from pipelines.report.key import REPORT_KEY
from pipelines.report.section import ReportSection
from pipelines.report.stage import report
from pipelines.score.key import SCORE_KEY
from pipelines.score.section import ScoreSection
from pipelines.score.stage import score
from pipelines.tracking.section import TrackingSection
from pipelines.train.key import TRAIN_KEY
from pipelines.train.stage import train
from pipelines.training.section import TrainSection
from pipelines.transfer.section import TransferSection
from pipelines.transfer.stage import transfer
from pipelines.visualize.section import VisualizeSection
from pipelines.visualize.stage import visualize


@dataclass(frozen=True)
class Stage:
    """A CLI stage: `run(spark, cfg, store)` and the config sections it reads (beyond run/spark/data)."""
    run: Callable
    sections: Mapping[str, type]
    help: str
    example: str
    key: Optional[StageKey] = None     # what its output depends on: skipped when unchanged (core/stage_cache.py)


STAGES = {
    "ingest": Stage(ingest_stage, {"ingest": IngestSection},
                    "fetch the dataset (verified) and write train/val/test Parquet datasets",
                    "sparkcnn ingest --conf conf/mnist.yaml --set ingest.limit_train=6000", INGEST_KEY),
    "augment": Stage(augment, {"augment": AugmentSection},
                     "augment Parquet splits (rotate, shift, skew, elastic, ...) reproducibly: <split>_aug + figure",
                     "sparkcnn augment --conf conf/augment_mnist.yaml"),
    "train": Stage(train, {"train": TrainSection, "augment": AugmentSection},
                   "train a zoo model with Horovod on Spark executors, reading Parquet through Petastorm",
                   "sparkcnn train --conf conf/mnist.yaml --set train.epochs=1 --set train.num_proc=2", TRAIN_KEY),
    "score": Stage(score, {"score": ScoreSection},
                   "batch-score a split with the trained model: predictions Parquet + metrics.json",
                   "sparkcnn score --conf conf/mnist.yaml", SCORE_KEY),
    "predict": Stage(predict, {"predict": PredictSection},
                     "score raw image files (folder, glob, list; any storage) with any model: a partitioned "
                     "predictions table + rejects, resumable and incremental",
                     "sparkcnn predict --conf conf/predict.yaml --set predict.input='photos/**/*.jpg' "
                     "--set predict.output=predictions"),
    "report": Stage(report, {"report": ReportSection},
                    "write runs/<run>/report/index.html with samples, curves, confusion matrix",
                    "sparkcnn report --conf conf/mnist.yaml", REPORT_KEY),
    "visualize": Stage(visualize, {"visualize": VisualizeSection},
                       "PNG grid of N samples per class (misclassified in red with predictions) + class counts",
                       "sparkcnn visualize --conf conf/mnist.yaml --set visualize.split=test --set visualize.predictions=true"),
    "export": Stage(export_stage, {"export": ExportSection},
                    "write a dataset back to lossless PNG files, one folder per class",
                    "sparkcnn export --conf conf/mnist.yaml --set export.splits=[test] --set export.out_dir=/tmp/mnist_png"),
    "transfer": Stage(transfer, {"transfer": TransferSection, "ingest": IngestSection, "report": ReportSection},
                      "pretrained CNN features (DeepImageFeaturizer) + LogisticRegression: fit, save the "
                      "PipelineModel, evaluate on test, report",
                      "sparkcnn transfer --conf conf/transfer_mnist.yaml --set transfer.train_rows=2000"),
    "experiment": Stage(experiment, {"experiment": ExperimentSection},
                        "sweep a grid of trials (architecture, batch size, optimizer, ...) as parallel Spark tasks: "
                        "results table + plots",
                        "sparkcnn experiment --conf conf/experiments/architectures.yaml"),
    "localise": Stage(localise, {"localise": LocaliseSection, "train": TrainSection},
                      "convert mnist_cnn to a fully-convolutional net, prove equivalence, localise digits in "
                      "composite images with Spark (heatmaps + score)",
                      "sparkcnn localise --conf conf/experiments/localise.yaml"),
}
# Composite commands: a name for a sequence of stages (a stage's own name here means the command runs
# this sequence; each stage in it is skipped when its key says it is up to date).
PIPELINES = {
    "run": (("ingest", "train", "score", "report"), "the whole pipeline: ingest, train, score, report",
            "sparkcnn run --conf conf/mnist.yaml"),
    "transfer": (("ingest", "transfer", "report"), STAGES["transfer"].help + " (ingests first when the datasets "
                 "are missing or stale, and writes the report)", STAGES["transfer"].example),
}
# Commands that write a dataset, and so hold its lock as well as the run directory's.
WRITES_DATASET = ("ingest", "augment", "transfer")
# Sections of services that wrap every command rather than being one.
SERVICE_SECTIONS = {"tracking": TrackingSection}


def _all_sections() -> dict:
    sections = dict(CORE_SECTIONS)
    for stage in STAGES.values():
        sections.update(stage.sections)
    sections.update(SERVICE_SECTIONS)
    return sections


SECTIONS = _all_sections()


def stage_names(command: str) -> tuple:
    """The stages a command runs: itself, or the sequence of a composite command."""
    return PIPELINES[command][0] if command in PIPELINES else (command,)


def sections_of(command: str) -> dict:
    """name -> section class of the settings a command reads, core sections first."""
    sections = dict(CORE_SECTIONS)
    for name in stage_names(command):
        sections.update(STAGES[name].sections)
    sections.update(SERVICE_SECTIONS)
    return sections


def load_config(path: Optional[str] = None, overrides=(), text: Optional[str] = None) -> Config:
    """Read a conf file (or YAML text), apply `--set` overrides, validate every section of every stage.

    Nothing in this process changes: code that reaches the conf's stores runs under its storage
    context (`with storage.using(cfg.storage.context()):`, as run_stages does for a command).
    """
    return config_engine.load(SECTIONS, path, overrides, text)
