"""Counter-based random numbers for augmentation, and the seeded pixel permutation of `scramble`.

Every draw is a splitmix64 hash of (seed, source id, sample, tag): a value depends only on the
output image's identity and the draw number, never on batch, partition or executor, which is what
makes augmented images byte-identical however the data is split (see pipelines.augmentation.pipeline).
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
    return _finish(x)


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


# Per-pixel streams.  Hash k of an image's stream for draw `tag` is splitmix64 of start + k * golden
# (start = stream_bits(keys, tag)); each 64-bit hash is cut into pieces, little-endian order:
# - bytes (erase's noise fill): value p is byte p % 8 of hash p // 8;
# - normals (noise): value p is 32-bit word p % 2 of hash p // 2, its four bytes summed (Irwin-Hall).
# One hash per eight bytes or two normals: at photo sizes the hashing is most of these ops' time.
_BYTES_PER_HASH, _NORMALS_PER_HASH = 8, 2
_IRWIN_MEAN = np.float32(4 * 255 / 2)                            # the sum of four bytes: mean 510,
_IRWIN_SCALE = np.float32(1.0 / math.sqrt(4 * (256 ** 2 - 1) / 12))   # standard deviation about 147.8


def _hashes_into(start_bits, first: int, out: np.ndarray) -> np.ndarray:
    """out (uint64, 1-d, at most _PIECE_HASHES) = hashes first .. first + len(out) of the stream starting at
    start_bits: one add to a cached ramp, splitmix64's first addition folded in (the sum a Python int:
    numpy scalars warn on wrapping), then the finaliser."""
    n = len(out)
    np.add(_counter_steps(_PIECE_HASHES)[:n], np.uint64((int(start_bits) + (first + 1) * int(_GOLDEN)) & _MASK),
           out=out)
    return _finish(out, _scratch_u64("tmp", n))


def _finish(ctr: np.ndarray, scratch=None) -> np.ndarray:
    """splitmix64's finaliser after its first addition, in place on counters already holding it."""
    t = np.empty_like(ctr) if scratch is None else scratch
    for shift, mult in ((30, _M1), (27, _M2), (31, None)):
        np.right_shift(ctr, np.uint64(shift), out=t)
        ctr ^= t
        if mult is not None:
            ctr *= mult
    return ctr


def _pieces_of(hashes: np.ndarray, dtype) -> np.ndarray:
    """The hashes cut into pieces of dtype in stream order: uint8, byte b of a hash is (h >> 8b) & 255;
    uint32, word w holds bytes 4w .. 4w + 3 (on a big-endian machine in another order within the word,
    which the only reader of words, a sum of their bytes, does not see)."""
    if sys.byteorder == "little":
        return hashes.view(dtype)
    return hashes.byteswap().view(dtype)


def pixel_normal(keys: np.ndarray, tag: int, count: int, start: int = 0) -> np.ndarray:
    """(N, count) float32 approximately N(0,1): the Irwin-Hall sum of four uniform bytes (tails stop at
    3.45 sigma); values start .. start + count of each image's stream (a caller may take an image in
    pieces).  Pure integer and float32 arithmetic (no log/cos), so identical on every CPU path."""
    out = np.empty((len(keys), count), np.float32)
    for row, bits in zip(out, stream_bits(keys, tag).tolist()):
        for lo in range(0, count, _NORMAL_PIECE):
            pixel_normal_into(bits, start + lo, row[lo:lo + _NORMAL_PIECE])
    return out


_NORMAL_PIECE = 1 << 15   # values per pass: the hashes, scratch and sums stay in a 1 MB L2
_PIECE_HASHES = _NORMAL_PIECE // _NORMALS_PER_HASH + 1


@functools.lru_cache(maxsize=4)
def _counter_steps(count: int) -> np.ndarray:
    """uint64 i * _GOLDEN for i < count: a stream's counters less their start (read-only, shared)."""
    out = np.arange(count, dtype=np.uint64) * _GOLDEN
    out.flags.writeable = False
    return out


def pixel_normal_into(start_bits, start: int, out: np.ndarray, scale=_IRWIN_SCALE) -> None:
    """out (float32, 1-d, at most _NORMAL_PIECE values) = pixel_normal's values start .. start + len(out)
    of one image's stream (start_bits from stream_bits), or with a float32 `scale` other than the unit
    variance's, (sum - 510) * scale: noise folds its sigma in (one multiply less per value).

    Pieces of _NORMAL_PIECE values keep the hashing in L2 cache (a whole 224x224 RGB image's hashes
    are 600 KB).  Each 64-bit hash gives two values (a 32-bit word each), and a word's four bytes are
    summed two at a time in 32-bit lanes: about half the time per value of one hash per value."""
    n = len(out)
    first = start // _NORMALS_PER_HASH
    m = (start + n - 1) // _NORMALS_PER_HASH - first + 1
    words = _pieces_of(_hashes_into(start_bits, first, _scratch_u64("ctr", m)), np.uint32)
    words = words[start % _NORMALS_PER_HASH:start % _NORMALS_PER_HASH + n]
    s = _scratch_u32("sum", n)
    t = _scratch_u32("lane", n)
    np.bitwise_and(words, np.uint32(0x00FF00FF), out=s)      # bytes 0 and 2, each in a 16-bit lane
    np.right_shift(words, np.uint32(8), out=t)
    t &= np.uint32(0x00FF00FF)                                 # bytes 1 and 3
    s += t
    np.right_shift(s, np.uint32(16), out=t)
    s &= np.uint32(0xFFFF)
    s += t                                                     # 0 .. 1020: exact in float32
    out[...] = s.view(np.int32)                                # int32 converts in SIMD, uint32 does not
    out -= _IRWIN_MEAN
    out *= np.float32(scale)


_scratch = threading.local()


def _scratch_u64(name: str, n: int) -> np.ndarray:
    """A per-thread uint64 working array of _PIECE_HASHES values, reused (its first n)."""
    return _scratch_array(name, n, np.uint64, _PIECE_HASHES)


def _scratch_u32(name: str, n: int) -> np.ndarray:
    """A per-thread uint32 working array of _NORMAL_PIECE values, reused (its first n)."""
    return _scratch_array(name, n, np.uint32, _NORMAL_PIECE)


def _scratch_array(name, n, dtype, size):
    pool = _scratch.__dict__.setdefault("pool", {})
    if name not in pool:
        pool[name] = np.empty(size, dtype)
    return pool[name][:n]


def pixel_bytes_at(keys: np.ndarray, tag: int, image, pixel: np.ndarray) -> np.ndarray:
    """Values `pixel` of the byte streams of images `image` (uint8), hashing only the hashes those hold;
    image: an index array like pixel's, or one int for pixels all of one image."""
    pixel = np.asarray(pixel, np.int64).astype(np.uint64)
    ctr = pixel >> np.uint64(3)                      # the hash holding each value (8 bytes per hash)
    ctr *= _GOLDEN
    ctr += np.atleast_1d(_bits(keys, tag)[image])   # arrays wrap silently
    h = _mix_inplace(ctr)                            # which adds the first golden step
    pixel &= np.uint64(7)
    pixel <<= np.uint64(3)                           # the byte's bit offset in its hash
    h >>= pixel
    return h.astype(np.uint8)                        # the low byte


def stream_bits(keys: np.ndarray, tag: int) -> np.ndarray:
    """Per image, the start of its splitmix64 stream for draw `tag` (what the pixel functions add to
    counter x _GOLDEN); computed once for a batch by callers that then work image by image."""
    return _bits(keys, tag)


def box_bytes(start_bits: np.ndarray, firsts: np.ndarray, rows: np.ndarray, lengths: np.ndarray,
              row_step: int) -> list:
    """Per image i: (rows[i], lengths[i]) uint8, row r holding values firsts[i] + r * row_step .. + lengths[i] - 1
    of image i's byte stream (start_bits[i], from stream_bits): pixel_bytes_at of a box's rows.

    The boxes of a batch are hashed together, one set of numpy calls rather than one per image (at
    224x224 the calls cost more than the hashing), each hash once and cut into its eight bytes.  When
    row_step is a multiple of 8 (224x224 and 512x512 RGB rows) every row of an image starts at the same
    byte of a hash and the image's bytes are a strided view; otherwise a gather."""
    firsts, rows, lengths = (np.asarray(v, np.int64) for v in (firsts, rows, lengths))
    aligned = row_step % _BYTES_PER_HASH == 0
    run_image = np.repeat(np.arange(len(rows)), rows)                             # each run's image
    first_run = np.cumsum(rows) - rows                                            # each image's first run
    run_start = firsts[run_image] + (np.arange(len(run_image)) - first_run[run_image]) * row_step
    lead = firsts % _BYTES_PER_HASH if aligned else np.full(len(rows), _BYTES_PER_HASH - 1)
    per_run = (lead + lengths + _BYTES_PER_HASH - 1) // _BYTES_PER_HASH          # hashes per run of each image
    run_hashes = per_run[run_image]
    run_at = np.cumsum(run_hashes) - run_hashes                                   # where each run's hashes begin
    step = np.arange(int(run_hashes.sum()), dtype=np.int64) - np.repeat(run_at, run_hashes)   # hash within its run
    ctr = (np.repeat(run_start // _BYTES_PER_HASH + 1, run_hashes) + step).astype(np.uint64)
    ctr *= _GOLDEN
    ctr += np.repeat(np.asarray(start_bits, np.uint64)[run_image], run_hashes)    # arrays wrap silently
    data = _pieces_of(_finish(ctr), np.uint8)
    image_at = (np.cumsum(per_run * rows) - per_run * rows) * _BYTES_PER_HASH
    out = []
    for i, (at, r, k, n) in enumerate(zip(image_at.tolist(), rows.tolist(), per_run.tolist(), lengths.tolist())):
        block = data[at:at + r * k * _BYTES_PER_HASH].reshape(r, k * _BYTES_PER_HASH)
        if aligned:
            off = int(lead[i])
            out.append(block[:, off:off + n])
        else:
            offsets = run_start[first_run[i]:first_run[i] + r] % _BYTES_PER_HASH
            out.append(block[np.arange(r)[:, None], offsets[:, None] + np.arange(n)])
    return out


def pixel_uniform255_at(keys: np.ndarray, tag: int, image: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """pixel_bytes_at as float32 (erase on float pixels)."""
    return pixel_bytes_at(keys, tag, image, pixel).astype(np.float32)


def scramble_permutation(seed: int, h: int, w: int) -> np.ndarray:
    """The pixel permutation for (seed, image size): output pixel i takes input pixel perm[i]."""
    return np.random.Generator(np.random.Philox(key=int(seed) & ((1 << 64) - 1))).permutation(h * w)
