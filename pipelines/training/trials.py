"""Training runs as independent Spark tasks (driver side): one task per trial, longest first.

The experiment stage sweeps a grid of trials through this; the localise stage trains its models
the same way.  A trial's executor side is pipelines.training.trial_remote.
"""
from __future__ import annotations

import hashlib
import json
from typing import List

from pipelines.training.trial_remote import TrialSpec, run_trial


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (same parts, same seed, on every machine and Python)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def trial_cost(trial: TrialSpec) -> int:
    """Samples a trial trains on: a proxy for its run time, to start the longest first."""
    s = trial.settings
    return s["steps"] * s["batch_size"] if s["budget"] == "steps" else s["epochs"] * s["train_samples"]


def run_trials(spark, trials: List[TrialSpec], description: str = "sparkcnn experiment") -> List[dict]:
    """One Spark task per trial, longest first (tasks start in partition order)."""
    ordered = sorted(trials, key=trial_cost, reverse=True)
    sc = spark.sparkContext
    sc.setJobDescription(f"{description}: {len(trials)} trials")
    try:
        results = sc.parallelize(ordered, len(ordered)).map(run_trial).collect()
    finally:
        sc.setJobDescription(None)
    return sorted(results, key=lambda r: (r["point"], r["repeat"]))
