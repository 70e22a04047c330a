"""Settings of MLflow tracking, which wraps any command (`--set tracking.mlflow=true`)."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import urllib.parse
from dataclasses import dataclass
from typing import Optional

from pipelines.core import storage
from pipelines.core.config import ConfigError, setting


@dataclass(frozen=True)
class TrackingSection:
    """Optional MLflow tracking of each sparkcnn command (pipelines/tracking.py)."""
    mlflow: bool = setting(False, doc="log params, per-epoch and test metrics, timings, the report and the model to MLflow")
    uri: Optional[str] = setting(None, doc="MLflow tracking URI (file:..., http://...) or a local folder "
                                        "(default: <runs_dir>/mlruns, a local file store)")
    experiment: Optional[str] = setting(None, doc="MLflow experiment the run goes to (default: data.dataset)")

    def check(self, where: str) -> None:
        if not self.mlflow:
            return
        try:
            import mlflow  # noqa: F401  (the import that tracking will need, so a broken install shows here)
        except ImportError as exc:
            raise ConfigError(f"{where}.mlflow is true but mlflow cannot be imported ({exc}); install it with "
                              "`.venv/bin/pip install mlflow-skinny==2.22.5` (requirements.txt pins it) "
                              "or set tracking.mlflow: false") from None

    def resolve(self, where: str, sections: dict, path) -> "TrackingSection":
        """Fill the defaults: a file store under the runs folder, one experiment per dataset.

        A value without a URI scheme is a local folder, made absolute here so that the store does not
        depend on the directory a later command happens to start in.
        """
        runs_dir = sections["run"].runs_dir
        if not self.uri and self.mlflow and storage.is_remote(runs_dir):
            raise ConfigError(f"{where}.uri must be set when run.runs_dir is on a remote store "
                              f"({storage.redact(runs_dir)}): MLflow's file store is local-only. Use an MLflow "
                              "server (http://...) whose artifact root may be on the same store, or a local folder")
        uri = self.uri or os.path.join(os.path.expanduser(runs_dir), "mlruns")
        if not urllib.parse.urlparse(uri).scheme:
            uri = pathlib.Path(os.path.abspath(os.path.expanduser(uri))).as_uri()
        return dataclasses.replace(self, uri=uri, experiment=self.experiment or sections["data"].dataset)
