"""Pixel ops: noise, erase and scramble (the colour ops are in pipelines.augmentation.colour).

Each op declares the pixels it works on (`mode`, read by pipelines.augmentation.pixels): noise needs
float32 (n, H, W, C) pixels and acts on them in place; erase writes its box into the uint8 images
(`apply_uint8`), or into float pixels after an op that needed them; scramble moves pixels and works
on either.  Per-pixel random numbers come from pipelines.augmentation.draws, so they too depend only on
each image's identity.
"""
from __future__ import annotations

import math

import numpy as np

from pipelines.augmentation.draws import (
    _IRWIN_SCALE,
    _NORMAL_PIECE,
    _TAG_STRIDE,
    box_bytes,
    pixel_bytes_at,
    pixel_normal_into,
    pixel_uniform255_at,
    scramble_permutation,
    stream_bits,
)
from pipelines.augmentation.params import Op, Param
from pipelines.augmentation.resample import per_image_calls, round_to_uint8


class Noise(Op):
    mode = "float"
    name, kind, doc = "noise", "pixel", "add gaussian noise, sigma (in pixel units 0-255) drawn per image"
    params = {"sigma": Param("range", (0.0, 10.0), 0.0, 255.0)}

    def draw(self, keys, h, w):
        return {"sigma": self.between(keys, 1, self.values["sigma"])}

    def apply(self, x, d, keys):
        flat = x.reshape(len(x), -1)
        for j, start, piece in self._pieces(d, keys, flat.shape[1]):
            flat[j, start:start + len(piece)] += piece

    def apply_uint8_to(self, src, dst, idx, d, keys):
        """dst[i] = src[i] + noise rounded to uint8, for the images idx ((N, H, W, C); dst may be src): the
        float32 arithmetic of `apply` and the rounding pipelines.augmentation.pixels would do after it, a
        piece at a time in cache.  pixels calls it only when no later op reads float pixels."""
        flat_src, flat_dst = src.reshape(len(src), -1), dst.reshape(len(dst), -1)
        pixels = np.empty(min(flat_src.shape[1], _NORMAL_PIECE), np.float32)
        rows = idx.tolist()
        for j, start, piece in self._pieces(d, keys, flat_src.shape[1]):
            x = pixels[:len(piece)]
            x[...] = flat_src[rows[j], start:start + len(piece)]
            x += piece
            round_to_uint8(x, flat_dst[rows[j], start:start + len(piece)])

    def _pieces(self, d, keys, size: int):
        """(j, start, sigma_j x normal values start .. of image j's stream), image by image, piece by piece:
        the hashes stay in cache (draws.pixel_normal_into).  The piece array is reused."""
        scales = (d["sigma"].astype(np.float32) * _IRWIN_SCALE).tolist()   # float32 products, as Python floats
        bits = stream_bits(keys, self.index * _TAG_STRIDE + 63).tolist()
        z = np.empty(min(size, _NORMAL_PIECE), np.float32)
        for j in range(len(keys)):
            for start in range(0, size, _NORMAL_PIECE):
                piece = z[:min(_NORMAL_PIECE, size - start)]
                pixel_normal_into(bits[j], start, piece, scales[j])   # sigma x the unit normal
                yield j, start, piece


class Erase(Op):
    mode = "uint8"
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

    def apply_uint8(self, images, d, keys):
        """The same box and fill on uint8 images (n, H, W, C), in place: a slice per image, and for
        noise only the box's pixels hashed (the whole image is never copied); small images all at once."""
        n, h, w, c = images.shape
        if not per_image_calls(h, w):   # small images: every box of the batch at once
            image, pixel = _box_pixels(d["y0"], d["x0"], d["height"], d["width"], h, w, c)
            flat = images.reshape(n, h * w * c)
            if self.values["fill"] == "noise":
                flat[image, pixel] = pixel_bytes_at(keys, self.index * _TAG_STRIDE + 63, image, pixel)
            else:
                flat[image, pixel] = self.values["fill"]
            return
        y0, x0, eh, ew = (d[k].tolist() for k in ("y0", "x0", "height", "width"))
        if self.values["fill"] != "noise":
            for i in range(n):
                images[i, y0[i]:y0[i] + eh[i], x0[i]:x0[i] + ew[i]] = self.values["fill"]
            return
        fills = box_bytes(stream_bits(keys, self.index * _TAG_STRIDE + 63), (d["y0"] * w + d["x0"]) * c,
                          d["height"], d["width"] * c, w * c)   # every box of the batch hashed at once
        for i, fill in enumerate(fills):
            images[i, y0[i]:y0[i] + eh[i], x0[i]:x0[i] + ew[i]] = fill.reshape(eh[i], ew[i], c)


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
    mode = "any"   # moves pixels, whatever their type; commutes with colour maps (a mean ignores order)
    name, kind = "scramble", "pixel"
    doc = ("the seeds' scrambled digits: one fixed pixel permutation for the whole dataset, from `seed` "
           "(default: augment.seed); recorded in the output's metadata so the test set gets the same one")
    params = {"seed": Param("int", None)}

    def permutation(self, h, w) -> np.ndarray:
        return scramble_permutation(self.values["seed"], h, w)

    def apply(self, x, d, keys):
        x[...] = permute_pixels(x, self.permutation(*x.shape[1:3]))

    def apply_uint8(self, images, d, keys):
        self.apply(images, d, keys)


def permute_pixels(images: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Output pixel i of every image takes input pixel permutation[i] (channels move together)."""
    n, h, w, c = images.shape
    return images.reshape(n, h * w, c)[:, permutation].reshape(images.shape)
