"""Any image input -> the uint8 pixels a network takes (executor side, pure functions).

Three input forms reach a network: encoded files (JPEG, PNG, ... bytes), Spark's image struct
(BGR(A) or gray bytes with height/width/nChannels) and sparkcnn's record contract (RGB or gray
bytes with height/width/channels).  All end in the same PIL fit (pipelines.images.decode.fit),
so a photo scored from a folder and the same photo scored from a table get the same pixels.
Every way an input is unusable raises Reject with the reason for the rejects table.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from pipelines.images.decode import Reject, fit, open_image, to_channels

MAX_PIXELS_SETTING = "predict.max_pixels"


def _draft_size(stored_hw: Tuple[int, int], target_hw: Tuple[int, int], resize: str):
    """The (width, height) a JPEG must decode to at least, so that the fit loses nothing."""
    (h, w), (th, tw) = stored_hw, target_hw
    if resize == "crop":              # the shorter side is scaled to cover the target
        s = max(th / h, tw / w)
        return max(tw, round(w * s)), max(th, round(h * s))
    return tw, th


def _fitted(img, spec) -> np.ndarray:
    img = fit(to_channels(img, spec.channels), spec.height, spec.width, spec.resize)
    return np.asarray(img, dtype=np.uint8).reshape(spec.height, spec.width, spec.channels)


def from_encoded(data: bytes, spec, max_pixels: int) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Encoded image bytes -> (pixels (H, W, C) for `spec`, (height, width) as stored in the file)."""
    img, stored = open_image(data, max_pixels, MAX_PIXELS_SETTING,
                             draft_for=lambda hw: _draft_size(hw, spec.size, spec.resize))
    return _fitted(img, spec), stored


def from_pixels(data: bytes, height: int, width: int, channels: int, bgr: bool, spec,
                max_pixels: int) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Raw pixel bytes (Spark's image struct when `bgr`, else the record contract) -> (pixels, (h, w))."""
    from PIL import Image
    if not data or height <= 0 or width <= 0:
        raise Reject("no pixels (Spark's image source marks files it could not decode this way)")
    if channels not in (1, 3, 4):
        raise Reject(f"{channels} channels; supported: 1 (gray), 3 (RGB/BGR), 4 (with alpha)")
    if len(data) != height * width * channels:
        raise Reject(f"{len(data)} bytes of pixels, expected {height}x{width}x{channels}")
    if height * width > max_pixels:
        raise Reject(f"{width}x{height} = {height * width} pixels exceeds {MAX_PIXELS_SETTING}={max_pixels}")
    arr = np.frombuffer(data, np.uint8).reshape(height, width, channels)
    if channels == 4:
        arr = arr[..., :3]
    if bgr and arr.shape[-1] == 3:
        arr = arr[..., ::-1]
    img = Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.shape[-1] == 1 else arr),
                          "L" if arr.shape[-1] == 1 else "RGB")
    return _fitted(img, spec), (height, width)


def fit_batch(images: np.ndarray, spec, bgr: bool = False) -> np.ndarray:
    """uint8 images (N, H, W, C) of one size, C in 1/3/4 -> (N, spec.height, spec.width, spec.channels) uint8 by
    the same rule every input form takes (from_pixels): for tests and benchmarks that feed a network arrays."""
    out = np.empty((len(images), spec.height, spec.width, spec.channels), np.uint8)
    for i, image in enumerate(images):
        h, w, c = image.shape
        out[i] = from_pixels(np.ascontiguousarray(image).tobytes(), h, w, c, bgr, spec, h * w)[0]
    return out
