"""`make bench-augment`: sparkcnn's augmentation against the Augmentor package, same ops, same images, same run.

Both sides run single-threaded in this one process (OpenCV pinned to one thread), on the
same real MNIST digits, so images/s is images/s per core.  Augmentor runs its in-memory path
(`Pipeline._execute_with_array`, what its Keras generator uses: one PIL call per op per image);
sparkcnn runs `pipelines.augment.pipeline.Pipeline.apply` over batches of 1024 (all geometric ops fused into
one resample).  The cpu/wall columns (Augmentor, sparkcnn) are the process's CPU seconds per wall
second while each side ran: about 1.0 confirms one core.  Augmentor is not a project dependency: it is installed on first use into
~/.cache/sparkcnn/bench-augmentor (pip --target, no deps besides tqdm) and imported from there.

With --spark (and the MNIST datasets from `sparkcnn ingest`), the whole augment stage is timed
too: Parquet in, augmented Parquet out, rows/s per Spark core.

    python -m benchmarks.augment [--images 4096] [--repeats 3] [--spark]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

AUGMENTOR_DIR = os.path.expanduser("~/.cache/sparkcnn/bench-augmentor")
AUGMENTOR_VERSION = "0.2.12"

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


def import_augmentor():
    """Augmentor from the benchmark's own directory, installed there on first use."""
    if AUGMENTOR_DIR not in sys.path:
        sys.path.insert(0, AUGMENTOR_DIR)
    try:
        import Augmentor
        return Augmentor
    except ImportError:
        pass
    print(f"installing Augmentor=={AUGMENTOR_VERSION} into {AUGMENTOR_DIR} (benchmark only)", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", AUGMENTOR_DIR,
                    f"Augmentor=={AUGMENTOR_VERSION}", "tqdm"], check=True)
    # the failed import above cached "no such directory" for AUGMENTOR_DIR; forget it
    sys.path_importer_cache.pop(AUGMENTOR_DIR, None)
    importlib.invalidate_caches()
    import Augmentor
    return Augmentor


def mnist_digits(count: int) -> np.ndarray:
    from pipelines.ingest import idx
    from pipelines.ingest.fetch import fetch_mnist
    files = fetch_mnist("~/.cache/sparkcnn/downloads", "auto", log=lambda m: None)
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
    from pipelines.augment.pipeline import Pipeline
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
        dest, meta = augment_split(spark, cfg, "train", pipeline_of(cfg), log=lambda m: None)
        times.append(time.perf_counter() - t0)
    rows = meta.num_rows
    per_core = rows / statistics.median(times) / cores
    print(f"  augment stage, conf/augment_mnist.yaml: {read_meta(cfg.dataset_dir('train')).num_rows} -> {rows} rows "
          f"in {statistics.median(times):.1f}s on {cores} cores = {per_core:.0f} rows/s per core "
          f"(Parquet read + augment + Parquet write)")
    return {"rows": rows, "seconds": times, "cores": cores, "rows_per_s_per_core": per_core, "output": dest}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--spark", action="store_true", help="also time the Spark augment stage on MNIST train")
    ap.add_argument("--out", default="runs/bench_augment.json")
    args = ap.parse_args(argv)
    images = mnist_digits(args.images)
    print(f"AUGMENTATION {len(images)} MNIST digits 28x28, single thread each, median of {args.repeats} "
          f"(images/s = images/s per core)")
    print(f"  {'case':<66} {'Augmentor':>9} {'sparkcnn':>11} {'ratio':>8} {'cpu/wall':>13}")
    report = {"images": len(images), "repeats": args.repeats, "ops": bench_ops(images, args.repeats)}
    ratios = [r["ratio"] for r in report["ops"]]
    print(f"  median ratio {statistics.median(ratios):.1f}x, min {min(ratios):.1f}x")
    if args.spark:
        report["stage"] = bench_stage(1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\n-> {args.out}   reproduce: make bench-augment   (or python -m benchmarks.augment)")


if __name__ == "__main__":
    main()
