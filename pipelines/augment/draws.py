"""Counter-based random numbers for augmentation, and the seeded pixel permutation of `scramble`.

Every draw is a splitmix64 hash of (seed, source id, sample, tag): a value depends only on the
output image's identity and the draw number, never on batch, partition or executor, which is what
makes augmented images byte-identical however the data is split (see pipelines.augment.pipeline).
Op draw numbers are spaced _TAG_STRIDE apart.  `scramble_permutation` is the exception: one
permutation per (seed, image size), from a Philox generator keyed by the seed.
"""
from __future__ import annotations

import functools
import math
import sys
import threading

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
    out = np.empty((len(keys), count), np.float32)
    for row, bits in zip(out, stream_bits(keys, tag).tolist()):
        for lo in range(0, count, _NORMAL_PIECE):
            pixel_normal_into(bits, start + lo, row[lo:lo + _NORMAL_PIECE])
    return out


_NORMAL_PIECE = 1 << 15   # values per pass: 256 KB of counters and as much scratch stay in a 1 MB L2


@functools.lru_cache(maxsize=4)
def _counter_steps(count: int) -> np.ndarray:
    """uint64 i * _GOLDEN for i < count: a stream's counters less their start (read-only, shared)."""
    out = np.arange(count, dtype=np.uint64) * _GOLDEN
    out.flags.writeable = False
    return out


def pixel_normal_into(start_bits, start: int, out: np.ndarray) -> None:
    """out (float32, 1-d, at most _NORMAL_PIECE values) = pixel_normal's values start .. start + len(out)
    of one image's stream (start_bits from stream_bits).

    Pieces of _NORMAL_PIECE values keep the hashing in L2 cache (a whole 224x224 RGB image's counters
    are 1.2 MB): measured about 3x faster for the hashing alone than an image at once in fresh arrays
    (the whole noise op on photos about 15% less).  The counters
    are one add to a cached ramp, with splitmix64's first addition folded in."""
    n = len(out)
    ctr = _scratch_u64("ctr", n)
    first = np.uint64((int(start_bits) + (start + 1) * int(_GOLDEN)) & _MASK)   # Python ints: no wrap warnings
    np.add(_counter_steps(_NORMAL_PIECE)[:n], first, out=ctr)
    t = _scratch_u64("tmp", n)
    for shift, mult in ((30, _M1), (27, _M2), (31, None)):
        np.right_shift(ctr, np.uint64(shift), out=t)
        ctr ^= t
        if mult is not None:
            ctr *= mult
    quarters = ctr.view(np.uint16).reshape(n, 4)   # the four 16-bit fields
    s = np.add(quarters[:, 0], quarters[:, 1], dtype=np.uint32)
    s += quarters[:, 2]
    s += quarters[:, 3]
    out[...] = s   # at most 4 * 65535: exact in float32
    out *= np.float32(1 / 65536.0)
    out -= np.float32(2.0)
    out *= np.float32(math.sqrt(3.0))


_scratch = threading.local()


def _scratch_u64(name: str, n: int) -> np.ndarray:
    """A per-thread uint64 working array of _NORMAL_PIECE values, reused (its first n)."""
    pool = _scratch.__dict__.setdefault("pool", {})
    if name not in pool:
        pool[name] = np.empty(_NORMAL_PIECE, np.uint64)
    return pool[name][:n]


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
