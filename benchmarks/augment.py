"""`make bench-augment`: sparkcnn's augmentation against Augmentor (MNIST) and albumentations (photos), same ops, same images, same run.

Both sides run single-threaded in this one process (OpenCV pinned to one thread), on the
same real images, so images/s is images/s per core.

MNIST: 28x28 digits against Augmentor 0.2.12.  Augmentor runs its in-memory path
(`Pipeline._execute_with_array`, what its Keras generator uses: one PIL call per op per image);
sparkcnn runs `pipelines.augmentation.pipeline.Pipeline.apply` over batches of 1024 (all geometric ops fused into
one resample).  The cpu/wall columns (Augmentor, sparkcnn) are the process's CPU seconds per wall
second while each side ran: about 1.0 confirms one core.  Augmentor is not a project dependency: it is installed on first use into
~/.cache/sparkcnn/bench-augmentor (pip --target, no deps besides tqdm) and imported from there.

Photos: the 20 real ImageNet JPEGs of the foolbox 3.3.4 wheel (512x512 RGB), resized to 224x224
(area interpolation) and as they are at 512x512, repeated to --photos images (each copy its own
sample, so its own draws), against albumentations 2.0.8 (what users of photo pipelines pick: one
OpenCV call per op per image), each image through `A.Compose([...])(image=img)`, ours through
Pipeline.apply over batches of the size the Spark stage uses (remote.rows_per_call: 111 photos at
224x224, 21 at 512x512).  PHOTO_CASES pairs every op of ours with the
albumentations transform and parameter ranges that match it and says where they differ.
albumentations is installed on first use into ~/.cache/sparkcnn/bench-albumentations with
--no-deps plus the few dependencies the venv lacks (ALBUMENTATIONS_PACKAGES): pip's own resolution
would put numpy 2 and OpenCV 5 in front of the venv's numpy and OpenCV 4.10, and then the two
sides would not run the same OpenCV.  Ratios are ours / theirs, medians of --repeats, measured in
this one run.  For the ops both sides spend in one OpenCV call per image, the photo table also has
that call alone (`_floor_calls`: mid-range parameters, a reused output, nothing else) as `floor`
(images/s) and `ceiling` = floor / albumentations: the highest ratio any implementation built on
that call can reach, whatever its Python does.

With --spark (and the MNIST datasets from `sparkcnn ingest`), the whole augment stage is timed
too: Parquet in, augmented Parquet out, rows/s per Spark core.

    python -m benchmarks.augment [--images 4096] [--photos 256] [--sides 224,512] [--only mnist|photos]
                                 [--repeats 3] [--spark]
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.report_file import write_report

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):   # one core, both sides
    os.environ.setdefault(_var, "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")   # albumentations asks PyPI for news on import

import numpy as np  # noqa: E402

AUGMENTOR_DIR = os.path.expanduser("~/.cache/sparkcnn/bench-augmentor")
AUGMENTOR_VERSION = "0.2.12"
AUGMENTOR_PACKAGES = [f"Augmentor=={AUGMENTOR_VERSION}", "tqdm"]
ALBUMENTATIONS_DIR = os.path.expanduser("~/.cache/sparkcnn/bench-albumentations")
ALBUMENTATIONS_VERSION = "2.0.8"
# albumentations' own dependencies the venv lacks (pydantic, PyYAML, typing-extensions, OpenCV come from
# the venv); scipy pinned to a release built for the venv's numpy 1.26
ALBUMENTATIONS_PACKAGES = [f"albumentations=={ALBUMENTATIONS_VERSION}", "albucore==0.0.24", "scipy==1.15.3",
                           "stringzilla==5.3.2", "simsimd==6.5.16"]

# name -> (Augmentor pipeline builder, sparkcnn pipeline): the same operations and ranges
CASES = {
    "rotate +-25 (no crop)": (
        lambda p: p.rotate_without_crop(1.0, 25, 25),
        [{"op": "rotate", "degrees": [-25, 25]}]),
    "rotate +-25 (Augmentor's crop+resize; ours: rotate then zoom 1.3)": (
        lambda p: p.rotate(1.0, 25, 25),
        [{"op": "rotate", "degrees": [-25, 25]}, {"op": "zoom", "factor": [1.3, 1.3]}]),
    "seeds: rotate p=0.9 +-25": (
        lambda p: p.rotate(0.9, 25, 25),
        [{"op": "rotate", "p": 0.9, "degrees": [-25, 25]}, {"op": "zoom", "p": 0.9, "factor": [1.3, 1.3]}]),
    "chain: rotate, zoom, shear, flip_lr": (
        lambda p: (p.rotate_without_crop(1.0, 25, 25), p.zoom(1.0, 1.0, 1.2), p.shear(1.0, 10, 10),
                   p.flip_left_right(0.5)),
        [{"op": "rotate", "degrees": [-25, 25]}, {"op": "zoom", "factor": [1.0, 1.2]},
         {"op": "shear", "x_degrees": [-10, 10]}, {"op": "flip_lr", "p": 0.5}]),
    "skew (perspective, magnitude 0.2)": (
        lambda p: p.skew(1.0, 0.2),
        [{"op": "skew", "magnitude": 0.2}]),
    "elastic (grid 4x4, magnitude 2)": (
        lambda p: p.random_distortion(1.0, 4, 4, 2),
        [{"op": "elastic", "grid_width": 4, "grid_height": 4, "magnitude": 2}]),
    "geometric chain + elastic (6 ops)": (
        lambda p: (p.rotate_without_crop(1.0, 25, 25), p.zoom(1.0, 1.0, 1.2), p.shear(1.0, 10, 10),
                   p.skew(1.0, 0.2), p.random_distortion(1.0, 4, 4, 2), p.flip_left_right(0.5)),
        [{"op": "rotate", "degrees": [-25, 25]}, {"op": "zoom", "factor": [1.0, 1.2]},
         {"op": "shear", "x_degrees": [-10, 10]}, {"op": "skew", "magnitude": 0.2},
         {"op": "flip_lr", "p": 0.5}, {"op": "elastic", "grid_width": 4, "grid_height": 4, "magnitude": 2}]),
    "photometric: brightness, contrast, erasing": (
        lambda p: (p.random_brightness(1.0, 0.8, 1.2), p.random_contrast(1.0, 0.8, 1.2), p.random_erasing(1.0, 0.2)),
        [{"op": "brightness", "factor": [0.8, 1.2]}, {"op": "contrast", "factor": [0.8, 1.2]},
         {"op": "erase", "area": [0.02, 0.2], "fill": "noise"}]),
}


def _black(**kw):
    """albumentations' settings for our resampling: bilinear, black outside (BORDER_CONSTANT, 0)."""
    return {"interpolation": 1, "border_mode": 0, "fill": 0, "p": 1, **kw}


# name -> (albumentations transforms for side s, our pipeline for side s, how they correspond)
PHOTO_CASES = {
    "rotate +-25": (
        lambda A, s: [A.Rotate(limit=(-25, 25), **_black())],
        lambda s: [{"op": "rotate", "degrees": [-25, 25]}],
        "Rotate(limit=(-25, 25)), corners black"),
    "rotate90": (
        lambda A, s: [A.RandomRotate90(p=1)],
        lambda s: [{"op": "rotate90"}],
        "RandomRotate90 (theirs also draws 0 degrees, ours 90/180/270)"),
    "shift +-25%": (
        lambda A, s: [A.Affine(translate_percent={"x": (-0.25, 0.25), "y": (-0.25, 0.25)}, **_black())],
        lambda s: [{"op": "shift"}],
        "Affine(translate_percent x, y in (-0.25, 0.25))"),
    "shear x +-10": (
        lambda A, s: [A.Affine(shear={"x": (-10, 10), "y": (0, 0)}, **_black())],
        lambda s: [{"op": "shear", "x_degrees": [-10, 10]}],
        "Affine(shear x in (-10, 10) degrees)"),
    "zoom 0.9-1.1": (
        lambda A, s: [A.Affine(scale=(0.9, 1.1), **_black())],
        lambda s: [{"op": "zoom", "factor": [0.9, 1.1]}],
        "Affine(scale=(0.9, 1.1))"),
    "crop 0.8-1 + resize": (
        lambda A, s: [A.RandomSizedCrop(min_max_height=(int(0.8 * s), s), size=(s, s), w2h_ratio=1.0, p=1)],
        lambda s: [{"op": "crop", "size": [0.8, 1.0]}],
        "RandomSizedCrop(height 0.8-1 x side, square, resized back)"),
    "flip_lr": (lambda A, s: [A.HorizontalFlip(p=1)], lambda s: [{"op": "flip_lr"}], "HorizontalFlip"),
    "flip_tb": (lambda A, s: [A.VerticalFlip(p=1)], lambda s: [{"op": "flip_tb"}], "VerticalFlip"),
    "skew (perspective)": (
        lambda A, s: [A.Perspective(scale=(0.0, 0.1), keep_size=True, **_black())],
        lambda s: [{"op": "skew", "magnitude": 0.2}],
        "Perspective(scale=(0, 0.1)): corners jittered by N(0, <=0.1 side); ours moves one side or corner <=0.2 side"),
    "elastic grid 4x4": (
        lambda A, s: [A.GridDistortion(num_steps=4, distort_limit=0.3, **_black())],
        lambda s: [{"op": "elastic", "grid_width": 4, "grid_height": 4, "magnitude": 0.3 * s / 4}],
        "GridDistortion(num_steps=4, distort_limit=0.3): vertices move <=0.3 cell; ours magnitude 0.3 cell in pixels"),
    "resized_crop": (
        lambda A, s: [A.RandomResizedCrop(size=(s, s), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), p=1)],
        lambda s: [{"op": "resized_crop"}],
        "RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3)), both torchvision's draw"),
    "brightness 0.8-1.2": (
        lambda A, s: [A.RandomBrightnessContrast(brightness_limit=(0, 0), contrast_limit=(-0.2, 0.2), p=1)],
        lambda s: [{"op": "brightness"}],
        "RandomBrightnessContrast(contrast_limit=(-0.2, 0.2), brightness_limit=0): their 'contrast' is the gain x(1+c)"),
    "contrast 0.8-1.2": (
        lambda A, s: [A.ColorJitter(brightness=(1, 1), contrast=(0.8, 1.2), saturation=(1, 1), hue=(0, 0), p=1)],
        lambda s: [{"op": "contrast"}],
        "ColorJitter(contrast=(0.8, 1.2)) alone: about the grey mean (ours: the mean of all values)"),
    "hue +-20, saturation": (
        lambda A, s: [A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=0, p=1)],
        lambda s: [{"op": "hue_saturation", "hue": [-20, 20], "saturation": [0.8, 1.2]}],
        "HueSaturationValue(hue +-10 OpenCV units = +-20 deg, S +-20/255): HSV; ours rotates about grey, scales chroma"),
    "colour_jitter": (
        lambda A, s: [A.ColorJitter(brightness=(0.8, 1.2), contrast=(0.8, 1.2), saturation=(0.8, 1.2),
                                    hue=(-0.05, 0.05), p=1)],
        lambda s: [{"op": "colour_jitter", "hue": [-18, 18]}],
        "ColorJitter(0.8-1.2 x3, hue +-0.05 turn = +-18 deg): theirs in random order, hue in HSV"),
    "noise sigma 0-10": (
        lambda A, s: [A.GaussNoise(std_range=(0.0, 10 / 255), mean_range=(0.0, 0.0), per_channel=True, p=1)],
        lambda s: [{"op": "noise", "sigma": [0, 10]}],
        "GaussNoise(std_range=(0, 10/255)) per channel"),
    "erase, noise fill": (
        lambda A, s: [A.Erasing(scale=(0.02, 0.2), ratio=(0.3, 3.3), fill="random", p=1)],
        lambda s: [{"op": "erase", "area": [0.02, 0.2], "fill": "noise"}],
        "Erasing(scale=(0.02, 0.2), ratio=(0.3, 3.3), fill='random')"),
    "blur sigma 0.5-2": (
        lambda A, s: [A.GaussianBlur(blur_limit=0, sigma_limit=(0.5, 2.0), p=1)],
        lambda s: [{"op": "blur", "sigma": [0.5, 2.0]}],
        "GaussianBlur(sigma_limit=(0.5, 2)), both kernels int(3.5 sigma) * 2 + 1"),
    "jpeg quality 50-95": (
        lambda A, s: [A.ImageCompression(compression_type="jpeg", quality_range=(50, 95), p=1)],
        lambda s: [{"op": "jpeg", "quality": [50, 95]}],
        "ImageCompression(jpeg, quality 50-95); theirs hands RGB to the encoder as BGR, ours swaps it"),
    "chain: rotate, zoom, shear, flip_lr": (
        lambda A, s: [A.Affine(rotate=(-25, 25), scale=(1.0, 1.2), shear={"x": (-10, 10), "y": (0, 0)}, **_black()),
                      A.HorizontalFlip(p=0.5)],
        lambda s: [{"op": "rotate", "degrees": [-25, 25]}, {"op": "zoom", "factor": [1.0, 1.2]},
                   {"op": "shear", "x_degrees": [-10, 10]}, {"op": "flip_lr", "p": 0.5}],
        "Affine(rotate, scale, shear) + HorizontalFlip(p=0.5)"),
    "chain: brightness, contrast, erase": (
        lambda A, s: [A.RandomBrightnessContrast(brightness_limit=(0, 0), contrast_limit=(-0.2, 0.2), p=1),
                      A.ColorJitter(brightness=(1, 1), contrast=(0.8, 1.2), saturation=(1, 1), hue=(0, 0), p=1),
                      A.Erasing(scale=(0.02, 0.2), ratio=(0.3, 3.3), fill="random", p=1)],
        lambda s: [{"op": "brightness"}, {"op": "contrast"}, {"op": "erase", "area": [0.02, 0.2], "fill": "noise"}],
        "the three rows above"),
    "chain: ImageNet train (resized_crop, flip_lr p=.5, colour_jitter)": (
        lambda A, s: [A.RandomResizedCrop(size=(s, s), p=1), A.HorizontalFlip(p=0.5),
                      A.ColorJitter(brightness=(0.8, 1.2), contrast=(0.8, 1.2), saturation=(0.8, 1.2),
                                    hue=(-0.05, 0.05), p=1)],
        lambda s: [{"op": "resized_crop"}, {"op": "flip_lr", "p": 0.5}, {"op": "colour_jitter", "hue": [-18, 18]}],
        "RandomResizedCrop + HorizontalFlip(p=0.5) + ColorJitter"),
}


def _floor_calls(cv2, side: int) -> dict:
    """Per photo case whose work both sides do in one OpenCV call per image: that call alone, with a
    mid-range parameter, written into a reused output image (no draws, no Python besides the loop).
    Its rate bounds any implementation built on that call: albumentations' time over this floor's is
    the highest ratio to albumentations such an implementation can reach."""
    c = side / 2
    rot = cv2.getRotationMatrix2D((c, c), 12.5, 1.0)
    shear = np.array([[1, np.tan(np.radians(5)), -c * np.tan(np.radians(5))], [0, 1, 0]])
    zoom = cv2.getRotationMatrix2D((c, c), 0, 1.05)
    persp = cv2.getPerspectiveTransform(np.float32([[0, 0], [side, 0], [side, side], [0, side]]),
                                        np.float32([[side * .05, 0], [side * .95, 0], [side, side], [0, side]]))
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    grid_x, grid_y = xs + np.float32(1.5) * np.sin(ys / side * 6), ys + np.float32(1.5) * np.cos(xs / side * 6)
    box = int(0.9 * side)
    quarter = int(side * 0.55)   # resized_crop: a box of about the median area (0.3) of the image
    sigma = 1.25
    k = int(3.5 * sigma) * 2 + 1
    kernel = cv2.getGaussianKernel(k, sigma, cv2.CV_32F)
    from pipelines.augmentation.pixels import apply_table
    table = np.clip(np.rint(np.arange(256) * 1.1), 0, 255).astype(np.uint8)
    lin, black = cv2.INTER_LINEAR, {"borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    return {
        "rotate +-25": ("cv2.warpAffine, 12.5 degrees", lambda im, d: cv2.warpAffine(im, rot, (side, side), dst=d, flags=lin, **black)),
        "shear x +-10": ("cv2.warpAffine, shear 5 degrees", lambda im, d: cv2.warpAffine(im, shear, (side, side), dst=d, flags=lin, **black)),
        "zoom 0.9-1.1": ("cv2.warpAffine, scale 1.05", lambda im, d: cv2.warpAffine(im, zoom, (side, side), dst=d, flags=lin, **black)),
        "crop 0.8-1 + resize": ("cv2.resize of a 0.9 x side box (theirs; ours is a warpAffine)",
                                lambda im, d: cv2.resize(im[:box, :box], (side, side), dst=d, interpolation=lin)),
        "flip_lr": ("cv2.flip", lambda im, d: cv2.flip(im, 1, dst=d)),
        "flip_tb": ("cv2.flip", lambda im, d: cv2.flip(im, 0, dst=d)),
        "skew (perspective)": ("cv2.warpPerspective", lambda im, d: cv2.warpPerspective(im, persp, (side, side), dst=d, flags=lin, **black)),
        "elastic grid 4x4": ("cv2.remap, float maps", lambda im, d: cv2.remap(im, grid_x, grid_y, lin, dst=d, **black)),
        "resized_crop": ("cv2.resize of a 0.55 x side box", lambda im, d: cv2.resize(im[:quarter, :quarter], (side, side), dst=d, interpolation=lin)),
        "brightness 0.8-1.2": ("a copy + stringzilla's translate through a 256-entry table (both sides)",
                               lambda im, d: (np.copyto(d, im), apply_table(d, table))),
        "blur sigma 0.5-2": ("cv2.sepFilter2D, sigma 1.25", lambda im, d: cv2.sepFilter2D(im, -1, kernel, kernel, dst=d)),
        "jpeg quality 50-95": ("cv2.imencode + imdecode, quality 72",
                               lambda im, d: cv2.imdecode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 72])[1], 1)),
        "chain: rotate, zoom, shear, flip_lr": ("cv2.warpAffine", lambda im, d: cv2.warpAffine(im, rot, (side, side), dst=d, flags=lin, **black)),
    }


def import_from_cache(module: str, directory: str, packages: list):
    """`module` from a benchmark-only directory, pip-installed there (--no-deps) on first use."""
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        return importlib.import_module(module)
    except ImportError:
        pass
    print(f"installing {' '.join(packages)} into {directory} (benchmark only)", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", directory, *packages],
                   check=True)
    # the failed import above cached "no such directory" for the directory; forget it
    sys.path_importer_cache.pop(directory, None)
    importlib.invalidate_caches()
    return importlib.import_module(module)


def import_augmentor():
    return import_from_cache("Augmentor", AUGMENTOR_DIR, AUGMENTOR_PACKAGES)


def import_albumentations():
    """albumentations from its benchmark directory, checked to run on the venv's numpy and OpenCV."""
    A = import_from_cache("albumentations", ALBUMENTATIONS_DIR, ALBUMENTATIONS_PACKAGES)
    import cv2
    for mod in (np, cv2):
        if os.path.realpath(mod.__file__).startswith(os.path.realpath(ALBUMENTATIONS_DIR)):
            raise RuntimeError(f"{mod.__name__} was imported from {ALBUMENTATIONS_DIR}, not the venv: remove that "
                               "directory and run again (its packages must be installed with --no-deps)")
    return A


def mnist_digits(count: int) -> np.ndarray:
    from pipelines.ingest import idx
    from pipelines.ingest.fetch import fetch_mnist
    files = fetch_mnist("~/.cache/sparkcnn/downloads", "auto")
    with tempfile.TemporaryDirectory() as scratch:
        header = idx.read_header(idx.ensure_uncompressed(files["test_images"], scratch))
        return idx.read_rows(header, 0, min(count, header.count)).copy()


def rate(fn, n: int, repeats: int):
    """Images per wall-clock second (median of repeats) and this process's CPU seconds per wall second:
    about 1.0 means one core did the work, so images/s is images/s per core."""
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return n / statistics.median(times), sum(cpu) / sum(times)


def bench_ops(images: np.ndarray, repeats: int) -> list:
    Augmentor = import_augmentor()
    from pipelines.augmentation.pipeline import Pipeline
    n = len(images)
    batch = images[..., None]
    ids, samples = np.arange(n), np.ones(n, np.int64)
    rows = []
    for name, (build, steps) in CASES.items():
        aug = Augmentor.Pipeline()
        build(aug)

        def augmentor_run():
            for img in images:
                aug._execute_with_array(img)
        ours = Pipeline.parse(steps, seed=1)

        def ours_run():
            for lo in range(0, n, 1024):
                ours.apply(batch[lo:lo + 1024], ids[lo:lo + 1024], samples[lo:lo + 1024])
        ours_run()   # warm (imports, OpenCV set-up, working arrays)
        a, a_cpu = rate(augmentor_run, n, repeats)
        s, s_cpu = rate(ours_run, n, repeats)
        rows.append({"case": name, "augmentor_images_per_s": a, "sparkcnn_images_per_s": s, "ratio": s / a,
                     "augmentor_cpu_per_wall": a_cpu, "sparkcnn_cpu_per_wall": s_cpu})
        print(f"  {name:<66} {a:9.0f} {s:11.0f} {s / a:7.1f}x {a_cpu:6.2f} {s_cpu:6.2f}", flush=True)
    return rows


def imagenet_photos(side: int) -> np.ndarray:
    """The foolbox wheel's 20 ImageNet photos, RGB, side x side (area interpolation): (20, side, side, 3) uint8."""
    import io

    import cv2
    from PIL import Image

    from pipelines.ingest.fetch import foolbox_samples
    out = []
    for _, _, data in foolbox_samples("imagenet"):
        img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        out.append(img if img.shape[:2] == (side, side) else
                   cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def bench_photos(side: int, count: int, repeats: int) -> list:
    """Every PHOTO_CASES row at side x side: albumentations image by image, ours in batches."""
    A = import_albumentations()
    import cv2
    cv2.setNumThreads(1)
    from pipelines.augmentation.pipeline import Pipeline
    base = imagenet_photos(side)
    images = np.ascontiguousarray(base[np.arange(count) % len(base)])
    ids, samples = np.arange(count) % len(base), np.arange(count) // len(base)
    from pipelines.augment.remote import rows_per_call
    step = rows_per_call(images.shape[1:])   # what a Spark task of the augment stage hands Pipeline.apply
    floors = _floor_calls(cv2, side)
    scratch = np.empty_like(images[0])
    rows = []
    for name, (theirs, ours_steps, mapping) in PHOTO_CASES.items():
        compose = A.Compose(theirs(A, side), seed=1)

        def theirs_run():
            for img in images:
                compose(image=img)["image"]
        ours = Pipeline.parse(ours_steps(side), seed=1)

        def ours_run():
            for lo in range(0, count, step):
                ours.apply(images[lo:lo + step], ids[lo:lo + step], samples[lo:lo + step])
        theirs_run()   # warm both (imports, OpenCV set-up, working arrays)
        ours_run()
        a, a_cpu = rate(theirs_run, count, repeats)
        s, s_cpu = rate(ours_run, count, repeats)
        row = {"case": name, "side": side, "albumentations": mapping, "albumentations_images_per_s": a,
               "sparkcnn_images_per_s": s, "ratio": s / a, "albumentations_cpu_per_wall": a_cpu,
               "sparkcnn_cpu_per_wall": s_cpu}
        ceiling = ""
        if name in floors:
            call, fn = floors[name]
            f, _ = rate(lambda: [fn(img, scratch) for img in images], count, repeats)
            row.update({"floor_call": call, "floor_images_per_s": f, "ceiling_ratio": f / a})
            ceiling = f"{f:9.0f} {f / a:6.2f}x"
        rows.append(row)
        mark = "" if s / a >= 1.5 else "   < 1.5x"
        print(f"  {name:<66} {a:9.0f} {s:11.0f} {s / a:7.2f}x {a_cpu:6.2f} {s_cpu:6.2f} {ceiling:>17}{mark}",
              flush=True)
    return rows


def bench_stage(repeats: int):
    """The augment stage end to end on MNIST train: rows written per second per Spark core."""
    from pipelines.augment.stage import augment_split, pipeline_of
    from pipelines.core.records import read_meta
    from pipelines.core.session import build_spark
    from pipelines.stages import load_config
    cfg = load_config("conf/augment_mnist.yaml", ["augment.output_suffix=_benchaug"])
    if not os.path.exists(cfg.dataset_dir("train")):
        print("  (skipped: no MNIST datasets; run `sparkcnn ingest --conf conf/augment_mnist.yaml` first)")
        return None
    spark = build_spark(cfg.spark)
    cores = spark.sparkContext.defaultParallelism
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dest, meta = augment_split(spark, cfg, "train", pipeline_of(cfg))
        times.append(time.perf_counter() - t0)
    rows = meta.num_rows
    per_core = rows / statistics.median(times) / cores
    print(f"  augment stage, conf/augment_mnist.yaml: {read_meta(cfg.dataset_dir('train')).num_rows} -> {rows} rows "
          f"in {statistics.median(times):.1f}s on {cores} cores = {per_core:.0f} rows/s per core "
          f"(Parquet read + augment + Parquet write)")
    return {"rows": rows, "seconds": times, "cores": cores, "rows_per_s_per_core": per_core, "output": dest}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4096, help="MNIST digits")
    ap.add_argument("--photos", type=int, default=256, help="photos per size (the 20 repeated, each copy its own draws)")
    ap.add_argument("--sides", default="224,512", help="photo sizes, comma-separated")
    ap.add_argument("--only", choices=("mnist", "photos"), help="run one workload")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--spark", action="store_true", help="also time the Spark augment stage on MNIST train")
    ap.add_argument("--out", default="runs/bench_augment.json")
    args = ap.parse_args(argv)
    report = {"repeats": args.repeats}
    if args.only != "photos":
        images = mnist_digits(args.images)
        print(f"AUGMENTATION {len(images)} MNIST digits 28x28, single thread each, median of {args.repeats} "
              f"(images/s = images/s per core)")
        print(f"  {'case':<66} {'Augmentor':>9} {'sparkcnn':>11} {'ratio':>8} {'cpu/wall':>13}")
        report.update({"images": len(images), "ops": bench_ops(images, args.repeats)})
        ratios = [r["ratio"] for r in report["ops"]]
        print(f"  median ratio {statistics.median(ratios):.1f}x, min {min(ratios):.1f}x")
    if args.only != "mnist":
        print("\nPHOTOS: how each op of ours maps to albumentations " + ALBUMENTATIONS_VERSION)
        for name, (_, _, mapping) in PHOTO_CASES.items():
            print(f"  {name:<66} {mapping}")
        report["photos"] = {}
        for side in (int(v) for v in args.sides.split(",")):
            print(f"\nAUGMENTATION {args.photos} ImageNet photos {side}x{side} RGB (20 real photos, repeated), "
                  f"single thread each, median of {args.repeats}")
            print(f"  {'case':<66} {'albument.':>9} {'sparkcnn':>11} {'ratio':>8} {'cpu/wall':>13} "
                  f"{'floor':>9} {'ceiling':>7}")
            rows = bench_photos(side, args.photos, args.repeats)
            report["photos"][str(side)] = rows
            ratios = [r["ratio"] for r in rows]
            print(f"  median ratio {statistics.median(ratios):.2f}x, min {min(ratios):.2f}x, "
                  f"{sum(r >= 1.5 for r in ratios)}/{len(ratios)} at >= 1.5x")
    if args.spark:
        report["stage"] = bench_stage(1)
    write_report(args.out, report, "make bench-augment   (or python -m benchmarks.augment)")


if __name__ == "__main__":
    main()
