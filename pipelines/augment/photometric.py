"""Pixel ops: brightness, contrast, noise, erase and scramble, array arithmetic on the batch.

They act in place on float32 (n, H, W, C) arrays of the images they apply to, after the geometric
resample (Pipeline rounds back to uint8 once at the end).  Per-pixel random numbers come from
pipelines.augment.draws, so they too depend only on each image's identity.
"""
from __future__ import annotations

import math

import numpy as np

from pipelines.augment.draws import (
    _TAG_STRIDE,
    pixel_normal,
    pixel_uniform255_at,
    scramble_permutation,
)
from pipelines.augment.params import Op, Param


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
        x[...] = permute_pixels(x, self.permutation(*x.shape[1:3]))


def permute_pixels(images: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Output pixel i of every image takes input pixel permutation[i] (channels move together)."""
    n, h, w, c = images.shape
    return images.reshape(n, h * w, c)[:, permutation].reshape(images.shape)
