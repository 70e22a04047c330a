"""Filter ops on uint8 images, one OpenCV call per image: gaussian blur and JPEG compression artefacts.

Neither is a map of single pixel values, so they run on the uint8 images (mode "uint8", see
pipelines.augmentation.pixels) after any pending colour map is applied; each image's result depends on
that image and its own draws only.  OpenCV runs single-threaded (pipelines.augmentation.resample._cv2).
"""
from __future__ import annotations

import numpy as np

from pipelines.augmentation.params import Op, Param
from pipelines.augmentation.resample import _cv2


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

    def apply_uint8_to(self, src, dst, idx, d, keys):
        """dst[i] = src[i] blurred for the images idx ((N, H, W, C) uint8; dst may be src).

        The kernel is OpenCV's Gaussian (cv2.getGaussianKernel: exp(-x^2 / 2 sigma^2), normalised) in
        float32, applied by cv2.sepFilter2D, which accumulates in float32 and rounds once; measured
        about 30% faster at 224x224 (the same at 512x512) than cv2.GaussianBlur's bit-exact fixed-point
        route for the same kernel (the two differ by rounding only)."""
        cv2 = _cv2()
        for i, sigma in zip(idx.tolist(), d["sigma"].tolist()):
            kernel = cv2.getGaussianKernel(blur_kernel_size(sigma), sigma, cv2.CV_32F)
            cv2.sepFilter2D(_channels_last(src[i]), -1, kernel, kernel, dst=_channels_last(dst[i]),
                            borderType=cv2.BORDER_REFLECT_101)


def jpeg_round_trip(image: np.ndarray, quality: int, out: np.ndarray) -> None:
    """out = (H, W, C) uint8 image encoded as a JPEG of that quality (libjpeg through OpenCV) and decoded
    again (out may be image).

    RGB is handed to the encoder in OpenCV's BGR order, so its luma and chroma are those of the real
    colours; one and four channel images are encoded as grey and as BGR plus nothing else (alpha
    passes through unchanged)."""
    cv2 = _cv2()
    c = image.shape[-1]
    if c == 1:
        ok, data = cv2.imencode(".jpg", image[..., 0], (cv2.IMWRITE_JPEG_QUALITY, int(quality)))
        out[..., 0] = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
        return
    colour = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", colour, (cv2.IMWRITE_JPEG_QUALITY, int(quality)))
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if c == 3:
        cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB, dst=out)
        return
    out[..., :3] = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    out[..., 3] = image[..., 3]


class Jpeg(Op):
    name, kind, mode = "jpeg", "pixel", "uint8"
    doc = "JPEG compression artefacts: encode and decode each image at a quality drawn per image (integer)"
    params = {"quality": Param("range", (50, 95), 1, 100, doc="JPEG quality, 1-100 (drawn as an integer)")}

    def draw(self, keys, h, w):
        lo, hi = self.values["quality"]
        lo, hi = int(round(lo)), int(round(hi))
        quality = lo + np.minimum((self.u(keys, 1) * (hi - lo + 1)).astype(np.int64), hi - lo)
        return {"quality": quality}

    def apply_uint8_to(self, src, dst, idx, d, keys):
        """dst[i] = src[i] through JPEG for the images idx ((N, H, W, C) uint8; dst may be src)."""
        for i, quality in zip(idx.tolist(), d["quality"].tolist()):
            jpeg_round_trip(src[i], quality, dst[i])
