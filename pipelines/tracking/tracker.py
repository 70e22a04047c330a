"""Optional MLflow tracking of one sparkcnn command (`tracking.mlflow: true`), driver side only.

Every command (`sparkcnn run`, or a single stage) becomes one MLflow run in
`tracking.experiment`, named after `run.name`: the flattened config as params
(and config.yaml), then, as each stage finishes, what it left in the run
directory: per-epoch training metrics from history.json (step = epoch number,
counted from 1, so a resumed training carries on its numbering), test
metrics from metrics.json, the stage's seconds, the model and the report.

Nothing here runs in executors: everything is read back from the files the
stages wrote, after they wrote them.  A tracking failure stops the command
with one line naming the store (the stage outputs already written stay
valid); the MLflow run is then marked FAILED.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from typing import Iterator, Optional

from pipelines.core import storage
from pipelines.core.config import Config
from pipelines.core.errors import SparkcnnError
from pipelines.core.store import MANIFEST, RunStore, read_json, resolve
from pipelines.core.store import exists as store_exists

logger = logging.getLogger("sparkcnn.tracking")


class TrackingError(SparkcnnError, RuntimeError):
    """MLflow could not take what was logged; the message names the store and what failed."""


# Scalars of metrics.json logged as metrics, prefixed with the scored split (test_accuracy, ...).
SCORE_METRICS = ("accuracy", "loss", "macro_f1", "weighted_f1", "rows", "scoring_seconds", "rows_per_second")


def flatten_config(cfg: Config) -> dict:
    """{"train.model": "mnist_cnn", ...}: every setting as one MLflow param (values as strings)."""
    return {f"{section}.{key}": "" if value is None else str(value)
            for section, values in cfg.to_dict().items() for key, value in values.items()}


def epoch_metrics(history: dict) -> list:
    """(name, value, step) for every per-epoch value in history.json; step is the epoch number (1, 2, ...).

    history.json holds the whole training, earlier runs' epochs included when it resumed
    from a checkpoint, so index i is always epoch i + 1.
    """
    rows = [(name, float(value), i + 1) for name, values in sorted(history["metrics"].items())
            for i, value in enumerate(values)]
    rows += [("epoch_seconds", float(s), i + 1) for i, s in enumerate(history.get("epoch_seconds", []))]
    return rows


class MlflowRun:
    """One MLflow run on an explicit MlflowClient (no process-wide active run)."""

    def __init__(self, cfg: Config, store: RunStore, stages):
        self.cfg, self.store, self.stages = cfg, store, list(stages)
        self.uri, self.experiment = cfg.tracking.uri, cfg.tracking.experiment
        self.client = None
        self.run_id: Optional[str] = None

    def start(self) -> None:
        """Open the store, create the run, log the config (params and config.yaml)."""
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
        self.client = self._call("open the store", MlflowClient, tracking_uri=self.uri)  # a file store is created
        command = "run" if len(self.stages) > 1 else self.stages[0]
        tags = {"sparkcnn.command": command, "sparkcnn.stages": ",".join(self.stages),
                "sparkcnn.run_dir": self.store.root, "sparkcnn.conf": self.cfg.source,
                "mlflow.source.name": f"sparkcnn {command}", "mlflow.source.type": "LOCAL"}
        tags = self._call("collect the run's context tags", resolve_tags, tags)  # user, git commit, as start_run does
        self._call("create the run", self._create, tags)
        params = []
        for key, value in flatten_config(self.cfg).items():
            if len(value) > MAX_PARAM_VAL_LENGTH:   # e.g. a long augment.pipeline; config.yaml holds it whole
                note = " ... (truncated; see config.yaml)"
                value = value[:MAX_PARAM_VAL_LENGTH - len(note)] + note
            params.append(Param(key, value))
        self._call("log the config as params", self.client.log_batch, self.run_id, params=params)
        self._artifact(self.store.config_path)
        logger.info(f"[tracking] MLflow run {self.run_id} in experiment '{self.experiment}' at {self.uri}")

    def _create(self, tags: dict) -> None:
        from mlflow.exceptions import MlflowException
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(self.experiment)
            except MlflowException:   # another command created it meanwhile
                experiment = self.client.get_experiment_by_name(self.experiment)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        elif experiment.lifecycle_stage != "active":
            raise TrackingError(f"MLflow experiment '{self.experiment}' at {self.uri} is deleted: restore it "
                                "or set tracking.experiment to another name")
        else:
            experiment_id = experiment.experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=self.cfg.run.name, tags=tags).info.run_id

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TrackingError:
            raise
        except Exception as exc:  # MlflowException, OSError, HTTP errors: whatever the store raised
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise TrackingError(f"tracking.mlflow: could not {what} (MLflow store tracking.uri={self.uri}, "
                                f"experiment '{self.experiment}'): {reason}") from exc

    def _metrics(self, what: str, rows) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, step) for name, value, step in rows]
        if metrics:
            self._call(f"log {what}", self.client.log_batch, self.run_id, metrics=metrics)

    def _artifact(self, path: str, artifact_path: Optional[str] = None) -> None:
        """Log a run file or directory output; one on a remote store is copied to local disk first
        (MLflow's client uploads local files to its own artifact store)."""
        if storage.is_remote(path):
            with tempfile.TemporaryDirectory(prefix="sparkcnn-mlflow-") as tmp:
                local = os.path.join(tmp, storage.basename(path))
                if storage.exists(storage.join(path, MANIFEST)):      # a published directory output
                    self._call(f"copy {storage.redact(path)}", storage.download_dir, resolve(path), local)
                else:
                    with open(local, "wb") as f:
                        f.write(self._call(f"read {storage.redact(path)}", storage.read_bytes, path))
                self._artifact(local, artifact_path)
            return
        path = os.path.realpath(path)   # directory outputs are symlinks to their current version
        if os.path.isdir(path):
            self._call(f"log {path}", self.client.log_artifacts, self.run_id, path, artifact_path)
        else:
            self._call(f"log {path}", self.client.log_artifact, self.run_id, path, artifact_path)

    # What each stage leaves in the run directory, logged as soon as the stage has finished.

    def _train(self) -> None:
        history = read_json(self.store.history_path)
        self._metrics("per-epoch training metrics", epoch_metrics(history))
        self._metrics("training time", [("train_wall_seconds", float(history["wall_seconds"]), 0)])
        self._call("tag the training", self.client.set_tag, self.run_id, "sparkcnn.resumed_after_epoch",
                   str(history.get("resumed_after_epoch", 0)))
        self._artifact(self.store.history_path)
        self._artifact(self.store.model_path, "model")
        if store_exists(self.store.saved_model_dir):
            self._artifact(self.store.saved_model_dir, "model/saved_model")

    def _score(self) -> None:
        metrics = read_json(self.store.metrics_path)
        split = metrics.get("split", "test")
        self._metrics(f"{split} metrics", [(f"{split}_{k}", float(metrics[k]), 0) for k in SCORE_METRICS
                                           if isinstance(metrics.get(k), (int, float))])
        self._artifact(self.store.metrics_path)

    def _report(self) -> None:
        self._artifact(self.store.report_dir, "report")

    def _transfer(self) -> None:
        self._score()
        self._report()
        self._artifact(self.store.transfer_model_dir, "model/transfer_model")

    def stage_done(self, stage: str, seconds: float) -> None:
        self._metrics(f"the {stage} time", [(f"{stage}_seconds", float(seconds), 0)])
        logger = {"train": self._train, "score": self._score, "report": self._report,
                  "transfer": self._transfer}.get(stage)
        if logger:
            logger()

    def end(self, status: str) -> None:
        if store_exists(self.store.timings_path):
            self._artifact(self.store.timings_path)
        self._call(f"mark the run {status}", self.client.set_terminated, self.run_id, status)


class NoTracking:
    """tracking.mlflow is false: nothing is logged."""

    def stage_done(self, stage: str, seconds: float) -> None:
        pass


@contextlib.contextmanager
def tracked(cfg: Config, store: RunStore, stages) -> Iterator:
    """An MLflow run around the stages of one command (when tracking.mlflow is true).

    Expects config.yaml already written.  A stage that fails marks the run FAILED (KILLED on
    Ctrl-C) and its own error propagates unchanged.
    """
    if not cfg.tracking.mlflow:
        yield NoTracking()
        return
    run = MlflowRun(cfg, store, stages)
    try:
        run.start()
        yield run
    except BaseException as exc:
        if run.run_id is not None:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            try:
                run.end(status)
            except TrackingError as end_exc:   # keep the original error; say why the run stays open
                logger.warning(f"[tracking] {end_exc}")
        raise
    run.end("FINISHED")
