"""What every augmentation op is built from: AugmentError, parameter declarations (Param, PROB) and Op.

Op is the base class of the geometric and pixel ops (pipelines.augmentation.geometric, colour, photometric, filters):
its declared params are validated by Param.check when Pipeline.parse reads a conf, and it draws
its per-image values from pipelines.augmentation.draws.  _num formats a drawn value for lineage JSON.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import numpy as np

from pipelines.augmentation.draws import _TAG_STRIDE, uniform
from pipelines.core.errors import SparkcnnError


class AugmentError(SparkcnnError, ValueError):
    """A bad augmentation pipeline (unknown op or parameter, bad value) or bad input to it."""


@dataclass(frozen=True)
class Param:
    kind: str            # "range" [lo, hi] | "float" | "int" | "choice" | "angles" | "fill"
    default: object
    lo: Optional[float] = None
    hi: Optional[float] = None
    choices: tuple = ()
    doc: str = ""

    def check(self, where: str, value):
        def number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        def bounded(v, what):
            if self.lo is not None and v < self.lo:
                raise AugmentError(f"{where}: {what} {v!r} is below the minimum {self.lo}")
            if self.hi is not None and v > self.hi:
                raise AugmentError(f"{where}: {what} {v!r} is above the maximum {self.hi}")

        if self.kind == "range":
            if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(map(number, value))):
                raise AugmentError(f"{where}: expected [low, high], got {value!r}")
            lo, hi = float(value[0]), float(value[1])
            if lo > hi:
                raise AugmentError(f"{where}: low {lo} is above high {hi}")
            bounded(lo, "low")
            bounded(hi, "high")
            return (lo, hi)
        if self.kind in ("float", "int"):
            if not number(value) or (self.kind == "int" and not isinstance(value, int)):
                raise AugmentError(f"{where}: expected {'an integer' if self.kind == 'int' else 'a number'}, got {value!r}")
            bounded(value, "value")
            return float(value) if self.kind == "float" else int(value)
        if self.kind == "choice":
            if value not in self.choices:
                raise AugmentError(f"{where}: {value!r} is not one of {', '.join(self.choices)}")
            return value
        if self.kind == "angles":
            if not (isinstance(value, (list, tuple)) and value and all(v in (90, 180, 270) for v in value)):
                raise AugmentError(f"{where}: expected a non-empty list of 90, 180, 270, got {value!r}")
            return tuple(int(v) for v in value)
        if self.kind == "fill":
            if value == "noise" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255):
                return value
            raise AugmentError(f"{where}: expected a pixel value 0..255 or 'noise', got {value!r}")
        raise AssertionError(self.kind)


PROB = Param("float", 1.0, 0.0, 1.0, doc="probability that the op is applied to an image")


class Op:
    """An operation: its parameters, how it draws them, and what it does with them."""
    name = ""
    kind = "geometric"   # "geometric" (a matrix), "elastic" (a displacement field), "crop" or "pixel"
    mode = "float"       # pixel ops: what pixels they need, see pipelines.augmentation.pixels
    params: dict = {}
    doc = ""

    def __init__(self, index: int, values: dict):
        self.index = index
        self.p = values.pop("p")
        self.values = values

    def u(self, keys, j: int) -> np.ndarray:
        return uniform(keys, self.index * _TAG_STRIDE + j)

    def between(self, keys, j, lohi) -> np.ndarray:
        lo, hi = lohi
        return lo + (hi - lo) * self.u(keys, j)

    def applied(self, keys) -> np.ndarray:
        if self.p >= 1.0:   # u < 1 always: no need to draw it
            return np.ones(len(keys), bool)
        return self.u(keys, 0) < self.p

    def draw(self, keys, h, w) -> dict:
        return {}

    def spec(self) -> dict:
        return {"op": self.name, "p": self.p, **{k: list(v) if isinstance(v, tuple) else v
                                                   for k, v in self.values.items()}}


def _num(v) -> str:
    if isinstance(v, (np.bool_, bool)):
        return "true" if v else "false"
    if isinstance(v, (np.integer, int)):
        return str(int(v))
    return json.dumps(float(f"{float(v):.6g}"))
