"""Regenerate tests/data/bad_corpus/ (committed; ~40 KB). Run from the repo root:

    .venv/bin/python tests/data/make_bad_corpus.py

Every file is deliberately odd; EXPECTED maps each one to its fate (a class, or the start of its
reject reason), and tests/test_bad_corpus.py checks all of them.
"""
import io
import os
import shutil
import struct

import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad_corpus")
rng = np.random.default_rng(0)
rgb = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
gray = rng.integers(0, 256, (28, 28), dtype=np.uint8)


def png(arr, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **kw)
    return buf.getvalue()


FILES = {
    # images that must be accepted (converted to 28x28 grayscale)
    "digits/good.png": png(gray),
    "digits/rgb.png": png(rgb),
    "digits/sixteen_bit.png": None,         # written below: 16-bit grayscale
    "digits/palette.png": None,             # palette (P mode)
    "digits/cmyk.jpg": None,                # CMYK JPEG
    "digits/animated.gif": None,            # GIF: first frame
    "digits/bitmap.bmp": None,
    "digits/png_named.jpg": png(gray),      # wrong extension, valid PNG inside
    "chat noir ü/ok.png": png(gray),        # unicode and a space in a class folder
    "mal étiqueté 7/ok.png": png(gray),     # 'mislabelled' folder name: still a class, by name
    # files that must be rejected, each with a reason
    "digits/empty.png": b"",
    "digits/truncated.png": png(gray)[:60],
    "digits/corrupt.png": png(gray)[:33] + b"\0" * 200,
    "digits/not_an_image.png": b"this is text, not pixels\n",
    "digits/bomb.png": None,                # 6000x6000: over the test's max_pixels
    "digits/.DS_Store": b"\0\0\0\1Bud1",
    "stray_at_root.png": png(gray),
}
EXPECTED = {
    "digits/good.png": "digits", "digits/rgb.png": "digits", "digits/sixteen_bit.png": "digits",
    "digits/palette.png": "digits", "digits/cmyk.jpg": "digits", "digits/animated.gif": "digits",
    "digits/bitmap.bmp": "digits", "digits/png_named.jpg": "digits", "chat noir ü/ok.png": "chat noir ü",
    "mal étiqueté 7/ok.png": "mal étiqueté 7",
    "digits/empty.png": "reject: empty file", "digits/truncated.png": "reject: corrupt or truncated",
    "digits/corrupt.png": "reject: ", "digits/not_an_image.png": "reject: not an image file",
    "digits/bomb.png": "reject: 6000x6000 = 36000000 pixels exceeds", "digits/.DS_Store": "reject: skipped by Spark",
    "stray_at_root.png": "reject: not inside a class folder",
}

if __name__ == "__main__":
    shutil.rmtree(ROOT, ignore_errors=True)
    for rel, data in FILES.items():
        path = os.path.join(ROOT, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if data is not None:
            with open(path, "wb") as f:
                f.write(data)
    Image.fromarray((gray.astype(np.uint16) * 257)).save(os.path.join(ROOT, "digits/sixteen_bit.png"))
    Image.fromarray(rgb).convert("P").save(os.path.join(ROOT, "digits/palette.png"))
    Image.fromarray(rgb).convert("CMYK").save(os.path.join(ROOT, "digits/cmyk.jpg"))
    frames = [Image.fromarray(gray), Image.fromarray(255 - gray)]
    frames[0].save(os.path.join(ROOT, "digits/animated.gif"), save_all=True, append_images=frames[1:])
    Image.fromarray(rgb).save(os.path.join(ROOT, "digits/bitmap.bmp"))
    Image.new("L", (6000, 6000)).save(os.path.join(ROOT, "digits/bomb.png"), optimize=True)
    # IDX files with whole-file problems
    idx_dir = os.path.join(ROOT, "..", "bad_idx")
    shutil.rmtree(idx_dir, ignore_errors=True)
    os.makedirs(idx_dir)
    with open(os.path.join(idx_dir, "wrong-magic-idx3-ubyte"), "wb") as f:
        f.write(b"\x12\x34\x08\x03" + struct.pack(">3I", 2, 28, 28) + bytes(2 * 784))
    with open(os.path.join(idx_dir, "wrong-count-idx3-ubyte"), "wb") as f:
        f.write(b"\x00\x00\x08\x03" + struct.pack(">3I", 5, 28, 28) + bytes(3 * 784))
    sizes = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(os.path.join(ROOT, "..")) for n in ns)
    print(f"corpus written: {sizes} bytes")
