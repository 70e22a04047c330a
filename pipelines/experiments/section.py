"""Settings of `sparkcnn experiment`: one trial's settings, the grid over them, how the sweep runs."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Optional

from pipelines.core.config import ConfigError, check_value, setting, suggest
from pipelines.training.zoo import OPTIMIZERS


@dataclass(frozen=True)
class ExperimentSection:
    """One trial's settings (each may become a grid axis) plus how the sweep runs.

    The fields from `architecture` to `background` are the trial settings: their
    values here are the defaults every grid point starts from, and `grid` maps
    any of them to a list of values; the sweep is the cartesian product, each
    point trained `repeats` times, one Spark task per (point, repeat).
    """
    architecture: str = setting("baseline", doc="a model variant (pipelines/model_variants.py) or a zoo model name")
    kernel_size: Optional[int] = setting(None, min=1, doc="conv kernel size for the variant (default: the variant's)")
    filters: Optional[list] = setting(None, doc="conv filters per layer, e.g. [32, 64] (default: the variant's)")
    dense_width: Optional[int] = setting(None, min=1, doc="width of the variant's hidden dense layer(s)")
    optimizer: str = setting("adam", choices=OPTIMIZERS)
    learning_rate: Optional[float] = setting(None, min=1e-9,
                                          doc="default: the Keras 2.0-era default of the optimizer, as the seed ran")
    batch_size: int = setting(128, min=1)
    train_samples: int = setting(1024, min=1, doc="training rows drawn per repeat (the same rows for every grid point)")
    budget: str = setting("epochs", choices=("epochs", "steps"),
                       doc="epochs: train `epochs` passes; steps: train exactly `steps` mini-batches whatever their size")
    epochs: int = setting(4, min=1)
    steps: int = setting(256, min=1, doc="gradient steps when budget is steps (test accuracy is measured once, at the end)")
    scramble: bool = setting(False, doc="train and test on digits whose pixels are permuted by one fixed permutation")
    shift: int = setting(0, min=0, doc="shift each training image by up to this many pixels (random, per epoch)")
    background: float = setting(0.0, min=0.0, max=4.0,
                             doc="add a background class: this many off-centre or empty windows per training "
                                 "image (what a fully-convolutional detector needs for 'no digit here')")
    grid: Optional[dict] = setting(None, raw=True, doc="trial setting -> list of values to sweep, e.g. {batch_size: [16, 128]}")
    repeats: int = setting(3, min=1, doc="independent trainings per grid point (new weights and training rows)")
    test_samples: Optional[int] = setting(None, min=1, doc="test rows used (default: the whole test split)")
    seed: int = setting(42, doc="all randomness of the sweep derives from it")
    plot_x: Optional[str] = setting(None, doc="grid axis on the x axis of the plots (default: the first grid axis)")

    def resolve(self, where: str, sections: dict, path) -> "ExperimentSection":
        return _check_grid(self, where)


# The ExperimentSection fields a grid may sweep (every trial setting).
GRID_AXES = ("architecture", "kernel_size", "filters", "dense_width", "optimizer", "learning_rate",
             "batch_size", "train_samples", "budget", "epochs", "steps", "scramble", "shift", "background")
# Settings added after sweeps were published enter a trial's seed only when they differ from these
# defaults, so a conf that does not use them draws the same seeds (and results) as before.
LATER_AXES = {"background": 0.0}


def _check_filters(where: str, value) -> None:
    if value is not None and (not isinstance(value, list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ConfigError(f"{where}: expected a list of positive integers (filters per conv layer), got {value!r}")


def _check_grid(section: "ExperimentSection", where: str) -> "ExperimentSection":
    """Each grid axis is a trial setting with a non-empty list, each value checked like the setting itself."""
    fields = {f.name: f for f in dataclasses.fields(ExperimentSection)}
    hints = typing.get_type_hints(ExperimentSection)
    _check_filters(f"{where}.filters", section.filters)
    raw = section.grid
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.grid: expected a mapping of setting -> list of values, got {raw!r}")
    grid = {}
    for axis, values in raw.items():
        axis = str(axis)
        at = f"{where}.grid.{axis}"
        if axis not in GRID_AXES:
            raise ConfigError(f"{at}: '{axis}' is not a trial setting" + suggest(axis, GRID_AXES))
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{at}: expected a non-empty list of values, got {values!r}")
        checked = []
        for i, value in enumerate(values):
            if axis == "filters":
                _check_filters(f"{at}[{i}]", value)
            else:
                value = check_value(f"{at}[{i}]", value, hints[axis], fields[axis].metadata)
            if value in checked:
                raise ConfigError(f"{at}: {value!r} is listed twice")
            checked.append(value)
        grid[axis] = checked
    if section.plot_x is not None and section.plot_x not in grid:
        raise ConfigError(f"{where}.plot_x '{section.plot_x}' is not a grid axis "
                          f"(grid axes: {', '.join(grid) or 'none'})")
    return dataclasses.replace(section, grid=grid)
