"""Image augmentation operations, vectorised over batches and reproducible per image.

Pure numpy (no TensorFlow, no Spark): the Spark stage (augment_remote), the
on-the-fly training input and the benchmark all call `Pipeline.apply`.

Speed: every geometric operation (rotate, rotate90, shift, shear, zoom, crop,
flips, skew) is a 3x3 output->input matrix; a pipeline composes them into ONE
projective transform per image and resamples once (bilinear: one cv2.remap for
a few hundred images stacked into one tall image).  Elastic distortion is a
displacement field added to that same sampling grid, so a chain of any length
costs one resample.  Pixel operations (brightness, contrast, noise, erasing,
scramble) are array arithmetic on the batch.  Augmentor instead calls PIL once
per operation per image.

Reproducibility: every random number of output image (source_id, sample) is a
counter-based hash of (seed, source_id, sample, op index, draw index): nothing
depends on batch, partition or executor, so the same seed gives byte-identical
images however the data is split.  Per-image trigonometry uses Python's math
(libm) rather than numpy's SIMD kernels so no value depends on its position in
a batch.

Order: geometric ops are fused into one resample, so the conf must list them
before pixel ops (an error says so otherwise); within each group the conf order
is the order of application.
"""
from __future__ import annotations

import difflib
import functools
import json
import math
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import SparkcnnError


class AugmentError(SparkcnnError, ValueError):
    """A bad augmentation pipeline (unknown op or parameter, bad value) or bad input to it."""


# ---------------------------------------------------------------- counter-based random numbers

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TAG_STRIDE = 64  # draws per op


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic: numpy arrays wrap silently;
    only numpy scalars would warn, hence at least 1-d)."""
    x = np.add(np.atleast_1d(x), _GOLDEN)
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _u64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).astype(np.uint64)


def image_keys(seed: int, source_ids, samples) -> np.ndarray:
    """One 64-bit key per output image, a function of (seed, source id, sample index) only."""
    k = _mix(_u64([seed]))
    k = _mix(k ^ _u64(source_ids))
    return _mix(k ^ _u64(samples))


def _bits(keys: np.ndarray, tag: int) -> np.ndarray:
    return _mix(keys ^ _mix(_u64([tag])))


def uniform(keys: np.ndarray, tag: int) -> np.ndarray:
    """U[0, 1) float64, one per key, for draw number `tag`."""
    return (_bits(keys, tag) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _pixel_bits(keys: np.ndarray, tag: int, count: int) -> np.ndarray:
    """(N, count) uint64: a splitmix64 stream per image."""
    with np.errstate(over="ignore"):
        ctr = _bits(keys, tag)[:, None] + np.arange(count, dtype=np.uint64)[None, :] * _GOLDEN
    return _mix(ctr)


def pixel_normal(keys: np.ndarray, tag: int, count: int) -> np.ndarray:
    """(N, count) float32 approximately N(0,1): Irwin-Hall sum of four 16-bit uniforms.

    Pure integer/float arithmetic (no log/cos), so identical on every CPU path; tails stop at 3.46 sigma.
    """
    b = _pixel_bits(keys, tag, count)
    m = np.uint64(0xFFFF)
    s = ((b & m) + ((b >> np.uint64(16)) & m) + ((b >> np.uint64(32)) & m) + (b >> np.uint64(48))).astype(np.float32)
    return (s * np.float32(1 / 65536.0) - np.float32(2.0)) * np.float32(math.sqrt(3.0))


def pixel_uniform255(keys: np.ndarray, tag: int, count: int) -> np.ndarray:
    return (_pixel_bits(keys, tag, count) >> np.uint64(56)).astype(np.float32)


def pixel_uniform255_at(keys: np.ndarray, tag: int, image: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """pixel_uniform255(keys, tag, ...)[image, pixel], hashing only the pixels asked for."""
    with np.errstate(over="ignore"):
        ctr = _bits(keys, tag)[image] + pixel.astype(np.uint64) * _GOLDEN
    return (_mix(ctr) >> np.uint64(56)).astype(np.float32)


# ---------------------------------------------------------------- parameter declarations

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


# ---------------------------------------------------------------- operations

class Op:
    """An operation: its parameters, how it draws them, and what it does with them."""
    name = ""
    kind = "geometric"   # "geometric" (a matrix), "elastic" (a displacement field) or "pixel"
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


def _eye(n):
    return np.broadcast_to(np.eye(3), (n, 3, 3)).copy()


def _centred(m2: np.ndarray, h: int, w: int) -> np.ndarray:
    """Embed per-image 2x2 linear maps (N,2,2) about the image centre as output->input matrices."""
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    m = _eye(len(m2))
    m[:, :2, :2] = m2
    m[:, 0, 2] = cx - (m2[:, 0, 0] * cx + m2[:, 0, 1] * cy)
    m[:, 1, 2] = cy - (m2[:, 1, 0] * cx + m2[:, 1, 1] * cy)
    return m


def _libm(fn, values: np.ndarray) -> np.ndarray:
    """fn (a math function) of every value, through libm one value at a time (see the module docstring)."""
    return np.fromiter(map(fn, values.tolist()), np.float64, len(values))


def _radians(angles_deg: np.ndarray) -> np.ndarray:
    return angles_deg * _DEG   # one IEEE multiply each, exactly what math.radians does


_DEG = math.pi / 180.0


def _cos_sin(angles_deg: np.ndarray):
    rad = _radians(angles_deg)
    return _libm(math.cos, rad), _libm(math.sin, rad)


class Rotate(Op):
    name, doc = "rotate", "rotate by an angle drawn from degrees (positive: counter-clockwise), corners filled black"
    params = {"degrees": Param("range", (-25.0, 25.0), -360, 360)}

    def draw(self, keys, h, w):
        return {"degrees": self.between(keys, 1, self.values["degrees"])}

    def matrix(self, d, h, w):
        c, s = _cos_sin(d["degrees"])
        return _centred(np.stack([np.stack([c, -s], 1), np.stack([s, c], 1)], 1), h, w)


class Rotate90(Op):
    name, doc = "rotate90", "rotate by one of angles (multiples of 90, exact; non-square images keep their canvas)"
    params = {"angles": Param("angles", (90, 180, 270))}

    def draw(self, keys, h, w):
        angles = np.array(self.values["angles"])
        pick = np.minimum((self.u(keys, 1) * len(angles)).astype(np.int64), len(angles) - 1)
        return {"degrees": angles[pick]}

    def matrix(self, d, h, w):
        quarter = (d["degrees"] // 90) % 4
        c = np.array([1, 0, -1, 0], np.float64)[quarter]
        s = np.array([0, 1, 0, -1], np.float64)[quarter]
        return _centred(np.stack([np.stack([c, -s], 1), np.stack([s, c], 1)], 1), h, w)


class Shift(Op):
    name, doc = "shift", "translate by fractions of width (x) and height (y): the seeds' shifted digits"
    params = {"x": Param("range", (-0.25, 0.25), -1, 1), "y": Param("range", (-0.25, 0.25), -1, 1)}

    def draw(self, keys, h, w):
        return {"x": self.between(keys, 1, self.values["x"]), "y": self.between(keys, 2, self.values["y"])}

    def matrix(self, d, h, w):
        m = _eye(len(d["x"]))
        m[:, 0, 2] = -d["x"] * w
        m[:, 1, 2] = -d["y"] * h
        return m


class Shear(Op):
    name, doc = "shear", "shear along x and y by angles drawn from x_degrees / y_degrees"
    params = {"x_degrees": Param("range", (-10.0, 10.0), -60, 60), "y_degrees": Param("range", (0.0, 0.0), -60, 60)}

    def draw(self, keys, h, w):
        return {"x_degrees": self.between(keys, 1, self.values["x_degrees"]),
                "y_degrees": self.between(keys, 2, self.values["y_degrees"])}

    def matrix(self, d, h, w):
        tx = _libm(math.tan, _radians(d["x_degrees"]))
        ty = _libm(math.tan, _radians(d["y_degrees"]))
        one = np.ones_like(tx)
        # forward (x + tx*y, ty*x + y); the sampler needs its inverse
        det = one - tx * ty
        return _centred(np.stack([np.stack([one / det, -tx / det], 1), np.stack([-ty / det, one / det], 1)], 1), h, w)


class Zoom(Op):
    name, doc = "zoom", "scale about the centre by a factor drawn from factor (>1 zooms in)"
    params = {"factor": Param("range", (0.9, 1.1), 0.05, 20)}

    def draw(self, keys, h, w):
        return {"factor": self.between(keys, 1, self.values["factor"])}

    def matrix(self, d, h, w):
        inv = 1.0 / d["factor"]
        zero = np.zeros_like(inv)
        return _centred(np.stack([np.stack([inv, zero], 1), np.stack([zero, inv], 1)], 1), h, w)


class Crop(Op):
    name, doc = "crop", "crop a square-proportioned box of `size` (fraction of each side) and resize it back"
    params = {"size": Param("range", (0.8, 1.0), 0.05, 1), "mode": Param("choice", "random", choices=("random", "centre"))}

    def draw(self, keys, h, w):
        size = self.between(keys, 1, self.values["size"])
        if self.values["mode"] == "centre":
            ox, oy = (1 - size) / 2, (1 - size) / 2
        else:
            ox, oy = (1 - size) * self.u(keys, 2), (1 - size) * self.u(keys, 3)
        return {"size": size, "x0": ox, "y0": oy}

    def matrix(self, d, h, w):
        s = d["size"]
        m = _eye(len(s))
        m[:, 0, 0] = s
        m[:, 1, 1] = s
        m[:, 0, 2] = d["x0"] * w + 0.5 * s - 0.5   # pixel centres: in + .5 = x0*w + (out + .5)*s
        m[:, 1, 2] = d["y0"] * h + 0.5 * s - 0.5
        return m


class FlipLR(Op):
    name, doc = "flip_lr", "mirror left-right (exact)"
    params = {}

    def matrix(self, d, h, w):
        m = _eye(d["_n"])
        m[:, 0, 0] = -1
        m[:, 0, 2] = w - 1
        return m


class FlipTB(Op):
    name, doc = "flip_tb", "mirror top-bottom (exact)"
    params = {}

    def matrix(self, d, h, w):
        m = _eye(d["_n"])
        m[:, 1, 1] = -1
        m[:, 1, 2] = h - 1
        return m


def _square_to_quad(x, y):
    """Heckbert's closed form: per-image 3x3 maps of the unit square's corners (0,0),(1,0),(1,1),(0,1) to x[:, i], y[:, i]."""
    n = len(x)
    sx = x[:, 0] - x[:, 1] + x[:, 2] - x[:, 3]
    sy = y[:, 0] - y[:, 1] + y[:, 2] - y[:, 3]
    dx1, dx2 = x[:, 1] - x[:, 2], x[:, 3] - x[:, 2]
    dy1, dy2 = y[:, 1] - y[:, 2], y[:, 3] - y[:, 2]
    den = dx1 * dy2 - dx2 * dy1
    g = (sx * dy2 - dx2 * sy) / den
    hh = (dx1 * sy - sx * dy1) / den
    m = np.empty((n, 3, 3))
    m[:, 0] = np.stack([x[:, 1] - x[:, 0] + g * x[:, 1], x[:, 3] - x[:, 0] + hh * x[:, 3], x[:, 0]], 1)
    m[:, 1] = np.stack([y[:, 1] - y[:, 0] + g * y[:, 1], y[:, 3] - y[:, 0] + hh * y[:, 3], y[:, 0]], 1)
    m[:, 2] = np.stack([g, hh, np.ones(n)], 1)
    return m


def _inverse3(m):
    """Per-image 3x3 inverse by the adjugate (elementwise, no LAPACK)."""
    a, b, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    g, h, i = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    adj = np.stack([np.stack([e * i - f * h, c * h - b * i, b * f - c * e], 1),
                    np.stack([f * g - d * i, a * i - c * g, c * d - a * f], 1),
                    np.stack([d * h - e * g, b * g - a * h, a * e - b * d], 1)], 1)
    det = a * adj[:, 0, 0] + b * adj[:, 1, 0] + c * adj[:, 2, 0]
    return adj / det[:, None, None]


class Skew(Op):
    name = "skew"
    doc = ("perspective skew as Augmentor's: 'tilt' widens one side (left/right/top/bottom), 'corner' "
           "pulls one corner, 'any' picks either; corners move by up to magnitude x the side")
    params = {"type": Param("choice", "any", choices=("tilt", "corner", "any")),
              "magnitude": Param("float", 0.2, 0.0, 1.0)}

    def draw(self, keys, h, w):
        kind = self.values["type"]
        corner = (self.u(keys, 1) < 0.5) if kind == "any" else np.full(len(keys), kind == "corner")
        amount = self.values["magnitude"] * self.u(keys, 2)
        which = np.minimum((self.u(keys, 3) * 4).astype(np.int64), 3)     # side or corner
        axis = self.u(keys, 4) < 0.5                                       # corner: move along x or y
        return {"corner": corner, "amount": amount, "which": which, "axis_x": axis}

    def matrix(self, d, h, w):
        n = len(d["amount"])
        # output quad where the input rectangle's corners (TL, TR, BR, BL) land
        qx = np.tile(np.array([0.0, w - 1, w - 1, 0.0]), (n, 1))
        qy = np.tile(np.array([0.0, 0.0, h - 1, h - 1]), (n, 1))
        ax, ay = d["amount"] * (w - 1), d["amount"] * (h - 1)
        rows = np.arange(n)
        tilt, corner = ~d["corner"], d["corner"]
        side = d["which"]
        # tilt: one side's two corners spread apart along that side
        for s, (i, j, along_x) in enumerate(((0, 1, True), (1, 2, False), (2, 3, True), (3, 0, False))):
            sel = tilt & (side == s)
            if along_x:
                qx[sel, i] -= ax[sel] if s == 0 else -ax[sel]
                qx[sel, j] += ax[sel] if s == 0 else -ax[sel]
            else:
                qy[sel, i] -= ay[sel] if s == 1 else -ay[sel]
                qy[sel, j] += ay[sel] if s == 1 else -ay[sel]
        # corner: one corner pulled outward along x or y
        out_x = np.array([-1.0, 1.0, 1.0, -1.0])
        out_y = np.array([-1.0, -1.0, 1.0, 1.0])
        cx = corner & d["axis_x"]
        cy = corner & ~d["axis_x"]
        qx[rows[cx], side[cx]] += out_x[side[cx]] * ax[cx]
        qy[rows[cy], side[cy]] += out_y[side[cy]] * ay[cy]
        rect_to_quad = _square_to_quad(qx, qy)
        # output -> input: quad -> unit square -> rectangle
        out = _inverse3(rect_to_quad)
        out[:, 0] *= w - 1
        out[:, 1] *= h - 1
        return out


class Elastic(Op):
    name, kind = "elastic", "elastic"
    doc = ("Augmentor's random_distortion: a grid_width x grid_height grid whose inner vertices move by up to "
           "magnitude pixels; the displacement is interpolated to every pixel and added to the sampling grid")
    params = {"grid_width": Param("int", 4, 1, 64), "grid_height": Param("int", 4, 1, 64),
              "magnitude": Param("float", 2.0, 0.0, 100.0)}

    def draw(self, keys, h, w):
        gw, gh = self.values["grid_width"], self.values["grid_height"]
        mag = self.values["magnitude"]
        inner = (gh + 1) * (gw + 1)
        dx = np.zeros((len(keys), gh + 1, gw + 1))
        dy = np.zeros_like(dx)
        for v in range(inner):
            r, c = divmod(v, gw + 1)
            if 0 < r < gh and 0 < c < gw:   # border vertices stay put, as in Augmentor
                tag = (self.index << 32) | (1 << 31) | (2 * v)   # a tag space of its own: many draws
                dx[:, r, c] = mag * (2 * uniform(keys, tag) - 1)
                dy[:, r, c] = mag * (2 * uniform(keys, tag + 1) - 1)
        return {"dx": dx, "dy": dy}

    def _vertices(self):
        return self.values["grid_width"], self.values["grid_height"]

    def displace_grid(self, d, h, w, framed: bool = False):
        """The output pixel grid plus the displacement: float32 (k, H, W) each (scratch arrays).

        framed: shifted into the resampler's frame (x + _PAD, y + 1), saving a pass when nothing follows.

        For elastic as the last geometric op.  On the grid every image looks up the same vertices
        with the same weights, so the field is interpolated along x once per grid row (small
        arrays), then along y by gathering whole rows: field = row y0 + ty * (row y0+1 - row y0).
        The grid itself is folded into the rows: x is added to every row; y = (y0 + ty) * (h-1)/gh
        adds y0 * (h-1)/gh to row y0 and (h-1)/gh to the row differences.
        """
        gw, gh = self._vertices()
        k = len(d["dx"])
        x0, tx, y0, _ = _grid_cells(h, w, gw, gh)
        fields = np.stack([d["dx"], d["dy"]]).astype(np.float32)    # (2, k, gh + 1, gw + 1)
        left = fields[..., x0]
        rows = left + tx * (fields[..., x0 + 1] - left)               # (2, k, gh + 1, W)
        steps = rows[:, :, 1:] - rows[:, :, :-1]
        y_per_row = np.float32((h - 1) / max(gh, 1))
        rows[0] += np.arange(w, dtype=np.float32) + np.float32(_PAD if framed else 0)
        rows[1] += (np.arange(gh + 1, dtype=np.float32) * y_per_row + np.float32(1 if framed else 0))[:, None]
        steps[1] += y_per_row
        out = np.take(rows, y0, axis=2, out=_buffer("grid", (2, k, h, w), np.float32), mode="clip")
        between = np.take(steps, y0, axis=2, out=_buffer("between", (2, k, h, w), np.float32), mode="clip")
        cv2 = _cv2()
        flat_between = between.reshape(2 * k, h * w)
        cv2.multiply(flat_between, _row_weights(2 * k, h, w, gh), dst=flat_between)
        cv2.add(out.reshape(2 * k, h * w), flat_between, dst=out.reshape(2 * k, h * w))
        return out[0], out[1]

    def displace(self, d, u, v, h, w):
        """Coordinates (k, H, W) plus the displacement interpolated at them (bilinear between vertices)."""
        gw, gh = self._vertices()
        k = len(d["dx"])
        fx = np.clip(u, 0, w - 1) * np.float32(gw / max(w - 1, 1))
        fy = np.clip(v, 0, h - 1) * np.float32(gh / max(h - 1, 1))
        x0 = np.minimum(np.floor(fx), np.float32(gw - 1))
        y0 = np.minimum(np.floor(fy), np.float32(gh - 1))
        tx, ty = fx - x0, fy - y0
        stride, cells = gw + 1, (gh + 1) * (gw + 1)
        cell = (y0 * stride + x0).astype(np.intp)
        cell += (np.arange(k, dtype=np.intp) * cells).reshape(k, 1, 1)
        moved = []
        for field, base in ((d["dx"], u), (d["dy"], v)):
            flat = field.reshape(-1).astype(np.float32)
            g00, g01, g10, g11 = (flat.take(cell + off) for off in (0, 1, stride, stride + 1))
            g01 -= g00
            g01 *= tx
            g00 += g01
            g11 -= g10
            g11 *= tx
            g10 += g11
            g10 -= g00
            g10 *= ty
            g00 += g10
            moved.append(base + g00)
        return moved[0], moved[1]


# ---- pixel ops: act on float32 (n, H, W, C) arrays of the images they apply to

class Brightness(Op):
    name, kind, doc = "brightness", "pixel", "multiply pixel values by a factor"
    params = {"factor": Param("range", (0.8, 1.2), 0.0, 10.0)}

    def draw(self, keys, h, w):
        return {"factor": self.between(keys, 1, self.values["factor"])}

    def apply(self, x, d, keys):
        x *= d["factor"].astype(np.float32)[:, None, None, None]


class Contrast(Op):
    name, kind, doc = "contrast", "pixel", "scale each image's deviation from its mean by a factor"
    params = {"factor": Param("range", (0.8, 1.2), 0.0, 10.0)}

    def draw(self, keys, h, w):
        return {"factor": self.between(keys, 1, self.values["factor"])}

    def apply(self, x, d, keys):
        mean = x.reshape(len(x), -1).mean(axis=1, dtype=np.float64).astype(np.float32)[:, None, None, None]
        x -= mean
        x *= d["factor"].astype(np.float32)[:, None, None, None]
        x += mean


class Noise(Op):
    name, kind, doc = "noise", "pixel", "add gaussian noise, sigma (in pixel units 0-255) drawn per image"
    params = {"sigma": Param("range", (0.0, 10.0), 0.0, 255.0)}

    def draw(self, keys, h, w):
        return {"sigma": self.between(keys, 1, self.values["sigma"])}

    def apply(self, x, d, keys):
        z = pixel_normal(keys, self.index * _TAG_STRIDE + 63, x[0].size).reshape(x.shape)
        x += z * d["sigma"].astype(np.float32)[:, None, None, None]


class Erase(Op):
    name, kind, doc = "erase", "pixel", "random erasing: a rectangle of area (fraction) and aspect ratio filled with fill"
    params = {"area": Param("range", (0.02, 0.2), 0.0, 1.0), "aspect": Param("range", (0.3, 3.3), 0.05, 20.0),
              "fill": Param("fill", 0)}

    def draw(self, keys, h, w):
        area = self.between(keys, 1, self.values["area"]) * h * w
        la, lb = self.values["aspect"]
        aspect = np.exp(math.log(la) + (math.log(lb) - math.log(la)) * self.u(keys, 2))
        eh = np.clip(np.rint(np.sqrt(area * aspect)), 1, h).astype(np.int64)
        ew = np.clip(np.rint(np.sqrt(area / aspect)), 1, w).astype(np.int64)
        y0 = ((h - eh + 1) * self.u(keys, 3)).astype(np.int64)
        x0 = ((w - ew + 1) * self.u(keys, 4)).astype(np.int64)
        return {"y0": y0, "x0": x0, "height": eh, "width": ew}

    def apply(self, x, d, keys):
        n, h, w, c = x.shape
        image, pixel = _box_pixels(d["y0"], d["x0"], d["height"], d["width"], h, w, c)
        flat = x.reshape(n, h * w * c)
        if self.values["fill"] == "noise":
            # only the erased pixels are hashed; the values are those of the whole image's stream
            flat[image, pixel] = pixel_uniform255_at(keys, self.index * _TAG_STRIDE + 63, image, pixel)
        else:
            flat[image, pixel] = float(self.values["fill"])


def _box_pixels(y0, x0, height, width, h, w, c):
    """(image, index in H*W*C) of every pixel of every image's box, without scanning a mask.

    Each box is `height` runs of width*c consecutive values in the flat batch; the indices are the
    cumulative sum of an array of ones with each run's jump from the previous run's end written
    at the run's first position (as is the image number's)."""
    rows = np.flatnonzero(((np.arange(h)[None, :] >= y0[:, None])
                           & (np.arange(h)[None, :] < (y0 + height)[:, None])).reshape(-1))
    image_of_run = rows // h
    run_start = ((rows * w) + x0[image_of_run]) * c          # rows = image * h + y
    run_length = width[image_of_run] * c
    total = int(run_length.sum())
    first = np.cumsum(run_length) - run_length               # where each run begins in the output
    index = np.ones(total, np.int64)
    if total:
        index[first] = run_start - np.concatenate([[1], (run_start + run_length - 1)[:-1]])
        index[0] = run_start[0]
    np.cumsum(index, out=index)
    image = np.zeros(total, np.int64)
    image[first] = np.diff(image_of_run, prepend=0)
    np.cumsum(image, out=image)
    return image, index - image * (h * w * c)


class Scramble(Op):
    name, kind = "scramble", "pixel"
    doc = ("the seeds' scrambled digits: one fixed pixel permutation for the whole dataset, from `seed` "
           "(default: augment.seed); recorded in the output's metadata so the test set gets the same one")
    params = {"seed": Param("int", None)}

    def permutation(self, h, w) -> np.ndarray:
        return scramble_permutation(self.values["seed"], h, w)

    def apply(self, x, d, keys):
        n, h, w, c = x.shape
        x[...] = x.reshape(n, h * w, c)[:, self.permutation(h, w)].reshape(x.shape)


def scramble_permutation(seed: int, h: int, w: int) -> np.ndarray:
    """The pixel permutation for (seed, image size): output pixel i takes input pixel perm[i]."""
    return np.random.Generator(np.random.Philox(key=int(seed) & ((1 << 64) - 1))).permutation(h * w)


OPS = {cls.name: cls for cls in (Rotate, Rotate90, Shift, Shear, Zoom, Crop, FlipLR, FlipTB, Skew, Elastic,
                                 Brightness, Contrast, Noise, Erase, Scramble)}


def _suggest(name, options) -> str:
    close = difflib.get_close_matches(str(name), list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(options))})"


# ---------------------------------------------------------------- the pipeline

class Pipeline:
    """A validated list of ops; `apply` augments a batch of uint8 images."""

    def __init__(self, ops: list, seed: int):
        self.ops = ops
        self.seed = int(seed)

    @classmethod
    def parse(cls, steps, seed: int = 0, where: str = "augment.pipeline") -> "Pipeline":
        """Validate a conf list of {op: name, p: prob, param: value...}; errors name the step and key."""
        if steps is None:
            steps = []
        if not isinstance(steps, (list, tuple)):
            raise AugmentError(f"{where}: expected a list of operations, got {steps!r}")
        ops, seen_pixel = [], None
        for i, step in enumerate(steps):
            at = f"{where}[{i}]"
            if not isinstance(step, dict) or "op" not in step:
                raise AugmentError(f"{at}: expected a mapping with an 'op' key, e.g. {{op: rotate, p: 0.9}}; got {step!r}")
            name = step["op"]
            if name not in OPS:
                raise AugmentError(f"{at}: unknown op {name!r}" + _suggest(name, OPS))
            op_cls = OPS[name]
            at = f"{at} ({name})"
            declared = {"p": PROB, **op_cls.params}
            for key in step:
                if key != "op" and key not in declared:
                    raise AugmentError(f"{at}: unknown parameter {key!r}" + _suggest(key, declared))
            values = {}
            for key, param in declared.items():
                raw = step.get(key, param.default)
                if key == "seed" and raw is None:
                    values[key] = int(seed)
                    continue
                values[key] = param.check(f"{at}.{key}", list(raw) if isinstance(raw, tuple) else raw)
            if op_cls.kind == "pixel":
                seen_pixel = seen_pixel or name
            elif seen_pixel:
                raise AugmentError(f"{at}: geometric op after pixel op '{seen_pixel}'; geometric ops are fused into "
                                   "one resample, so list them first")
            ops.append(op_cls(i, values))
        return cls(ops, seed)

    @classmethod
    def from_spec(cls, spec: dict) -> "Pipeline":
        return cls.parse(spec["pipeline"], spec["seed"])

    def spec(self) -> dict:
        """A small JSON-able description that `from_spec` turns back into this pipeline."""
        return {"seed": self.seed, "pipeline": [op.spec() for op in self.ops]}

    @property
    def geometric(self) -> list:
        return [op for op in self.ops if op.kind != "pixel"]

    def scramble(self) -> Optional[Scramble]:
        found = [op for op in self.ops if isinstance(op, Scramble)]
        return found[0] if found else None

    # -- the work

    def draw(self, keys: np.ndarray, h: int, w: int) -> list:
        """Per op: (applied mask, drawn parameters) for every image."""
        out = []
        for op in self.ops:
            d = op.draw(keys, h, w)
            d["_n"] = len(keys)
            out.append((op.applied(keys), d))
        return out

    def apply(self, images: np.ndarray, source_ids, samples, lineage: bool = False):
        """Augment (N,H,W,C) uint8 images; output image i is a function of (seed, source_ids[i], samples[i], images[i]).

        Returns the images (same shape and dtype) and, with lineage=True, one JSON string per image
        listing the ops applied and their drawn parameters.
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise AugmentError(f"augment expects (N,H,W,C) uint8 images, got {images.dtype} {images.shape}")
        n, h, w, c = images.shape
        if n == 0 or not self.ops:
            return (images.copy(), ["[]"] * n) if lineage else images.copy()
        keys = image_keys(self.seed, source_ids, samples)
        draws = self.draw(keys, h, w)
        warped = self._warp(images, draws)
        base = images if warped is None else warped
        x = None
        for op, (mask, d) in zip(self.ops, draws):
            if op.kind != "pixel" or not mask.any():
                continue
            if x is None:
                x = _buffer("pixels", base.shape, np.float32)
                x[...] = base
            values = {k: v for k, v in d.items() if k != "_n"}
            if mask.all():
                op.apply(x, values, keys)
                continue
            idx = np.flatnonzero(mask)
            sub = x[idx]
            op.apply(sub, {k: v[idx] for k, v in values.items()}, keys[idx])
            x[idx] = sub
        if x is not None:
            out = _to_uint8(x)
        else:
            out = base.copy() if warped is None else warped
        if not lineage:
            return out
        return out, self._lineage(draws, n)

    def _warp(self, images, draws) -> Optional[np.ndarray]:
        """One resample for all geometric ops, or None when no image has any applied.

        Images are grouped by their path through the chain (`_paths`) and each group is resampled
        in chunks; an image's coordinates are computed the same way whatever else is in its chunk.
        """
        n, h, w, c = images.shape
        geo = [(op, mask, d) for op, (mask, d) in zip(self.ops, draws) if op.kind != "pixel"]
        if not geo:
            return None
        paths = _paths(geo)
        todo = np.flatnonzero(paths)
        if not len(todo):
            return None
        # per matrix op, every image's matrix, the identity where the op is not applied
        steps = [(op, mask, d if op.kind == "elastic" else
                  op.matrix(d, h, w) if mask.all() else np.where(mask[:, None, None], op.matrix(d, h, w), _EYE))
                 for op, mask, d in geo]
        out = images.copy()
        chunk = _chunk_images(h, w)
        for path in np.unique(paths[todo]).tolist():
            group = todo[paths[todo] == path]
            for start in range(0, len(group), chunk):
                part = group[start:start + chunk]
                u, v, exact = _coordinates(steps, part, h, w, projective=bool(path & 2))
                out[part] = _resample(images[part], u, v, exact)
        return out

    def _lineage(self, draws, n) -> list:
        applied = []
        for op, (mask, d) in zip(self.ops, draws):
            items = [(k, v) for k, v in d.items() if k != "_n" and v.ndim == 1]
            applied.append((op, mask, items))
        out = []
        for i in range(n):
            parts = []
            for op, mask, items in applied:
                if mask[i]:
                    fields = ", ".join(f'"{k}": {_num(v[i])}' for k, v in items)
                    parts.append(f'{{"op": "{op.name}"' + (", " + fields if fields else "") + "}")
            out.append("[" + ", ".join(parts) + "]")
        return out

    def permutation_record(self, h: int, w: int) -> Optional[dict]:
        op = self.scramble()
        if op is None:
            return None
        return {"seed": op.values["seed"], "height": h, "width": w,
                "permutation": op.permutation(h, w).tolist()}


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Float pixels rounded half to even and clipped to 0..255, as np.clip(np.rint(x), 0, 255) would
    (negatives are zeroed first; OpenCV's saturating conversion rounds and caps at 255)."""
    cv2 = _cv2()
    flat = x.reshape(len(x), -1)
    cv2.threshold(flat, 0, 0, cv2.THRESH_TOZERO, dst=flat)
    return cv2.convertScaleAbs(flat).reshape(x.shape)


def _num(v) -> str:
    if isinstance(v, (np.bool_, bool)):
        return "true" if v else "false"
    if isinstance(v, (np.integer, int)):
        return str(int(v))
    return json.dumps(float(f"{float(v):.6g}"))


# ---------------------------------------------------------------- resampling
#
# Coordinates are output->input, per image: float64 for the 3x3 matrices, float32 for the
# per-pixel arrays, elementwise arithmetic whose result cannot depend on how many images are
# computed together (no BLAS sums whose order could change with the batch; the one matrix
# product used multiplies by exactly 1).  A chunk of images is resampled by ONE cv2.remap: the
# images are stacked into one tall image, each followed by a black row and with _PAD black
# columns each side; y is clipped to [-1, h] (the black rows) and gets the image's row offset in
# the stack.  The offset must not change OpenCV's rounding of y to 1/32 pixel (INTER_LINEAR's
# precision), so before it is added y is a multiple of 1/256 that float32 holds exactly, and the
# sum is exact too; 32 x the integer offset is even, so rounding half to even lands on the same
# sub-pixel at every offset.  x needs neither: no other image lies left or right of it.

_EYE = np.eye(3)
_PAD = 8                   # black columns each side: OpenCV's fast path covers samples up to 8 pixels out
_Q = 256.0                 # y's quantum before the offset is added
_EXACT = 2.0 ** 14         # row and column parts both below this: their sum is exact in float32
_MAX_STACK_ROWS = 32000    # cv2.remap addresses rows and columns with int16
_CHUNK_PIXELS = 1 << 18    # output pixels per remap: the coordinate arrays stay in cache
_POOL_BYTES = 64 << 20     # larger working arrays are not kept between calls


_scratch = threading.local()


def _buffer(name: str, shape: tuple, dtype, zeros: bool = False) -> np.ndarray:
    """A per-thread working array, reused from call to call (fresh arrays of a few MB cost page faults
    that add up to as much as the arithmetic).  zeros: allocated zeroed, for callers that keep parts
    of it black (never written) and overwrite the rest."""
    size = int(np.prod(shape))
    if size * np.dtype(dtype).itemsize > _POOL_BYTES:
        return (np.zeros if zeros else np.empty)(shape, dtype)
    pool = getattr(_scratch, "pool", None)
    if pool is None:
        pool = _scratch.pool = {}
    key = (name, np.dtype(dtype).str, shape[1:] if zeros else ())
    buf = pool.get(key)
    if buf is None or buf.size < size:
        buf = pool[key] = (np.zeros if zeros else np.empty)(size, dtype)
    return buf[:size].reshape(shape)


def _chunk_images(h: int, w: int) -> int:
    if h + 1 > _MAX_STACK_ROWS or w + 2 * _PAD > _MAX_STACK_ROWS:
        raise AugmentError(f"images of {h}x{w} are too large to resample (at most {_MAX_STACK_ROWS - 1} a side)")
    return max(1, min(_MAX_STACK_ROWS // (h + 1), _CHUNK_PIXELS // (h * w)))


def _cv2():
    import cv2
    cv2.setNumThreads(1)   # one Spark task or input pipeline = one core; parallelism comes from Spark
    return cv2


def _paths(geo) -> np.ndarray:
    """Per image, a number naming its path through the geometric chain; 0: no op applied to it.

    Walking the chain last op first (output towards input), matrices are multiplied together until
    an elastic op, which needs the coordinates reached so far as float32 arrays.  Two images share a
    path when the same elastic ops apply to both, each with matrices pending before it for both or
    neither, and the remaining matrices are projective (a skew applies) for both or neither.  Images
    are resampled path by path, so no image's arithmetic depends on the others in its chunk: an
    elastic op applied to a neighbour must not split this image's matrix product into float32 steps.
    """
    n = len(geo[0][1])
    pending, projective = np.zeros(n, bool), np.zeros(n, bool)
    columns = []
    for op, mask, _ in reversed(geo):
        if op.kind == "elastic":
            columns += [mask, mask & pending]
            pending &= ~mask
            projective &= ~mask
        else:
            pending |= mask
            if isinstance(op, Skew):
                projective |= mask
    bits = [pending, projective] + columns
    if len(bits) > 62:
        raise AugmentError(f"at most 30 elastic ops in one pipeline, got {len(columns) // 2}")
    path = np.zeros(n, np.int64)
    for i, bit in enumerate(bits):
        path |= bit.astype(np.int64) << i
    return path   # bit 1 is the projective flag, as _warp reads it; 0 when no op applies


def _coordinates(steps, part, h, w, projective: bool):
    """Input coordinates of every output pixel of images `part`, in the resampler's frame (x + _PAD, y + 1).

    Returns (u, v, exact): float32 (k, H, W) arrays; exact when v is already a multiple of 1/_Q.
    All images of `part` share a path (_paths), so each test below has one answer for all of them.
    """
    acc = None
    u = v = None
    framed = False
    walk = steps[::-1]
    for i, (op, mask, x) in enumerate(walk):
        if op.kind == "elastic":
            if not mask[part[0]]:
                continue
            d = {key: val[part] for key, val in x.items() if key != "_n"}
            if u is None and acc is None:
                framed = not any(m[part[0]] if o.kind == "elastic" else m[part].any() for o, m, _ in walk[i + 1:])
                u, v = op.displace_grid(d, h, w, framed)
            else:
                if acc is not None:
                    u, v = _transform(acc, u, v, h, w)
                u, v = op.displace(d, u, v, h, w)
            acc = None
            continue
        sel = mask[part]
        if sel.any():
            acc = x[part] if acc is None else _matmul(acc, x[part])
    if u is None:
        acc = _framed(acc)
        if projective:
            u, v = _transform(acc, None, None, h, w)
            return u, v, False
        return _affine_grid(acc, h, w)
    if acc is not None:
        u, v = _transform(_framed(acc), u, v, h, w)
    elif not framed:
        u += np.float32(_PAD)
        v += np.float32(1)
    return u, v, False


def _framed(acc):
    """acc followed by the shift into the stack's frame: x + _PAD, y + 1 (see _resample)."""
    out = acc.copy()
    out[:, 0] += _PAD * acc[:, 2]
    out[:, 1] += acc[:, 2]
    return out


def _matmul(a, b):
    """Per-image a @ b of (k, 3, 3) float64, summed in a fixed order (an identity factor is exact)."""
    return (a[:, :, 0, None] * b[:, None, 0, :] + a[:, :, 1, None] * b[:, None, 1, :]
            + a[:, :, 2, None] * b[:, None, 2, :])


def _outer_sums(parts):
    """[(cols (k, H), rows (k, W)), ...] -> float32 (len(parts), k, H, W): each pixel's column part plus its row part.

    As one batched matrix product [cols, 1] @ [1; rows]: both products are by exactly 1, so
    every summation order (BLAS or not) gives the same single rounding of cols + rows.
    """
    m = len(parts)
    k, h, w = len(parts[0][0]), parts[0][0].shape[1], parts[0][1].shape[1]
    a = _buffer("outer_cols", (m, k, h, 2), np.float32)
    b = _buffer("outer_rows", (m, k, 2, w), np.float32)
    for i, (cols, rows) in enumerate(parts):
        a[i, :, :, 0] = cols
        b[i, :, 1, :] = rows
    a[..., 1] = 1
    b[..., 0, :] = 1
    return np.matmul(a, b, out=_buffer("outer", (m, k, h, w), np.float32))


def _affine_grid(acc, h, w):
    """Affine acc on the output grid: a x + b y + c is (a x) + (b y + c), one vector per column and one per row.

    y's two parts are rounded to multiples of 1/_Q, so their float32 sum is exact (see above) unless
    a zoom-out far beyond the image makes them large, when `exact` is False and _resample rounds.
    """
    xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    vy = np.rint((acc[:, 1, 1, None] * ys + acc[:, 1, 2, None]) * _Q) / _Q
    vx = np.rint(acc[:, 1, 0, None] * xs * _Q) / _Q
    exact = bool(np.abs(vy).max() < _EXACT and np.abs(vx).max() < _EXACT)
    u, v = _outer_sums([(acc[:, 0, 1, None] * ys + acc[:, 0, 2, None], acc[:, 0, 0, None] * xs), (vy, vx)])
    return u, v, exact


def _transform(acc, u, v, h, w):
    """Per-image 3x3 matrices applied to coordinates (k, H, W), or to the output grid (u is None).

    Always divides by the third row: for an affine matrix that is 1 exactly, so affine and
    projective images in one chunk get the same values they would alone.
    """
    k = len(acc)
    if u is None:
        xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
        nu, nv, den = _outer_sums([(acc[:, r, 1, None] * ys + acc[:, r, 2, None], acc[:, r, 0, None] * xs)
                                   for r in range(3)])
    else:
        a = acc.astype(np.float32)
        u, v = u.reshape(k, -1), v.reshape(k, -1)
        tmp = np.empty_like(u)

        def row(r):
            out = np.multiply(a[:, r, 0, None], u)
            np.multiply(a[:, r, 1, None], v, out=tmp)
            out += tmp
            out += a[:, r, 2, None]
            return out.reshape(k, h, w)
        nu, nv, den = row(0), row(1), row(2)
    with np.errstate(divide="ignore", invalid="ignore"):
        nu /= den
        nv /= den
    for arr in (nu, nv):   # beyond a skew's horizon: outside the image
        arr[~np.isfinite(arr)] = -1e6
    return nu, nv


@functools.lru_cache(maxsize=16)
def _grid_cells(h: int, w: int, gw: int, gh: int):
    """Per output column its grid cell x0 and weight tx, per output row y0 and ty (corner-aligned grid)."""
    fx = np.arange(w, dtype=np.float32) * np.float32(gw / max(w - 1, 1))
    fy = np.arange(h, dtype=np.float32) * np.float32(gh / max(h - 1, 1))
    x0 = np.minimum(np.floor(fx), np.float32(gw - 1))
    y0 = np.minimum(np.floor(fy), np.float32(gh - 1))
    return x0.astype(np.intp), fx - x0, y0.astype(np.intp), fy - y0


@functools.lru_cache(maxsize=16)
def _row_weights(k: int, h: int, w: int, gh: int) -> np.ndarray:
    """Float32 (k, H*W): every pixel's ty, the weight of grid row y0 + 1 (see Elastic.displace_grid)."""
    ty = _grid_cells(h, w, 1, gh)[3]
    out = np.ascontiguousarray(np.broadcast_to(np.repeat(ty, w), (k, h * w)))
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def _row_offsets(k: int, h: int, w: int) -> np.ndarray:
    """Float32 (k, H*W): where image i's row -1 is in the stack (v = y + 1 is added), for every one of its pixels."""
    out = np.repeat((np.arange(k, dtype=np.float32) * np.float32(h + 1) - np.float32(1))[:, None], h * w, axis=1)
    out.flags.writeable = False
    return out


def _resample(images: np.ndarray, u: np.ndarray, v: np.ndarray, exact: bool) -> np.ndarray:
    """Bilinear sample of (k,H,W,C) uint8 at frame coordinates u = x + _PAD, v = y + 1 (float32 (k,H,W)); outside is 0.

    The maps are handed to OpenCV as (k, H*W) rather than (k*H, W): its per-row overhead is paid
    once per image instead of once per image row.
    """
    cv2 = _cv2()
    k, h, w, c = images.shape
    rows, cols = (k, h * w) if h * w < _MAX_STACK_ROWS else (k * h, w)
    u, v = np.ascontiguousarray(u).reshape(rows, cols), np.ascontiguousarray(v).reshape(rows, cols)
    cv2.threshold(v, 0, 0, cv2.THRESH_TOZERO, dst=v)        # y < -1: the black row above (NaN too)
    cv2.threshold(v, h + 1, 0, cv2.THRESH_TRUNC, dst=v)     # y > h: the black row below
    if not exact:
        v *= np.float32(_Q)
        np.rint(v, out=v)
        v *= np.float32(1 / _Q)
    cv2.add(v, _row_offsets(k, h, w).reshape(rows, cols), dst=v)
    stacked = _buffer("stacked", (k, h + 1, w + 2 * _PAD, c), np.uint8, zeros=True)   # the margins stay black
    stacked[:, :h, _PAD:_PAD + w] = images
    src = stacked.reshape(k * (h + 1), w + 2 * _PAD, c)
    dst = _buffer("resampled", (rows, cols, c) if c > 1 else (rows, cols), np.uint8)
    cv2.remap(src if c > 1 else src[..., 0], u, v, cv2.INTER_LINEAR, dst=dst,
              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return dst.reshape(k, h, w, c)
