"""Decoding one encoded image file (PNG, JPEG, BMP, GIF, ...) into the record contract's pixels.

Pure functions, run inside executors.  Every way a file can be unusable maps
to a short reason for the rejects table rather than an exception that would
kill the Spark task: empty, not an image, truncated or corrupt, too many
pixels (decompression bombs), a mode that has no sensible 8-bit form, or a
size that differs from the dataset's when resizing is off.
"""
from __future__ import annotations

import io
import warnings

import numpy as np

EMPTY_FILE = "empty file (0 bytes)"   # also the reason for empty files rejected before decoding


class Reject(Exception):
    """This file cannot become a record; str(exc) is the reason written to the rejects table."""


def _to_8bit(img):
    """Modes beyond 8-bit RGB/L brought to 'L' or 'RGB' the way viewers show them."""
    from PIL import Image
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.uint32 if mode == "I" else np.uint16)
        if mode == "I":
            if arr.max() > 65535 or arr.min() < 0:
                raise Reject(f"32-bit integer pixels outside 0..65535 (mode {mode})")
        return Image.fromarray((arr >> 8).astype(np.uint8), "L")
    if mode in ("LA", "RGBA", "P", "PA", "RGBa", "La"):
        # Transparent areas become black, as on the black background of digit datasets.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        flat = Image.alpha_composite(background, rgba).convert("RGB")
        return flat.convert("L") if mode in ("LA", "La") else flat
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    raise Reject(f"unsupported pixel mode {mode}")


def fit(img, height: int, width: int, resize: str):
    """`img` at height x width: stretch, crop (fill and centre-crop), pad (black borders) or reject."""
    from PIL import Image, ImageOps
    if img.size == (width, height):
        return img
    if resize == "reject":
        raise Reject(f"size {img.size[1]}x{img.size[0]} differs from the dataset's {height}x{width} "
                     "(set ingest.resize to stretch, pad or crop)")
    if resize == "stretch":
        return img.resize((width, height), Image.BILINEAR)
    if resize == "crop":
        return ImageOps.fit(img, (width, height), Image.BILINEAR)
    return ImageOps.pad(img, (width, height), Image.BILINEAR, color=0)   # pad: keep aspect, black borders


def open_image(data: bytes, max_pixels: int, setting: str = "ingest.max_pixels", draft_for=None):
    """The first frame of an encoded image, loaded and brought to 8-bit 'L' or 'RGB'; raises Reject.

    -> (image, (height, width) as stored in the file).  `draft_for((height, width))` -> (width,
    height) lets a JPEG decode at the smallest DCT scale (1/2, 1/4, 1/8) that still covers that size: a 1024x768
    photo bound for 224x224 decodes at 256x192 of work instead of 1024x768, the same pixels a
    resize would have averaged away.  `setting` names the pixel limit in the reason.
    """
    from PIL import Image, UnidentifiedImageError
    if not data:
        raise Reject(EMPTY_FILE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise Reject("not an image file PIL can identify") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise Reject(f"decompression bomb refused: {exc}") from None
        except Exception as exc:
            raise Reject(f"unreadable image header: {exc}") from None
        stored = (img.size[1], img.size[0])
        pixels = img.size[0] * img.size[1]
        if pixels > max_pixels:
            raise Reject(f"{img.size[0]}x{img.size[1]} = {pixels} pixels exceeds {setting}={max_pixels} "
                         "(decompression bomb?)")
        try:
            img.seek(0)          # GIF/TIFF: the first frame
            if draft_for is not None and img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK", "YCbCr"):
                img.draft(img.mode if img.mode in ("RGB", "L") else "RGB", draft_for(stored))
            img.load()
        except Exception as exc:
            raise Reject(f"corrupt or truncated {img.format or 'image'}: {exc}") from None
    return _to_8bit(img), stored


def to_channels(img, channels: int):
    """An 8-bit 'L'/'RGB' image with `channels` (1 or 3) channels."""
    if channels == 1 and img.mode != "L":
        return img.convert("L")
    if channels == 3 and img.mode != "RGB":
        return img.convert("RGB")
    return img


def decode_image(data: bytes, height: int, width: int, channels: int, resize: str, max_pixels: int) -> np.ndarray:
    """-> uint8 array (height, width, channels); raises Reject with the reason."""
    img, _ = open_image(data, max_pixels)
    img = fit(to_channels(img, channels), height, width, resize)
    arr = np.asarray(img, dtype=np.uint8)
    return arr.reshape(height, width, channels)


def probe_shape(data: bytes) -> tuple:
    """(height, width, channels) an image would get by default: its own size; 1 channel if gray."""
    from PIL import Image
    img = _to_8bit(Image.open(io.BytesIO(data)))
    return img.size[1], img.size[0], 1 if img.mode == "L" else 3
