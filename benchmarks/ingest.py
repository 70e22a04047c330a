"""Ingest throughput and memory: Spark ingest vs a single-process PIL/numpy + pyarrow loop.

  folder of PNGs   Spark binaryFile + PIL decode in executors -> Parquet
                   vs one process: os.walk, PIL decode, pyarrow ParquetWriter
                   (MNIST-sized PNGs, where fixed per-job cost dominates, and 400x300 JPEG
                   photos centre-cropped to 128x128, where decoding does)
  IDX              Spark range reads of the IDX file in executors -> Parquet
                   vs one process: numpy reads of the same file, pyarrow ParquetWriter
  two scales       10k PNGs and 60k IDX rows (MNIST as it comes), then 60k PNGs and the IDX
                   file replicated to 600k rows (--idx-copies): an ingest is one Spark job,
                   whose fixed cost (~0.1-0.3 s: scheduling, Python workers) is about the whole
                   single-process loop at the small scale, so only the large one can show the
                   2-core speed-up
  memory           peak RSS of the whole process tree (driver, JVM, Python workers)
                   ingesting 1x and 10x the images; streaming means the ratio stays near 1

Both sides decode the same files and write the same record-contract columns; the
Spark session is started and warmed up by three small ingests before timing (a long-running
cluster's cost, not a job's: the first jobs of a fresh JVM run 30-50% slower).

    python -m benchmarks.ingest [--pngs 10000] [--big-pngs 60000] [--idx-copies 10] [--repeats 5]
"""
import argparse
import os
import shutil
import statistics
import struct
import tempfile
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import records
from pipelines.core.session import build_spark
from pipelines.images.decode import decode_image
from pipelines.ingest import idx
from pipelines.ingest.fetch import fetch_mnist
from pipelines.ingest.sources import open_idx_pair
from pipelines.ingest.stage import ingest
from pipelines.stages import load_config


class PeakRss:
    """Samples the RSS of this process and all its descendants (JVM, Python workers)."""

    def __init__(self, interval=0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _total(self):
        me = psutil.Process()
        total = 0
        for p in [me] + me.children(recursive=True):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def __enter__(self):
        self.peak = self._total()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._total())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def make_png_folder(root, images, labels):
    from PIL import Image
    for k in range(10):
        os.makedirs(os.path.join(root, str(k)), exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels)):
        Image.fromarray(img[..., 0]).save(os.path.join(root, str(label), f"{i}.png"), compress_level=6)


def make_photo_folder(root, count, seed=0):
    """JPEG photos of ~400x300 cut from the 20 real ImageNet images in the foolbox wheel."""
    import io

    from PIL import Image

    from pipelines.ingest.fetch import foolbox_samples
    rng = np.random.default_rng(seed)
    sources = [Image.open(io.BytesIO(png)).convert("RGB") for _, _, png in foolbox_samples("imagenet")]
    for k in range(4):
        os.makedirs(os.path.join(root, f"class{k}"), exist_ok=True)
    for i in range(count):
        img = sources[i % len(sources)]
        w, h = img.size
        x0, y0 = rng.integers(0, w // 4), rng.integers(0, h // 4)
        crop = img.crop((x0, y0, x0 + w * 3 // 4, y0 + h * 3 // 4)).resize((400, 300))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop.save(os.path.join(root, f"class{i % 4}", f"{i}.jpg"), quality=90)


def plain_folder(root, out, shape=(28, 28, 1), resize="reject"):
    """The single-process baseline: walk, PIL-decode, write Parquet with pyarrow."""
    classes = sorted(os.listdir(root))
    writer = None
    ids, labels, images = [], [], []

    def flush():
        nonlocal writer, ids, labels, images
        if not ids:
            return
        batch = records.encode_batch(np.array(ids), np.array(labels), np.stack(images))
        writer = writer or pq.ParquetWriter(out, records.ARROW_SCHEMA)
        writer.write_table(pa.Table.from_batches([batch]))
        ids, labels, images = [], [], []
    n = 0
    for k, cls in enumerate(classes):
        for name in sorted(os.listdir(os.path.join(root, cls))):
            with open(os.path.join(root, cls, name), "rb") as f:
                images.append(decode_image(f.read(), *shape, resize, 10 ** 8))
            ids.append(n)
            labels.append(k)
            n += 1
            if len(ids) == 4096:
                flush()
    flush()
    writer.close()
    return n


def plain_idx(src, rows, out):
    with pq.ParquetWriter(out, records.ARROW_SCHEMA) as writer:
        for lo in range(0, rows, 4096):
            hi = min(rows, lo + 4096)
            images, labels = src.read(lo, hi)
            writer.write_table(pa.Table.from_batches([records.encode_batch(np.arange(lo, hi), labels, images)]))
    return rows


def replicate_idx(src_path, copies, out_path):
    """An IDX file holding `copies` copies of src's items, copied in chunks (never whole in memory)."""
    header = idx.read_header(src_path)
    dims = (header.count * copies,) + header.row_shape
    with open(src_path, "rb") as src, open(out_path, "wb") as out:
        out.write(src.read(3) + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims))
        for _ in range(copies):
            src.seek(header.data_offset)
            shutil.copyfileobj(src, out, 1 << 20)


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return n, statistics.median(times), times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pngs", type=int, default=10000)
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--big-pngs", type=int, default=60000, help="the second, larger PNG folder (<= 60000)")
    ap.add_argument("--idx-copies", type=int, default=10, help="MNIST's 60k training rows replicated N times")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    files = fetch_mnist("~/.cache/sparkcnn/downloads")
    work = tempfile.mkdtemp(prefix="sparkcnn-bench-ingest-")
    try:
        src = open_idx_pair(files["train_images"], files["train_labels"], work)
        idx_dir = os.path.join(work, "idx")
        os.makedirs(idx_dir)
        os.symlink(files["train_images"], os.path.join(idx_dir, "train-images-idx3-ubyte"))
        os.symlink(files["train_labels"], os.path.join(idx_dir, "train-labels-idx1-ubyte"))
        images, labels = src.read(0, min(src.rows, max(args.pngs * 10, args.big_pngs)))
        png_small, png_big = os.path.join(work, "png1x"), os.path.join(work, "png10x")
        make_png_folder(png_small, images[:args.pngs], labels[:args.pngs])
        make_png_folder(png_big, images[:args.pngs * 10], labels[:args.pngs * 10])
        png_large = png_big if args.big_pngs == min(len(images), args.pngs * 10) else os.path.join(work, "png_large")
        if png_large != png_big:
            make_png_folder(png_large, images[:args.big_pngs], labels[:args.big_pngs])
        big_idx_dir = os.path.join(work, "idx_big")
        os.makedirs(big_idx_dir)
        replicate_idx(src.images.path, args.idx_copies, os.path.join(big_idx_dir, "train-images-idx3-ubyte"))
        replicate_idx(src.labels.path, args.idx_copies, os.path.join(big_idx_dir, "train-labels-idx1-ubyte"))
        big_src = open_idx_pair(os.path.join(big_idx_dir, "train-images-idx3-ubyte"),
                                os.path.join(big_idx_dir, "train-labels-idx1-ubyte"), work)

        photos = os.path.join(work, "photos")
        make_photo_folder(photos, args.photos)

        def conf(fmt, path, limit=None, extra=""):
            extra += f", limit_train: {limit}" if limit else ""
            return load_config(text=f"data: {{dataset: b, format: {fmt}, path: '{path}', datasets_dir: '{work}/ds',"
                                    f" cache_dir: '{work}/cache'}}\ningest: {{test_fraction: 0.0{extra}}}")
        spark = build_spark(load_config("conf/mnist.yaml").spark)
        for _ in range(3):     # warm-up, as in a long-running session: JVM classes and JIT, Python workers
            ingest(spark, conf("folder", png_small))
        print(f"cores: {os.cpu_count()}, Spark slots: {spark.sparkContext.defaultParallelism}")
        print(f"\nINGEST THROUGHPUT (median of {args.repeats}; spread = min-max of the repeats)")
        photo_conf = conf("folder", photos, extra=", image_size: [128, 128], channels: 3, resize: crop")
        cases = [
            ("PNG folder", "PIL + pyarrow, 1 process",
             lambda: plain_folder(png_small, os.path.join(work, "plain.parquet")),
             lambda: ingest(spark, conf("folder", png_small))["train"].num_rows),
            ("JPEG 400x300 -> 128x128", "PIL + pyarrow, 1 process",
             lambda: plain_folder(photos, os.path.join(work, "plain_photos.parquet"), (128, 128, 3), "crop"),
             lambda: ingest(spark, photo_conf)["train"].num_rows),
            ("IDX", "numpy + pyarrow, 1 process",
             lambda: plain_idx(src, src.rows, os.path.join(work, "plain_idx.parquet")),
             lambda: ingest(spark, conf("idx", idx_dir))["train"].num_rows),
            ("PNG folder", "PIL + pyarrow, 1 process",
             lambda: plain_folder(png_large, os.path.join(work, "plain.parquet")),
             lambda: ingest(spark, conf("folder", png_large))["train"].num_rows),
            ("IDX", "numpy + pyarrow, 1 process",
             lambda: plain_idx(big_src, big_src.rows, os.path.join(work, "plain_idx.parquet")),
             lambda: ingest(spark, conf("idx", big_idx_dir))["train"].num_rows),
        ]
        for what, baseline_name, baseline, sparkcnn in cases:
            n, t_base, times_base = timed(baseline, args.repeats)
            n_spark, t_spark, times_spark = timed(sparkcnn, args.repeats)
            assert n_spark == n, (what, n, n_spark)
            print(f"  {what}, {n} images")
            print(f"    {baseline_name + ' (baseline)':<44} {n / t_base:9.0f} images/s  "
                  f"({n / max(times_base):.0f}-{n / min(times_base):.0f})")
            print(f"    {'sparkcnn ingest (Spark, one job)':<44} {n / t_spark:9.0f} images/s  "
                  f"({n / max(times_spark):.0f}-{n / min(times_spark):.0f})  {t_base / t_spark:5.2f}x")

        print("\nPEAK RSS, whole process tree (driver + JVM + Python workers)")
        for name, small, big in (("PNG folder", conf("folder", png_small), conf("folder", png_big)),
                                 ("IDX", conf("idx", idx_dir, len(images) // 10), conf("idx", idx_dir, len(images)))):
            peaks = []
            for c in (small, big):
                with PeakRss() as rss:
                    ingest(spark, c)
                peaks.append(rss.peak)
            print(f"  {name:<12} 1x: {peaks[0] / 2**20:7.0f} MiB   10x: {peaks[1] / 2**20:7.0f} MiB   "
                  f"ratio {peaks[1] / peaks[0]:.2f}x (target <= 1.2x)")
        print("\nreproduce: make bench-ingest   (python -m benchmarks.ingest --help for the sizes)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
