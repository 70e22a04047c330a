"""Colour ops: brightness, contrast, hue/saturation and colour jitter, each a per-image affine colour map.

Every op here changes a pixel's colour v (C channels) to M v + t, with M (C x C) and t drawn per
image; contrast's t also depends on the image's mean, which is itself an affine function of the
mean before the op.  So a run of colour ops is one map per image, and pipelines.augmentation.pixels
applies it to the uint8 pixels in one pass (cv2.transform's integer path) instead of op by op in
float32: that single pass is what makes them fast at photo sizes.  Each op's `apply` is the same
computation on float32 pixels, used after an op that needs floats (noise) and as the reference
the fused path is tested against (within one grey level).

Hue and saturation act on RGB (C == 3) and leave other images unchanged.  Saturation blends each
pixel with its grey value (luma weights 0.299, 0.587, 0.114, as PIL and torchvision); hue rotates
the colour about the grey axis of the RGB cube by an angle (positive: red towards green; 120
degrees maps red to green exactly), which keeps a pixel's grey mean and chroma.  It is a linear
hue rotation (as CSS's hue-rotate), not a shift of HSV's hexcone hue: close for moderate angles,
and a matrix, so it fuses with the other colour ops.
"""
from __future__ import annotations

import math

import numpy as np

from pipelines.augmentation.geometric import _cos_sin
from pipelines.augmentation.params import Op, Param

LUMA = np.array([0.299, 0.587, 0.114])


def identity_maps(n: int, c: int):
    """(M, t) of n images doing nothing: M (n, C, C) identities, t (n, C) zeros (float64)."""
    return np.broadcast_to(np.eye(c), (n, c, c)).copy(), np.zeros((n, c))


def compose(outer, inner):
    """outer after inner, per image: (Mo Mi, Mo ti + to), summed in a fixed order (no BLAS: no value
    may depend on how many images are composed together)."""
    mo, to = outer
    mi, ti = inner
    c = mo.shape[1]
    m = sum(mo[:, :, k, None] * mi[:, None, k, :] for k in range(c))
    t = sum(mo[:, :, k] * ti[:, k, None] for k in range(c)) + to
    return m, t


def mapped_means(colour_map, means):
    """Per-channel means (n, C) after the map, from the means before it (a map is affine: exact in reals)."""
    m, t = colour_map
    return sum(m[:, :, k] * means[:, k, None] for k in range(m.shape[1])) + t


def scale_map(factor, c: int):
    """Multiply every channel by factor (n,)."""
    m, t = identity_maps(len(factor), c)
    return m * factor[:, None, None], t


def contrast_map(factor, means):
    """Scale each image's deviation from its mean over all values (the average of its channel means)."""
    n, c = means.shape
    mean = means.mean(axis=1)
    m, t = scale_map(factor, c)
    return m, np.repeat((mean * (1.0 - factor))[:, None], c, axis=1)


def saturation_map(factor, c: int):
    """Blend every pixel with its grey value: s v + (1 - s) (luma . v) on every channel; no change unless RGB."""
    m, t = identity_maps(len(factor), c)
    if c == 3:
        m = m * factor[:, None, None] + ((1.0 - factor)[:, None, None] * LUMA[None, None, :])
    return m, t


def hue_map(degrees, c: int):
    """Rotate colours about the grey axis (1, 1, 1) by degrees (Rodrigues' formula); no change unless RGB."""
    m, t = identity_maps(len(degrees), c)
    if c != 3:
        return m, t
    cos, sin = _cos_sin(degrees)
    third = (1.0 - cos) / 3.0
    root = sin / math.sqrt(3.0)
    # cos I + (1 - cos) k k^T + sin [k]x, k = (1, 1, 1) / sqrt(3)
    diag, plus, minus = cos + third, third + root, third - root
    m = np.stack([np.stack([diag, minus, plus], 1), np.stack([plus, diag, minus], 1),
                  np.stack([minus, plus, diag], 1)], 1)
    return m, t


def apply_map_float(x: np.ndarray, colour_map) -> None:
    """x (n, H, W, C) float32 <- M x + t per image, in place."""
    m, t = colour_map
    n, c = x.shape[0], x.shape[-1]
    src = x.reshape(n, -1, c).copy()
    out = x.reshape(n, -1, c)
    for j in range(c):
        acc = src[:, :, 0] * m[:, j, 0, None].astype(np.float32)
        for k in range(1, c):
            acc += src[:, :, k] * m[:, j, k, None].astype(np.float32)
        acc += t[:, j, None].astype(np.float32)
        out[:, :, j] = acc


def float_means(x: np.ndarray) -> np.ndarray:
    """Per-image, per-channel means (n, C) of float pixels, in float64."""
    return x.reshape(len(x), -1, x.shape[-1]).mean(axis=1, dtype=np.float64)


class ColourOp(Op):
    """A pixel op whose effect is an affine colour map per image (see the module docstring)."""
    kind, mode = "pixel", "colour"
    needs_means = False   # whether colour_map reads means (only their average over channels): a pass over the pixels

    def colour_map(self, d: dict, means: np.ndarray):
        """(M (n, C, C), t (n, C)) float64 of the images in d, whose per-channel means are `means` (n, C)."""
        raise NotImplementedError

    def apply(self, x, d, keys):
        apply_map_float(x, self.colour_map(d, float_means(x)))


class Brightness(ColourOp):
    name, doc = "brightness", "multiply pixel values by a factor"
    params = {"factor": Param("range", (0.8, 1.2), 0.0, 10.0)}

    def draw(self, keys, h, w):
        return {"factor": self.between(keys, 1, self.values["factor"])}

    def colour_map(self, d, means):
        return scale_map(d["factor"], means.shape[1])

    def apply(self, x, d, keys):
        x *= d["factor"].astype(np.float32)[:, None, None, None]


class Contrast(ColourOp):
    name, doc = "contrast", "scale each image's deviation from its mean by a factor"
    needs_means = True
    params = {"factor": Param("range", (0.8, 1.2), 0.0, 10.0)}

    def draw(self, keys, h, w):
        return {"factor": self.between(keys, 1, self.values["factor"])}

    def colour_map(self, d, means):
        return contrast_map(d["factor"], means)

    def apply(self, x, d, keys):
        mean = x.reshape(len(x), -1).mean(axis=1, dtype=np.float64).astype(np.float32)[:, None, None, None]
        x -= mean
        x *= d["factor"].astype(np.float32)[:, None, None, None]
        x += mean


class HueSaturation(ColourOp):
    name = "hue_saturation"
    doc = ("rotate hue by degrees (about the grey axis, see pipelines.augmentation.colour) and scale saturation by "
           "a factor (0: grey); RGB only, other images pass unchanged")
    params = {"hue": Param("range", (-20.0, 20.0), -180.0, 180.0, doc="hue rotation, degrees"),
              "saturation": Param("range", (0.8, 1.2), 0.0, 10.0, doc="saturation factor")}

    def draw(self, keys, h, w):
        return {"hue": self.between(keys, 1, self.values["hue"]),
                "saturation": self.between(keys, 2, self.values["saturation"])}

    def colour_map(self, d, means):
        c = means.shape[1]
        return compose(hue_map(d["hue"], c), saturation_map(d["saturation"], c))


class ColourJitter(ColourOp):
    name = "colour_jitter"
    needs_means = True
    doc = ("torchvision's ColorJitter in a fixed order: brightness, contrast, saturation (factors) and hue "
           "(degrees about the grey axis); one fused colour map per image")
    params = {"brightness": Param("range", (0.8, 1.2), 0.0, 10.0, doc="brightness factor"),
              "contrast": Param("range", (0.8, 1.2), 0.0, 10.0, doc="contrast factor"),
              "saturation": Param("range", (0.8, 1.2), 0.0, 10.0, doc="saturation factor"),
              "hue": Param("range", (-18.0, 18.0), -180.0, 180.0, doc="hue rotation, degrees")}

    def draw(self, keys, h, w):
        return {name: self.between(keys, j, self.values[name])
                for j, name in enumerate(("brightness", "contrast", "saturation", "hue"), start=1)}

    def colour_map(self, d, means):
        c = means.shape[1]
        total = scale_map(d["brightness"], c)
        total = compose(contrast_map(d["contrast"], mapped_means(total, means)), total)
        total = compose(saturation_map(d["saturation"], c), total)
        return compose(hue_map(d["hue"], c), total)
