"""Resampling: per-image output->input coordinates, and one bilinear cv2.remap per chunk of images.

Pipeline._warp resamples all geometric ops at once through _coordinates and _resample, or, for
photo-sized images whose chain is matrices only, through pipelines.augmentation.photo_warps; Elastic
builds its fields with the grid helpers here.  Also the per-thread scratch buffers (_buffer) and
the single-threaded OpenCV import (_cv2) that the pixel ops' rounding shares.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from pipelines.augmentation.params import AugmentError

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
_PER_IMAGE_PIXELS = 64 * 64   # from this size on, ops call OpenCV image by image (per_image_calls)


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


def round_to_uint8(x: np.ndarray, out=None) -> np.ndarray:
    """Float32 pixels (2-d or 1-d) rounded half to even and clipped to 0..255, as np.clip(np.rint(x), 0, 255)
    would: negatives are zeroed first (in x), then OpenCV's saturating conversion rounds and caps at 255."""
    cv2 = _cv2()
    cv2.threshold(x, 0, 0, cv2.THRESH_TOZERO, dst=x)
    return cv2.convertScaleAbs(x, out)


def per_image_calls(h: int, w: int) -> bool:
    """Whether ops on images of this size call OpenCV image by image (photos) or work on the whole
    batch at once (small images such as MNIST, where a call per image would cost more than its work).
    A fact of the size alone, so every image of a dataset takes the same route however it is split.
    Geometry: small images gain from one remap per chunk; photos from photo_warps.warp_each, OpenCV computing
    the coordinates itself block by block in cache."""
    return h * w >= _PER_IMAGE_PIXELS


def _matrix_product(steps, part):
    """The output->input matrix of images `part` (sharing one path with no elastic op), composed as
    _coordinates composes it."""
    acc = None
    for op, mask, x in steps[::-1]:
        if op.kind != "elastic" and mask[part].any():
            acc = x[part] if acc is None else _matmul(acc, x[part])
    return acc


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
