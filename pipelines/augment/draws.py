"""Counter-based random numbers for augmentation, and the seeded pixel permutation of `scramble`.

Every draw is a splitmix64 hash of (seed, source id, sample, tag): a value depends only on the
output image's identity and the draw number, never on batch, partition or executor, which is what
makes augmented images byte-identical however the data is split (see pipelines.augment.pipeline).
Op draw numbers are spaced _TAG_STRIDE apart.  `scramble_permutation` is the exception: one
permutation per (seed, image size), from a Philox generator keyed by the seed.
"""
from __future__ import annotations

import math

import numpy as np

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


def scramble_permutation(seed: int, h: int, w: int) -> np.ndarray:
    """The pixel permutation for (seed, image size): output pixel i takes input pixel perm[i]."""
    return np.random.Generator(np.random.Philox(key=int(seed) & ((1 << 64) - 1))).permutation(h * w)
