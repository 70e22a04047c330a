"""Filter ops on uint8 images, one OpenCV call per image: gaussian blur and JPEG compression artefacts.

Neither is a map of single pixel values, so they run on the uint8 images (mode "uint8", see
pipelines.augment.pixels) after any pending colour map is applied; each image's result depends on
that image and its own draws only.  OpenCV runs single-threaded (pipelines.augment.resample._cv2).
"""
from __future__ import annotations

import numpy as np

from pipelines.augment.params import Op, Param
from pipelines.augment.resample import _cv2


def blur_kernel_size(sigma: float) -> int:
    """The odd kernel width for sigma: int(3.5 sigma) * 2 + 1, as PIL and albumentations choose it."""
    return int(sigma * 3.5) * 2 + 1


def _channels_last(image: np.ndarray) -> np.ndarray:
    """(H, W, C) as OpenCV takes it: a 2-d view for one channel."""
    return image[..., 0] if image.shape[-1] == 1 else image


class Blur(Op):
    name, kind, mode = "blur", "pixel", "uint8"
    doc = ("gaussian blur with sigma (pixels) drawn per image; kernel width int(3.5 sigma) * 2 + 1, "
           "edges reflected (OpenCV's BORDER_REFLECT_101)")
    params = {"sigma": Param("range", (0.5, 2.0), 0.05, 50.0, doc="standard deviation of the kernel, pixels")}

    def draw(self, keys, h, w):
        return {"sigma": self.between(keys, 1, self.values["sigma"])}

    def apply_uint8(self, images, d, keys):
        cv2 = _cv2()
        for image, sigma in zip(images, d["sigma"].tolist()):
            k = blur_kernel_size(sigma)
            plane = _channels_last(image)
            cv2.GaussianBlur(plane, (k, k), sigma, dst=plane, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, C) uint8 encoded as a JPEG of that quality (libjpeg through OpenCV) and decoded again.

    RGB is handed to the encoder in OpenCV's BGR order, so its luma and chroma are those of the real
    colours; one and four channel images are encoded as grey and as BGR plus nothing else (alpha
    passes through unchanged)."""
    cv2 = _cv2()
    c = image.shape[-1]
    if c == 1:
        ok, data = cv2.imencode(".jpg", image[..., 0], (cv2.IMWRITE_JPEG_QUALITY, int(quality)))
        return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)[..., None]
    colour = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", colour, (cv2.IMWRITE_JPEG_QUALITY, int(quality)))
    decoded = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if c == 3:
        return decoded
    out = image.copy()
    out[..., :3] = decoded
    return out


class Jpeg(Op):
    name, kind, mode = "jpeg", "pixel", "uint8"
    doc = "JPEG compression artefacts: encode and decode each image at a quality drawn per image (integer)"
    params = {"quality": Param("range", (50, 95), 1, 100, doc="JPEG quality, 1-100 (drawn as an integer)")}

    def draw(self, keys, h, w):
        lo, hi = self.values["quality"]
        lo, hi = int(round(lo)), int(round(hi))
        quality = lo + np.minimum((self.u(keys, 1) * (hi - lo + 1)).astype(np.int64), hi - lo)
        return {"quality": quality}

    def apply_uint8(self, images, d, keys):
        for i, quality in enumerate(d["quality"].tolist()):
            images[i] = jpeg_round_trip(images[i], quality)
