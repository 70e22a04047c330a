"""What a run's report depends on: every output it shows and the configuration it prints.

The report embeds the run's configuration, so every section that shapes a result is an input
(Spark, resources and tracking settings are not: they change how fast, not what).  Timings are
left out: every stage rewrites them, the report itself included.
"""
from __future__ import annotations

from pipelines.core.stage_cache import StageKey, identity

NOT_SHOWN = ("spark", "resources", "tracking", "storage")


def inputs(cfg, store) -> dict:
    shown = {name: values for name, values in cfg.to_dict().items() if name not in NOT_SHOWN}
    found = {"config": shown}
    for name, location in (("history", store.history_path), ("metrics", store.metrics_path),
                           ("predictions", store.predictions_dir), ("augment figures", store.augment_figures_dir)):
        found[name] = identity(location)
    for split in ("train", "val", "test"):
        found["dataset " + split] = identity(cfg.dataset_dir(split))
    return found


def outputs(cfg, store, result) -> list:
    return [store.report_dir]


REPORT_KEY = StageKey(inputs, outputs, lambda cfg, store: store.root)
