"""Image augmentation pipelines, vectorised over batches and reproducible per image.

Pure numpy and OpenCV (no TensorFlow, no Spark): the Spark stage (pipelines.augment.remote), the
on-the-fly training input and the benchmark all call `Pipeline.apply`.

Speed: every geometric operation (rotate, rotate90, shift, shear, zoom, crop,
flips, skew) is a 3x3 output->input matrix; a pipeline composes them into ONE
projective transform per image and resamples once: small images (MNIST) by one
bilinear cv2.remap for a few hundred images stacked into one tall image, photos
(64x64 and up) by one cv2.warpAffine / warpPerspective each (a plain copy or
cv2.flip when the matrix only moves whole pixels).  Elastic distortion is a
displacement field added to that same sampling grid, so a chain of any length
costs one resample.  resized_crop, listed first, is a cv2.resize of each image's
box before that.  Pixel operations (pipelines.augmentation.pixels): colour ops
(brightness, contrast, hue_saturation, colour_jitter) fuse into one affine colour
map per image applied to the uint8 pixels in one pass; erase, blur and jpeg work
on uint8 images one OpenCV call each; noise (and anything after it) is float32
arithmetic.  Augmentor instead calls PIL once per operation per image.

Reproducibility: every random number of output image (source_id, sample) is a
counter-based hash of (seed, source_id, sample, op index, draw index): nothing
depends on batch, partition or executor, so the same seed gives byte-identical
images however the data is split.  Per-image trigonometry uses Python's math
(libm) rather than numpy's SIMD kernels so no value depends on its position in
a batch.

Order: geometric ops are fused into one resample, so the conf must list them
before pixel ops (an error says so otherwise), and resized_crop before both;
within the pixel group the conf order is the order of application.

Layout: this module holds the OPS table (conf name -> op class) and Pipeline (parse a conf,
apply it to a batch, lineage); the ops are in pipelines.augmentation.geometric, .colour, .photometric
and .filters, built on pipelines.augmentation.params (Param, Op, AugmentError); their random numbers
are in pipelines.augmentation.draws, the single resample in pipelines.augmentation.resample and the pixel
ops' runner in pipelines.augmentation.pixels.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from pipelines.augmentation.colour import Brightness, ColourJitter, Contrast, HueSaturation
from pipelines.augmentation.draws import image_keys
from pipelines.augmentation.filters import Blur, Jpeg
from pipelines.augmentation.geometric import (
    Crop,
    Elastic,
    FlipLR,
    FlipTB,
    ResizedCrop,
    Rotate,
    Rotate90,
    Shear,
    Shift,
    Skew,
    Zoom,
)
from pipelines.augmentation.params import PROB, AugmentError, _num
from pipelines.augmentation.photo_warps import warp_each
from pipelines.augmentation.photometric import Erase, Noise, Scramble
from pipelines.augmentation.pixels import run_pixel_ops
from pipelines.augmentation.resample import (
    _EYE,
    _chunk_images,
    _coordinates,
    _matrix_product,
    _resample,
    per_image_calls,
)
from pipelines.core.config import suggest

OPS = {cls.name: cls for cls in (ResizedCrop, Rotate, Rotate90, Shift, Shear, Zoom, Crop, FlipLR, FlipTB, Skew,
                                 Elastic, Brightness, Contrast, HueSaturation, ColourJitter, Noise, Erase, Blur,
                                 Jpeg, Scramble)}


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
                raise AugmentError(f"{at}: unknown op {name!r}" + suggest(name, OPS))
            op_cls = OPS[name]
            at = f"{at} ({name})"
            declared = {"p": PROB, **op_cls.params}
            for key in step:
                if key != "op" and key not in declared:
                    raise AugmentError(f"{at}: unknown parameter {key!r}" + suggest(key, declared))
            values = {}
            for key, param in declared.items():
                raw = step.get(key, param.default)
                if key == "seed" and raw is None:
                    values[key] = int(seed)
                    continue
                values[key] = param.check(f"{at}.{key}", list(raw) if isinstance(raw, tuple) else raw)
            if op_cls.kind == "crop" and ops:
                raise AugmentError(f"{at}: {name} is resampled on its own before the other ops, so it must be "
                                   f"the first op (here after '{ops[-1].name}')")
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

    def apply(self, images: np.ndarray, source_ids, samples, lineage: bool = False, float_reference: bool = False):
        """Augment (N,H,W,C) uint8 images; output image i is a function of (seed, source_ids[i], samples[i], images[i]).

        Returns the images (same shape and dtype) and, with lineage=True, one JSON string per image
        listing the ops applied and their drawn parameters.  float_reference: run every pixel op in
        float32 (the slow route the fused uint8 one is tested against, see pipelines.augmentation.pixels).
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise AugmentError(f"augment expects (N,H,W,C) uint8 images, got {images.dtype} {images.shape}")
        n, h, w, c = images.shape
        if n == 0 or not self.ops:
            return (images.copy(), ["[]"] * n) if lineage else images.copy()
        keys = image_keys(self.seed, source_ids, samples)
        draws = self.draw(keys, h, w)
        cropped = self._crop(images, draws)
        base = images if cropped is None else cropped
        warped = self._warp(base, draws)
        base = base if warped is None else warped
        steps = [(op, mask, {k: v for k, v in d.items() if k != "_n"})
                 for op, (mask, d) in zip(self.ops, draws) if op.kind == "pixel"]
        out = run_pixel_ops(steps, base, keys, float_reference, owned=base is not images)
        if not lineage:
            return out
        return out, self._lineage(draws, n)

    def _crop(self, images, draws) -> Optional[np.ndarray]:
        """The resized crop (listed first, if at all) of the images it applies to, or None."""
        for op, (mask, d) in zip(self.ops, draws):
            if op.kind != "crop" or not mask.any():
                continue
            idx = np.flatnonzero(mask)
            out = np.empty_like(images)
            out[~mask] = images[~mask]
            op.resize(images, idx, {k: v[idx] for k, v in d.items() if k != "_n"}, out)
            return out
        return None

    def _warp(self, images, draws) -> Optional[np.ndarray]:
        """One resample for all geometric ops, or None when no image has any applied.

        Images are grouped by their path through the chain (`_paths`) and each group is resampled
        in chunks; an image's coordinates are computed the same way whatever else is in its chunk.
        """
        n, h, w, c = images.shape
        geo = [(op, mask, d) for op, (mask, d) in zip(self.ops, draws) if op.kind in ("geometric", "elastic")]
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
        out = np.empty_like(images)
        out[paths == 0] = images[paths == 0]
        chunk = _chunk_images(h, w)
        each = per_image_calls(h, w)
        for path in np.unique(paths[todo]).tolist():
            group = todo[paths[todo] == path]
            if each and path < 4:   # matrices only (bits 2 and up are elastic ops)
                warp_each(images, group, _matrix_product(steps, group), bool(path & 2), out)
                continue
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
