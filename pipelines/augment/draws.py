"""Counter-based random numbers for augmentation, and the seeded pixel permutation of `scramble`.

Every draw is a splitmix64 hash of (seed, source id, sample, tag): a value depends only on the
output image's identity and the draw number, never on batch, partition or executor, which is what
makes augmented images byte-identical however the data is split (see pipelines.augment.pipeline).
Op draw numbers are spaced _TAG_STRIDE apart.  `scramble_permutation` is the exception: one
permutation per (seed, image size), from a Philox generator keyed by the seed.
"""
from __future__ import annotations

import math
import sys

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TAG_STRIDE = 64  # draws per op
_MASK = (1 << 64) - 1


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


def _mix_inplace(x: np.ndarray) -> np.ndarray:
    """_mix on a large uint64 array the caller owns, overwriting it (the same values, without the
    temporaries: at photo sizes a hash per pixel is most of an op's time)."""
    x += _GOLDEN
    t = np.empty_like(x)
    for shift, mult in ((30, _M1), (27, _M2), (31, None)):
        np.right_shift(x, np.uint64(shift), out=t)
        x ^= t
        if mult is not None:
            x *= mult
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


def _pixel_bits(keys: np.ndarray, tag: int, count: int, start: int = 0) -> np.ndarray:
    """(N, count) uint64: values start .. start + count of a splitmix64 stream per image."""
    with np.errstate(over="ignore"):
        ctr = np.arange(start, start + count, dtype=np.uint64)[None, :] * _GOLDEN + _bits(keys, tag)[:, None]
    return _mix_inplace(ctr)


def pixel_normal(keys: np.ndarray, tag: int, count: int, start: int = 0) -> np.ndarray:
    """(N, count) float32 approximately N(0,1): Irwin-Hall sum of four 16-bit uniforms; values
    start .. start + count of each image's stream (a caller may take an image in pieces).

    Pure integer/float arithmetic (no log/cos), so identical on every CPU path; tails stop at 3.46 sigma.
    """
    quarters = _pixel_bits(keys, tag, count, start).view(np.uint16).reshape(len(keys), count, 4)   # the four 16-bit fields
    s = quarters[..., 0].astype(np.uint32)
    for i in (1, 2, 3):
        s += quarters[..., i]
    s = s.astype(np.float32)   # at most 4 * 65535: exact
    s *= np.float32(1 / 65536.0)
    s -= np.float32(2.0)
    s *= np.float32(math.sqrt(3.0))
    return s


def pixel_uniform255(keys: np.ndarray, tag: int, count: int) -> np.ndarray:
    return (_pixel_bits(keys, tag, count) >> np.uint64(56)).astype(np.float32)


def pixel_bytes_at(keys: np.ndarray, tag: int, image, pixel: np.ndarray) -> np.ndarray:
    """pixel_uniform255(keys, tag, ...)[image, pixel] as uint8, hashing only the pixels asked for;
    image: an index array like pixel's, or one int for pixels all of one image."""
    with np.errstate(over="ignore"):
        ctr = pixel.astype(np.uint64)
        ctr *= _GOLDEN
        ctr += _bits(keys, tag)[image]
    return (_mix_inplace(ctr) >> np.uint64(56)).astype(np.uint8)


def stream_bits(keys: np.ndarray, tag: int) -> np.ndarray:
    """Per image, the start of its splitmix64 stream for draw `tag` (what the pixel functions add to
    counter x _GOLDEN); computed once for a batch by callers that then work image by image."""
    return _bits(keys, tag)


def pixel_bytes_runs(start_bits, starts: np.ndarray, length: int) -> np.ndarray:
    """(len(starts), length) uint8 (a strided view): pixel_bytes_at of one image (stream start_bits, from stream_bits)
    at the runs of pixels starts[r] .. starts[r] + length - 1, e.g. the rows of a box.

    The same numbers with less work, which at photo sizes is most of an erase: the counters are a row
    part plus a column part (one broadcast add, the finaliser's first addition folded into the row
    part), and only the top byte is kept, which splitmix64's last xor-shift (x ^= x >> 31) leaves
    unchanged, so that step is skipped."""
    ctr = np.empty((len(starts), length), np.uint64)
    first = np.uint64((int(start_bits) + int(_GOLDEN)) & _MASK)   # Python ints: numpy scalars warn on wrapping
    rows = np.asarray(starts, np.int64).astype(np.uint64) * _GOLDEN + first
    np.add(rows[:, None], np.arange(length, dtype=np.uint64) * _GOLDEN, out=ctr)
    t = np.empty_like(ctr)
    for shift, mult in ((30, _M1), (27, _M2)):
        np.right_shift(ctr, np.uint64(shift), out=t)
        ctr ^= t
        ctr *= mult
    if sys.byteorder == "little":
        return ctr.view(np.uint8)[:, 7::8]   # the top byte of each little-endian value
    return (ctr >> np.uint64(56)).astype(np.uint8)


def pixel_uniform255_at(keys: np.ndarray, tag: int, image: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """pixel_uniform255(keys, tag, ...)[image, pixel], hashing only the pixels asked for."""
    return pixel_bytes_at(keys, tag, image, pixel).astype(np.float32)


def scramble_permutation(seed: int, h: int, w: int) -> np.ndarray:
    """The pixel permutation for (seed, image size): output pixel i takes input pixel perm[i]."""
    return np.random.Generator(np.random.Philox(key=int(seed) & ((1 << 64) - 1))).permutation(h * w)
