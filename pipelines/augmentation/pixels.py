"""Running a chain's pixel ops on a batch: colour maps fused and applied to uint8 pixels in one pass.

Ops are taken in conf order, each on the images it applies to, in the mode it declares.  Each
image is either uint8 (with a pending colour map) or float32, and changes form only when an op
applied to that image needs it, so every image's arithmetic depends on its own draws alone, never
on the other images of the batch (the byte-identical guarantee):
- "colour" (pipelines.augmentation.colour): on a uint8 image, composed into its pending affine colour
  map; pixels are not touched until another kind of op (or the end) needs them, and then the image
  is mapped in one OpenCV call, uint8 in and out, rounding once (small images such as MNIST: float32
  arithmetic over the batch, pipelines.augmentation.resample.per_image_calls);
  on a float image, the op's float32 `apply`;
- "uint8" (erase, blur, jpeg): the image's pending map is applied, then the op changes the uint8
  image in place (float images are rounded first; erase, which has a float `apply`, writes float
  images directly); blur and jpeg rewrite whole images (`apply_uint8_to`), so they read the batch
  they were given and write a new one instead of copying it first;
- "float" (noise): the image's pending map is applied and it becomes float32 from then on; rounded
  once at the end or before a uint8 op.  When no later op reads float pixels (_floats_read_after),
  an image still in uint8 form instead takes the op and that rounding in one pass, a cache-sized
  piece at a time (`apply_uint8_to`), rather than through a float32 copy of the batch;
- "any" (scramble): moves pixels in whichever form they are; a colour map commutes with it.
The float32 route is also the reference (`float_reference=True`: every image float from the start,
every op with a float32 form run in it, rounded at the end or before blur and jpeg); the fused
route equals it within one grey level when colour ops are not separated by uint8 ops (each uint8
op rounds once more).
"""
from __future__ import annotations

import functools

import numpy as np

from pipelines.augmentation.colour import apply_map_float, compose, identity_maps, mapped_means
from pipelines.augmentation.resample import _buffer, _cv2, per_image_calls, round_to_uint8


def _means(images: np.ndarray, per_channel: bool) -> np.ndarray:
    """Means (n, C) of uint8 images from exact integer sums divided once: per channel (cv2.mean), or
    the mean of all values in every column (one cv2.norm of the flat image, a third of the time),
    which is all a map that treats the channels alike (and the ops that read means) needs."""
    n, h, w, c = images.shape
    if c > 4 or not per_image_calls(h, w):   # small images: exact integer sums over the batch
        means = images.reshape(n, -1, c).sum(axis=1, dtype=np.int64) / (h * w)
        total = images.reshape(n, -1).sum(axis=1, dtype=np.int64) / (h * w * c)
        return means if per_channel else np.repeat(total[:, None], c, axis=1)
    cv2 = _cv2()
    if per_channel and c > 1:
        return np.array([cv2.mean(image)[:c] for image in images]).reshape(n, c)
    total = np.array([cv2.norm(image.reshape(h, w * c), cv2.NORM_L1) for image in images]) / (h * w * c)
    return np.repeat(total[:, None], c, axis=1)


def _uniform(maps) -> np.ndarray:
    """Per image: the map scales and offsets every channel alike (M = a I, t = b 1)."""
    m, t = maps
    c = m.shape[1]
    return (np.all(m == m[:, :1, :1] * np.eye(c), axis=(1, 2)) & np.all(t == t[:, :1], axis=1))


def _map_images(src: np.ndarray, idx: np.ndarray, maps, dst: np.ndarray) -> None:
    """dst[i] = M v + t for every pixel v of image i = idx[j] ((H, W, C) uint8, maps[j]), rounded and saturated.

    A map that scales and offsets every channel alike (brightness, contrast, grey images) is a
    256-entry table: computed in float32 and rounded exactly as the float route rounds each pixel,
    then applied to the image's bytes in place (apply_table; dst is first a copy of src unless they
    are the same), several times faster than any arithmetic pass.  Anything else is cv2.transform,
    whose RGB path is SIMD fixed point (coefficients to 1/1024).  Which call each image takes is
    decided for all of them at once, so the loop is one or two calls per image (at 224x224 the Python
    around a call costs as much as the call).  dst may be src (both work pixel by pixel)."""
    cv2 = _cv2()
    m, t = maps
    c = src.shape[-1]
    uniform = _uniform(maps).tolist()
    tables = _tables(m[:, 0, 0], t[:, 0])
    whole = np.concatenate([m, t[:, :, None]], axis=2)
    same = src is dst
    for j, i in enumerate(idx.tolist()):
        if uniform[j]:
            if not same:
                np.copyto(dst[i], src[i])
            apply_table(dst[i], tables[j])
        elif c == 1:
            cv2.transform(src[i, ..., 0], whole[j], dst=dst[i, ..., 0])
        else:
            cv2.transform(src[i], whole[j], dst=dst[i])


def _tables(scales: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(k, 256) uint8: for each (scale, offset), v -> v * scale + offset in float32, rounded half to even
    and clipped: what apply_map_float and _to_uint8 compute for a pixel of value v."""
    x = np.arange(256, dtype=np.float32)[None, :] * scales.astype(np.float32)[:, None]
    x += offsets.astype(np.float32)[:, None]
    return _to_uint8(x)


def apply_table(image: np.ndarray, table: np.ndarray) -> None:
    """image (contiguous uint8) = table[image], in place: stringzilla's SIMD translate (about 20 bytes per
    ns here, against about 1.5 for cv2.LUT), numpy's take where stringzilla is not installed (the
    same bytes, slower)."""
    sz = _stringzilla()
    if sz is not None and image.flags.c_contiguous:
        sz.translate(memoryview(image.reshape(-1)), memoryview(table), inplace=True)
    else:
        np.take(table, image, out=image)


@functools.lru_cache(maxsize=1)
def _stringzilla():
    """The stringzilla module, or None where it is not installed (looked for once)."""
    try:
        import stringzilla
    except ImportError:
        return None
    return stringzilla


def _take(values: dict, sel) -> dict:
    return {k: v[sel] for k, v in values.items()}


class _Pixels:
    """The batch between pixel ops: per image, uint8 pixels with a pending colour map, or float32 pixels."""

    def __init__(self, base: np.ndarray, owned: bool, floats: bool):
        n, h, w, c = base.shape
        self.u8, self.owned = base, owned         # unless owned, base is the caller's: copied before writing
        self.x = None                              # float32 pixels of the images in float form
        self.floats = np.zeros(n, bool)            # per image: in float form
        self.maps = identity_maps(n, c)            # (M, t) per image
        self.mapped = np.zeros(n, bool)            # per image: a map is pending
        self.means = np.zeros((n, c))              # means of self.u8: none (means_ok 0), each column
        self.means_ok = np.zeros(n, np.int8)       # the mean of all values (1), or per channel (2)
        if floats:
            self.to_float(np.arange(n))

    def own(self):
        if not self.owned:
            self.u8, self.owned = self.u8.copy(), True

    def add_map(self, op, idx, values):
        before = (self.maps[0][idx], self.maps[1][idx])
        if op.needs_means:   # the ops that read means read their average over channels only
            need = np.where(_uniform(before), 1, 2)   # 2: a pending map mixes channels, per-channel means
            for level in (1, 2):
                stale = idx[(self.means_ok[idx] < need) & (need == level)]
                if len(stale):
                    self.means[stale] = _means(self.u8[stale], per_channel=level == 2)
                    self.means_ok[stale] = level
        m, t = compose(op.colour_map(values, mapped_means(before, self.means[idx])), before)
        self.maps[0][idx], self.maps[1][idx] = m, t
        self.mapped[idx] = True

    def flush(self, idx):
        """Apply the pending maps of images idx to their uint8 pixels (one OpenCV call each, rounding once)."""
        idx = idx[self.mapped[idx]]
        if not len(idx):
            return
        n, h, w, c = self.u8.shape
        if c > 4 or not per_image_calls(h, w):   # small images: float32 arithmetic on the batch
            x = self.u8[idx].astype(np.float32)
            apply_map_float(x, (self.maps[0][idx], self.maps[1][idx]))
            self.own()
            self.u8[idx] = _to_uint8(x)
        else:
            self._map_each(idx)
        self.maps[0][idx], self.maps[1][idx] = identity_maps(len(idx), c)
        self.mapped[idx] = False
        self.means_ok[idx] = 0

    def _map_each(self, idx):
        maps = (self.maps[0][idx], self.maps[1][idx])
        self.rewrite(idx, lambda src, dst: _map_images(src, idx, maps, dst))

    def rewrite(self, idx, write):
        """write(src, dst) writes whole images idx of dst from those of src (dst may be src); the other
        images are kept.  Unless the batch is already ours, dst is a fresh batch with only the other
        images copied into it: the rewritten ones are never copied first."""
        if self.owned:
            write(self.u8, self.u8)
            return
        dst = np.empty_like(self.u8)
        rest = np.flatnonzero(~np.isin(np.arange(len(dst)), idx))
        dst[rest] = self.u8[rest]
        write(self.u8, dst)
        self.u8, self.owned = dst, True

    def to_float(self, idx):
        idx = idx[~self.floats[idx]]
        if not len(idx):
            return
        self.flush(idx)
        if self.x is None:
            self.x = _buffer("pixels", self.u8.shape, np.float32)
        if len(idx) == len(self.u8):
            self.x[...] = self.u8
        else:
            self.x[idx] = self.u8[idx]
        self.floats[idx] = True

    def to_uint8(self, idx):
        idx = idx[self.floats[idx]]
        if not len(idx):
            return
        if len(idx) == len(self.u8):
            self.u8, self.owned = _to_uint8(self.x), True
        else:
            self.own()
            self.u8[idx] = _to_uint8(self.x[idx])
        self.floats[idx] = False
        self.means_ok[idx] = 0

    def result(self) -> np.ndarray:
        every = np.arange(len(self.u8))
        self.to_uint8(every)
        self.flush(every)
        self.own()
        return self.u8


def run_pixel_ops(steps, base: np.ndarray, keys: np.ndarray, float_reference: bool = False,
                  owned: bool = False) -> np.ndarray:
    """steps: [(op, applied mask, drawn values)] of the pixel ops in conf order; base: (N,H,W,C) uint8,
    not modified unless owned (then it may be returned).  Returns the new uint8 images."""
    px = _Pixels(base, owned, float_reference)
    floats_read_after = _floats_read_after(steps)
    for k, (op, mask, d) in enumerate(steps):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        values, sub_keys = _take(d, idx), keys[idx]
        floats = px.floats[idx]
        if op.mode == "float" and (floats_read_after[k] or not hasattr(op, "apply_uint8_to")):
            px.to_float(idx)
            _on_images(px.x, idx, lambda sub: op.apply(sub, values, sub_keys))
            continue
        if op.mode == "uint8" and not hasattr(op, "apply"):
            px.to_uint8(idx)
            floats = np.zeros(len(idx), bool)
        if floats.any():   # these images run the op's float32 apply
            f = floats
            _on_images(px.x, idx[f], lambda sub: op.apply(sub, _take(values, f), sub_keys[f]))
        u = ~floats
        if not u.any():
            continue
        if op.mode == "colour":
            px.add_map(op, idx[u], _take(values, u))
            continue
        if op.mode in ("uint8", "float"):
            px.flush(idx[u])
        if hasattr(op, "apply_uint8_to"):   # writes whole images (blur, jpeg, noise): from the batch into a new one
            sel, sel_values, sel_keys = idx[u], _take(values, u), sub_keys[u]
            px.rewrite(sel, lambda src, dst: op.apply_uint8_to(src, dst, sel, sel_values, sel_keys))
            px.means_ok[sel] = 0
            continue
        px.own()   # "any" (scramble): pending maps stay pending, a permutation changes no mean
        _on_images(px.u8, idx[u], lambda sub: op.apply_uint8(sub, _take(values, u), sub_keys[u]))
        if op.mode == "uint8":
            px.means_ok[idx[u]] = 0
    return px.result()


def _floats_read_after(steps) -> list:
    """Per step, whether a later step that applies to any image reads float pixels (a colour or float
    op).  When none does, a float op's result is only ever rounded, so images still in uint8 form can
    take the op and the rounding in one pass (apply_uint8_to) with the same bytes: blur and jpeg round
    first anyway, erase writes whole grey levels and a permutation commutes with rounding."""
    out, seen = [], False
    for op, mask, _ in reversed(steps):
        out.append(seen)
        seen = seen or (op.mode in ("colour", "float") and bool(mask.any()))
    return out[::-1]


def _on_images(array, idx, fn):
    """fn on the images idx of array, in place (a gathered copy written back unless they are all of them)."""
    if len(idx) == len(array):
        fn(array)
        return
    sub = array[idx]
    fn(sub)
    array[idx] = sub


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Float pixels rounded half to even and clipped to 0..255 (resample.round_to_uint8)."""
    return round_to_uint8(x.reshape(len(x), -1)).reshape(x.shape)
