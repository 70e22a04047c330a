"""Photo-sized resampling when the chain is matrices only: per image, the cheapest route that computes
the bilinear sample (pipelines.augmentation.resample has the general, chunked route and the reasons).

- a matrix that moves whole pixels onto the canvas (flips, quarter turns): a copy or cv2.flip;
- a pure translation: one 2x2 filter (below);
- anything else: cv2.warpAffine / warpPerspective.

A matrix that only translates (x + tx, y + ty) samples every output pixel at the same fraction
(fx, fy) between the same four neighbours, so its bilinear sample is one 2x2 filter with constant
weights, (1 - fy, fy) x (1 - fx, fx), moved by the whole-pixel part of (tx, ty).  cv2.filter2D
computes it in float32 and rounds once: several times faster than cv2.warpAffine, which computes
a coordinate per pixel, and exact weights rather than warpAffine's 1/32-pixel steps (the two differ
by rounding only).  Pixels sampled outside the image are black, as in the warp.
"""
from __future__ import annotations

import math

import numpy as np

from pipelines.augmentation.resample import _cv2


def warp_each(images: np.ndarray, group: np.ndarray, acc: np.ndarray, projective: bool, out: np.ndarray) -> None:
    """out[i] = images[i] sampled at acc[j] @ (x, y, 1) for the j-th image i of group (output->input),
    bilinear, black outside, one OpenCV call per image by the routes in the module docstring.  Each
    image's route depends on its own matrix alone, so its bytes do not depend on its batch."""
    cv2 = _cv2()
    k, h, w, c = images.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    routes = [_WARP] * len(group) if projective else _routes(acc, h, w)
    for j, i in enumerate(group.tolist()):
        src, dst = (images[i], out[i]) if c > 1 else (images[i, ..., 0], out[i, ..., 0])
        route = routes[j]
        if route in (-1, 0, 1):
            cv2.flip(src, route, dst=dst)
        elif route == _COPY:
            np.copyto(dst, src)
        elif route == _TRANSLATE:
            translate(src, float(acc[j, 0, 2]), float(acc[j, 1, 2]), dst)
        elif route == _TURN and _copy_pixels(src, acc[j], h, w, dst):
            continue
        elif projective:
            cv2.warpPerspective(src, acc[j], (w, h), dst=dst, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        else:
            cv2.warpAffine(src, acc[j, :2], (w, h), dst=dst, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


_COPY, _TURN, _TRANSLATE, _WARP = 2, 3, 4, 5   # routes besides cv2.flip's codes -1, 0, 1


def _routes(acc: np.ndarray, h: int, w: int) -> list:
    """Per affine matrix (k, 3, 3), its route in warp_each: a cv2.flip code, _COPY (identity), _TURN (a
    quarter turn of a square image, maybe: _copy_pixels decides), _TRANSLATE or _WARP.  Decided for
    all matrices at once, so that the Python per image is one OpenCV call (at 224x224 a flip costs
    about as much as a few scalar tests on numpy values)."""
    a, b, cx = acc[:, 0, 0], acc[:, 0, 1], acc[:, 0, 2]
    d, e, cy = acc[:, 1, 0], acc[:, 1, 1], acc[:, 1, 2]
    axes = (b == 0) & (d == 0)
    mirror = (axes & (np.abs(a) == 1) & (np.abs(e) == 1)
              & (cx == np.where(a > 0, 0, w - 1)) & (cy == np.where(e > 0, 0, h - 1)))
    code = np.where(a > 0, np.where(e > 0, _COPY, 0), np.where(e > 0, 1, -1))
    turn = (a == 0) & (e == 0) & (np.abs(b) == 1) & (np.abs(d) == 1) & (h == w)
    shift = axes & (a == 1) & (e == 1)
    return np.select([mirror, turn, shift], [code, _TURN, _TRANSLATE], _WARP).tolist()


def _copy_pixels(src, m, h: int, w: int, dst) -> bool:
    """dst = src moved by m when m maps the pixel grid onto itself (identity, flips, quarter turns of a
    square image and their products); False (nothing written) otherwise."""
    a, b, cx, d, e, cy = m[0, 0], m[0, 1], m[0, 2], m[1, 0], m[1, 1], m[1, 2]
    if b == 0 and d == 0 and abs(a) == 1 and abs(e) == 1:
        view = src
    elif a == 0 and e == 0 and abs(b) == 1 and abs(d) == 1 and h == w:
        view = _cv2().transpose(src)      # view[p, q] = src[q, p], so out[y, x] = view[b y + cx, d x + cy]
        a, e, cx, cy = d, b, cy, cx
    else:
        return False
    if cx != (0 if a > 0 else w - 1) or cy != (0 if e > 0 else h - 1):
        return False
    code = {(True, True): None, (False, True): 1, (True, False): 0, (False, False): -1}[(a > 0, e > 0)]
    if code is None:
        np.copyto(dst, view)
    else:
        _cv2().flip(view, code, dst=dst)
    return True


def _span(a: int, size: int):
    """Along one axis of `size` pixels, output = k0 I(x + a) + k1 I(x + a + 1) with I black outside:
    (output start, output end, input start, filter anchor).  The input view starts at the first
    pixel any output touches; when that neighbour is the k1 one (a < 0), the anchor makes the
    filter read the black border for k0."""
    if a >= 0:
        return 0, max(size - a, 0), min(a, size), 0
    return min(-a - 1, size), size, 0, 1


def translate(src: np.ndarray, tx: float, ty: float, dst: np.ndarray) -> None:
    """dst[y, x] = bilinear sample of src at (x + tx, y + ty), black outside; (H, W) or (H, W, C) uint8."""
    cv2 = _cv2()
    h, w = src.shape[:2]
    ax, ay = math.floor(tx), math.floor(ty)
    fx, fy = tx - ax, ty - ay
    x0, x1, sx, anchor_x = _span(ax, w)
    y0, y1, sy, anchor_y = _span(ay, h)
    if x0 >= x1 or y0 >= y1:
        dst[...] = 0
        return
    dst[:y0] = 0
    dst[y1:] = 0
    dst[y0:y1, :x0] = 0
    dst[y0:y1, x1:] = 0
    window = dst[y0:y1, x0:x1]
    view = src[sy:sy + y1 - y0, sx:sx + x1 - x0]
    kernel = np.array([[(1 - fy) * (1 - fx), (1 - fy) * fx], [fy * (1 - fx), fy * fx]], np.float32)
    cv2.filter2D(view, -1, kernel, dst=window, anchor=(anchor_x, anchor_y), borderType=cv2.BORDER_CONSTANT)
