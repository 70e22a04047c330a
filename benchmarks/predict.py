"""`make bench-predict`: batch scoring of raw JPEG files, sparkcnn against the usual ways, same files, same 2 cores.

Workload: --images real photos at camera-like sizes (400x300 .. 1024x768, landscape and portrait,
deterministic from a seed) written as JPEG quality 90 into
~/.cache/sparkcnn/bench-predict/photos-<n>/ (nested subfolders; reused when complete).  They are
crops and rescales of the photos bundled with scikit-image (when it is importable), matplotlib's
sample photo and the foolbox wheel's 20 ImageNet photos (`make_photos`).  Every row scores every
file: decode, resize the shorter side to 224, centre crop (the registry's rule), the model's
preprocessing, the network, batches of BATCH.

Models: EfficientNetLite0 with its real ImageNet weights (what users run), ResNet50 with
"random-untrained" weights (the same compute as the real one, no download): a light net where
JPEG decoding is a large share of the work and a heavy one where the network is nearly all of it.

Rows, per model, all measured in this one run:
  model alone, TF 1 / 2 threads   the traced model (`tf.function(lambda x: model(x, training=False))`)
                                  over batches of pre-decoded, preprocessed float arrays, each in a
                                  fresh process (TF fixes its thread pools at start-up): what the
                                  network costs with nothing else to do.
  decode+resize per core          PIL open + convert RGB + resize + centre crop of the same JPEG
                                  bytes (already in memory), one process: what decoding costs a core.
  decode+resize per core, draft   the same with PIL's JPEG draft mode (DCT scaling to the smallest
                                  size that still covers what the resize needs): our engine decodes
                                  this way, so this row shows how much of the limit draft moves.
  limit                           2 cores / (1/model_1thread + 1/decode_per_core): the core-seconds
                                  per image of decode + inference with every core busy, i.e. the
                                  best any engine can do on these 2 cores without draft decoding.
                                  (The "limit, draft decode" row is the same with the draft decode.)
  plain loop                      one process: read file, PIL decode + resize, traced model call in
                                  batches of 32 (TF default threads = all cores); what a user writes
                                  first.  (The traced call, not model.predict: TF 2.15's predict()
                                  returns late under tf.data autotuning.)
  Spark predict_batch_udf         spark.read.format("binaryFile") of the folder (recursiveFileLookup),
                                  repartition(2), pyspark.ml.functions.predict_batch_udf whose
                                  make_predict_fn loads the model once per Python worker (TF 1 thread
                                  per task) and whose predict function decodes the bytes itself,
                                  local[2], written to the noop sink.  Decoding inside the predict
                                  function is the strongest form of the Spark docs' recipe (a pandas
                                  decode UDF before it would ship 224x224x3 floats through Arrow).
  Ray Data map_batches            ray.data.read_binary_files + map_batches with a callable-class
                                  actor (model loaded in __init__, decode in __call__), concurrency 2,
                                  num_cpus 1 each, ray.init(num_cpus=2), in a subprocess.  Ray Data
                                  starts new actors for every execution, so its images/s are counted
                                  from the moment the first actor has its model loaded and traced
                                  (the job rate, model load included, is printed beside it).
  sparkcnn                        pipelines.predict.bench_entry.score_folder(spark, folder, ...):
                                  files in, predictions Parquet out.

The Spark rows share one SparkSession (local[2]) and each runs once untimed on a small folder
first, so models are loaded in the reused Python workers; the Spark driver (this process) never
imports TensorFlow, so its peak RSS is printed at the end.  Big rows are the median of --repeats,
limit rows of --limit-repeats.  Ratios are row / baseline from this run; the issue's targets are
checked at the end.

Ray is not a project dependency: ray==RAY_VERSION is pip-installed --no-deps into
~/.cache/sparkcnn/bench-ray together with the few core dependencies the venv lacks (RAY_PACKAGES),
and the Ray subprocess runs with that directory on PYTHONPATH, so the venv's numpy 1.26.4 and
pyarrow 10.0.1 are the ones Ray Data uses (checked).

    python -m benchmarks.predict [--images 2000] [--models EfficientNetLite0,ResNet50] [--repeats 1]
                                 [--limit-repeats 3] [--limit-images 256] [--skip-ray] [--skip-spark]
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

from benchmarks.report_file import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.expanduser("~/.cache/sparkcnn/bench-predict")
CORES = 2
BATCH = 32
SIDE = 224            # both models' input side (registry.ModelSpec.input_size)
JPEG_QUALITY = 90
WARM_PHOTOS = 2 * BATCH
WEIGHTS = {"EfficientNetLite0": "imagenet", "ResNet50": "random-untrained"}
MANIFEST = "_manifest.json"   # leading underscore: Spark's file listing skips it

RAY_DIR = os.path.expanduser("~/.cache/sparkcnn/bench-ray")
RAY_VERSION = "2.40.0"
# ray's core dependencies that the venv lacks (click, packaging, protobuf, pyyaml, aiosignal, frozenlist,
# requests and Ray Data's numpy, pandas, pyarrow, fsspec come from the venv)
RAY_PACKAGES = [f"ray=={RAY_VERSION}", "filelock==3.16.1", "msgpack==1.1.0", "jsonschema==4.23.0",
                "jsonschema-specifications==2024.10.1", "referencing==0.35.1", "rpds-py==0.22.3"]

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "immunohistochemistry",
                  "hubble_deep_field")


# ---------------------------------------------------------------------------------------------- workload

def _source_photos() -> list:
    """The real photos the workload is cut from, as (name, RGB PIL image)."""
    from PIL import Image

    from pipelines.ingest.fetch import foolbox_samples
    out = []
    try:
        import skimage.data
    except ImportError:
        skimage = None
    if skimage is not None:
        for name in SKIMAGE_PHOTOS:
            try:
                out.append((f"skimage-{name}", Image.fromarray(getattr(skimage.data, name)()).convert("RGB")))
            except Exception:   # an image this skimage version lacks or would download
                pass
    try:
        import matplotlib.cbook
        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            out.append(("matplotlib-grace_hopper", Image.open(f).convert("RGB")))
    except Exception:
        pass
    for name, _, data in foolbox_samples("imagenet"):
        out.append((f"foolbox-{name}", Image.open(io.BytesIO(data)).convert("RGB")))
    return out


def _camera_size(rng) -> tuple:
    """(width, height): 4:3, long side 400..1024, portrait about a third of the time."""
    long_side = int(rng.integers(400, 1025))
    short_side = round(long_side * 3 / 4)
    return (short_side, long_side) if rng.random() < 1 / 3 else (long_side, short_side)


def _cut(img, size: tuple, rng):
    """A random crop of `img` with the aspect of `size` (70-100% of the largest such window), rescaled to it."""
    from PIL import Image
    w, h = size
    W, H = img.size
    cw, ch = (round(H * w / h), H) if W / H > w / h else (W, round(W * h / w))
    f = rng.uniform(0.7, 1.0)
    cw, ch = max(1, round(cw * f)), max(1, round(ch * f))
    x, y = int(rng.integers(0, W - cw + 1)), int(rng.integers(0, H - ch + 1))
    out = img.resize((w, h), Image.BICUBIC, box=(x, y, x + cw, y + ch))
    return out.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else out


def _complete(directory: str, count: int, seed: int):
    """The files of a finished make_photos(directory, count, seed), or None."""
    try:
        with open(os.path.join(directory, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if manifest.get("count") != count or manifest.get("seed") != seed:
        return None
    files = [os.path.join(directory, p) for p in manifest["files"]]
    return files if all(os.path.isfile(p) for p in files) else None


def make_photos(directory: str, count: int, seed: int = 0) -> list:
    """`count` camera-sized JPEG photos (quality 90) in nested subfolders of `directory`; their paths.

    Deterministic from `seed`; a directory already holding the same set is reused, anything else
    there is replaced (the set is written beside it, then renamed into place).
    """
    directory = os.path.abspath(os.path.expanduser(directory))
    files = _complete(directory, count, seed)
    if files is not None:
        return files
    sources = _source_photos()
    rng = np.random.default_rng(seed)
    tmp = f"{directory}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    rel = []
    for i in range(count):
        name, img = sources[int(rng.integers(len(sources)))]
        photo = _cut(img, _camera_size(rng), rng)
        path = os.path.join(f"group-{i % 3}", f"roll-{(i // 3) % 2}", f"photo-{i:05d}.jpg")
        os.makedirs(os.path.join(tmp, os.path.dirname(path)), exist_ok=True)
        photo.save(os.path.join(tmp, path), "JPEG", quality=JPEG_QUALITY)
        rel.append(path)
    with open(os.path.join(tmp, MANIFEST), "w") as f:
        json.dump({"count": count, "seed": seed, "quality": JPEG_QUALITY,
                   "sources": [n for n, _ in sources], "files": rel}, f)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    os.rename(tmp, directory)
    return [os.path.join(directory, p) for p in rel]


def photo_dir(count: int) -> str:
    return os.path.join(CACHE, f"photos-{count}")


def list_photos(folder: str) -> list:
    return sorted(glob.glob(os.path.join(folder, "**", "*.jpg"), recursive=True))


def sample(files: list, count: int) -> list:
    """`count` files spread evenly over the set (so their sizes are the workload's)."""
    step = max(1, len(files) // max(1, count))
    return files[::step][:count]


def describe(files: list) -> str:
    from PIL import Image
    sizes = [Image.open(p).size for p in files]
    nbytes = sum(os.path.getsize(p) for p in files)
    pixels = sum(w * h for w, h in sizes)
    portrait = sum(h > w for w, h in sizes)
    return (f"{len(files)} JPEG photos q{JPEG_QUALITY}, {min(w * h for w, h in sizes) / 1e6:.2f}-"
            f"{max(w * h for w, h in sizes) / 1e6:.2f} Mpixel ({portrait} portrait), "
            f"{nbytes / len(files) / 1024:.0f} KiB mean, {8 * nbytes / pixels:.2f} bits/pixel")


# ------------------------------------------------------------------------------- the shared per-image work

def decode_resize(data: bytes, side: int = SIDE, draft: bool = False) -> np.ndarray:
    """JPEG bytes -> (side, side, 3) uint8 RGB: shorter side to `side` (PIL bilinear, antialiased), centre crop.

    With `draft`, the JPEG decoder scales by 1/2, 1/4 or 1/8 in the DCT first, down to the smallest
    size that still covers the resize target.
    """
    from PIL import Image
    img = Image.open(io.BytesIO(data))
    if draft:
        w, h = img.size
        s = side / min(w, h)
        img.draft("RGB", (max(side, math.ceil(w * s)), max(side, math.ceil(h * s))))
    img = img.convert("RGB")
    w, h = img.size
    s = side / min(w, h)
    rw, rh = max(side, round(w * s)), max(side, round(h * s))
    img = img.resize((rw, rh), Image.BILINEAR)
    left, top = (rw - side) // 2, (rh - side) // 2
    return np.asarray(img.crop((left, top, left + side, top + side)))


def set_tf_threads(threads: int) -> None:
    """TF intra- and inter-op pools of `threads` (before TF's runtime starts; later calls keep what is set)."""
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass


def load_network(model_name: str):
    from pipelines.inference.pretrained import keras_models, registry
    spec = registry.get_spec(model_name)
    return spec, keras_models.build_model(spec, WEIGHTS[model_name], keras_models.PROBABILITIES)


def traced_scorer(model_name: str):
    """uint8 (N, 224, 224, 3) -> probabilities (N, 1000): cast, the model's preprocessing and the network,
    one traced function, traced and warmed on a full batch before it is returned."""
    import tensorflow as tf

    from pipelines.inference.pretrained import keras_models
    spec, model = load_network(model_name)
    pre = keras_models.preprocess(spec)
    s = spec.input_size

    @tf.function(input_signature=[tf.TensorSpec([None, s, s, 3], tf.uint8)])
    def score(x):
        return model(pre(tf.cast(x, tf.float32)), training=False)
    score(tf.zeros([BATCH, s, s, 3], tf.uint8))
    return lambda batch: score(tf.convert_to_tensor(batch)).numpy()


def score_blobs(scorer, blobs) -> dict:
    """Decode and score a batch of JPEG bytes: {"prediction": (N,), "probabilities": (N, 1000)}."""
    probs = scorer(np.stack([decode_resize(b) for b in blobs]))
    return {"prediction": probs.argmax(axis=1).astype(np.int32), "probabilities": probs.astype(np.float32)}


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def median_rate(fn, n: int, repeats: int) -> tuple:
    """(images/s of the median pass, pass seconds)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times), times


# ------------------------------------------------------------------ rows measured in their own process

def model_alone(folder: str, model_name: str, threads: int, count: int, repeats: int) -> dict:
    """The traced network alone on pre-decoded, preprocessed float32 batches, TF on `threads` threads."""
    set_tf_threads(threads)
    import tensorflow as tf

    from pipelines.inference.pretrained import keras_models
    spec, model = load_network(model_name)
    files = sample(list_photos(folder), count)
    pixels = np.stack([decode_resize(read_bytes(p)) for p in files]).astype(np.float32)
    x = keras_models.preprocess(spec)(tf.constant(pixels))
    batches = [x[i:i + BATCH] for i in range(0, len(files), BATCH)]
    s = spec.input_size
    call = tf.function(lambda t: model(t, training=False),
                       input_signature=[tf.TensorSpec([None, s, s, 3], tf.float32)])
    call(batches[0]).numpy()  # warm-up: tracing, kernel set-up

    def run():
        for b in batches:
            call(b).numpy()
    rate, times = median_rate(run, len(files), repeats)
    return {"images": len(files), "images_per_s": rate, "seconds": times, "threads": threads}


def plain_loop(folder: str, model_name: str, repeats: int) -> dict:
    """One process: read, PIL decode + resize, traced model call in batches (TF default threads)."""
    scorer = traced_scorer(model_name)
    files = list_photos(folder)
    score_blobs(scorer, [read_bytes(p) for p in files[:BATCH]])  # warm-up

    def run():
        for i in range(0, len(files), BATCH):
            score_blobs(scorer, [read_bytes(p) for p in files[i:i + BATCH]])
    rate, times = median_rate(run, len(files), repeats)
    return {"images": len(files), "images_per_s": rate, "seconds": times}


class RayPredictor:
    """Ray Data's callable-class UDF: the model is loaded (and traced) once per actor, one TF thread."""

    def __init__(self, model_name: str):
        set_tf_threads(1)
        self.scorer = traced_scorer(model_name)
        self.ready_at = time.time()

    def __call__(self, batch: dict) -> dict:
        out = score_blobs(self.scorer, batch["bytes"])
        out["ready_at"] = np.full(len(out["prediction"]), self.ready_at)
        return out


def _ray_pass(ray_data, folder: str, model_name: str) -> tuple:
    """(rows, job seconds, seconds from the first actor being ready to the last row)."""
    # the two actors hold both CPUs; reading bytes from the page cache is light, so the read tasks ask for none
    ds = ray_data.read_binary_files(folder, file_extensions=["jpg"], ray_remote_args={"num_cpus": 0})
    ds = ds.map_batches(RayPredictor, fn_constructor_kwargs={"model_name": model_name}, concurrency=CORES,
                        num_cpus=1, batch_size=BATCH, batch_format="numpy")
    t0, rows, ready = time.time(), 0, []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        rows += len(batch["prediction"])
        ready.append(float(batch["ready_at"].min()))
    t1 = time.time()
    return rows, t1 - t0, t1 - min(ready)


def ray_data_rate(folder: str, warm_folder: str, model_name: str, repeats: int) -> dict:
    import pyarrow
    import ray
    import ray.data
    for mod in (np, pyarrow):
        if os.path.realpath(mod.__file__).startswith(os.path.realpath(RAY_DIR)):
            raise RuntimeError(f"{mod.__name__} was imported from {RAY_DIR}, not the venv: remove that directory "
                               "and run again (its packages must be installed with --no-deps)")
    ray.init(num_cpus=CORES, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             object_store_memory=2 << 30)
    ray.data.DataContext.get_current().enable_progress_bars = False
    _ray_pass(ray.data, warm_folder, model_name)  # warm-up: worker processes, imports, page cache
    passes = [_ray_pass(ray.data, folder, model_name) for _ in range(repeats)]
    ray.shutdown()
    rows = passes[0][0]
    return {"images": rows, "images_per_s": rows / statistics.median(p[2] for p in passes),
            "job_images_per_s": rows / statistics.median(p[1] for p in passes),
            "seconds": [p[1] for p in passes], "seconds_after_first_model": [p[2] for p in passes],
            "ray": ray.__version__, "pyarrow": pyarrow.__version__, "numpy": np.__version__}


def run_worker(kind: str, args: list, env: dict = None) -> dict:
    """One row in a fresh `python -m benchmarks.predict --worker KIND` process; its JSON, or {"error": ...}."""
    cmd = [sys.executable, "-m", "benchmarks.predict", "--worker", kind, *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})))
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {out.returncode}: {tail}"}
    return json.loads(lines[-1])


def worker_main(args) -> None:
    if args.worker == "model":
        result = model_alone(args.folder, args.model, args.threads, args.limit_images, args.limit_repeats)
    elif args.worker == "plain":
        result = plain_loop(args.folder, args.model, args.repeats)
    elif args.worker == "ray":
        result = ray_data_rate(args.folder, args.warm_folder, args.model, args.repeats)
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    print(json.dumps(result), flush=True)


# ------------------------------------------------------------------------ rows measured in this process

def decode_rate(folder: str, count: int, repeats: int, draft: bool) -> dict:
    """decode_resize of in-memory JPEG bytes, one process, one core."""
    blobs = [read_bytes(p) for p in sample(list_photos(folder), count)]
    decode_resize(blobs[0], draft=draft)

    def run():
        for b in blobs:
            decode_resize(b, draft=draft)
    rate, times = median_rate(run, len(blobs), repeats)
    return {"images": len(blobs), "images_per_s": rate, "seconds": times}


def install_ray() -> None:
    """ray and its missing core dependencies into RAY_DIR, --no-deps, on first use (benchmark only)."""
    if os.path.isdir(os.path.join(RAY_DIR, f"ray-{RAY_VERSION}.dist-info")):
        return
    print(f"installing {' '.join(RAY_PACKAGES)} into {RAY_DIR} (benchmark only)", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", RAY_DIR,
                    *RAY_PACKAGES], check=True)


def ray_row(folder: str, warm_folder: str, model_name: str, repeats: int) -> dict:
    install_ray()
    path = os.pathsep.join([RAY_DIR, ROOT] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    return run_worker("ray", ["--folder", folder, "--warm-folder", warm_folder, "--model", model_name,
                              "--repeats", repeats],
                      env={"PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"})


def start_spark():
    from pipelines.core.session import build_spark
    from pipelines.stages import load_config
    cfg = load_config(text=f'spark:\n  master: "local[{CORES}]"\n  app_name: bench-predict\n  driver_memory: 4g\n'
                           '  conf: {spark.ui.showConsoleProgress: "false"}\n')
    return build_spark(cfg.spark)


def binary_files(spark, folder: str):
    return (spark.read.format("binaryFile").option("recursiveFileLookup", "true").option("pathGlobFilter", "*.jpg")
            .load(folder).select("path", "content").repartition(CORES))


def make_predict_fn_for(model_name: str):
    """predict_batch_udf's make_predict_fn: load the model once per Python worker; the predict function
    takes a batch of file contents (a 1-d object array of bytes), decodes and scores them."""
    def make_predict_fn():
        set_tf_threads(1)   # a Spark task owns one core (spark.task.cpus = 1)
        scorer = traced_scorer(model_name)
        return lambda contents: score_blobs(scorer, contents)
    return make_predict_fn


def spark_udf_row(spark, folder: str, warm_folder: str, model_name: str, repeats: int) -> dict:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import (
        ArrayType,
        FloatType,
        IntegerType,
        StructField,
        StructType,
    )
    udf = predict_batch_udf(make_predict_fn_for(model_name), batch_size=BATCH,
                            return_type=StructType([StructField("prediction", IntegerType()),
                                                    StructField("probabilities", ArrayType(FloatType()))]))

    def run(path):
        binary_files(spark, path).select("path", udf("content").alias("scored")) \
            .write.format("noop").mode("overwrite").save()
    run(warm_folder)  # models load in the Python workers
    rows = len(list_photos(folder))
    rate, times = median_rate(lambda: run(folder), rows, repeats)
    return {"images": rows, "images_per_s": rate, "seconds": times}


def sparkcnn_row(spark, folder: str, warm_folder: str, model_name: str, repeats: int) -> dict:
    try:
        from pipelines.predict.bench_entry import score_folder
    except ImportError as exc:
        return {"error": "not available (pipelines.predict.bench_entry missing)", "detail": str(exc)}
    os.makedirs(os.path.join(ROOT, "runs"), exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="bench_predict-", dir=os.path.join(ROOT, "runs"))
    try:
        # the JPEGs, as the other rows read them (the folder also holds the workload's manifest)
        score_folder(spark, os.path.join(warm_folder, "**", "*.jpg"), model_name, WEIGHTS[model_name], os.path.join(scratch, "warm"), BATCH)
        counts, times = [], []
        for i in range(repeats):
            t0 = time.perf_counter()
            counts.append(score_folder(spark, os.path.join(folder, "**", "*.jpg"), model_name, WEIGHTS[model_name],
                                       os.path.join(scratch, f"pass-{i}"), BATCH))
            times.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"images": counts[0], "images_per_s": counts[0] / statistics.median(times), "seconds": times}


def rss_rows(spark, folder: str, model_name: str) -> dict:
    """Peak RSS of the whole process tree (this driver, the JVM, the Python workers) while sparkcnn scores
    a tenth of the files (as a path list) and then all of them: memory must not grow with the file count."""
    from benchmarks.ingest import PeakRss
    from pipelines.predict.bench_entry import score_folder
    files = list_photos(folder)
    scratch = tempfile.mkdtemp(prefix="bench_predict_rss-", dir=os.path.join(ROOT, "runs"))
    try:
        tenth = os.path.join(scratch, "tenth.txt")
        with open(tenth, "w") as f:
            f.write("\n".join(sample(files, len(files) // 10)) + "\n")
        peaks = {}
        for name, source in (("1x", tenth), ("10x", os.path.join(folder, "**", "*.jpg"))):
            with PeakRss() as rss:
                n = score_folder(spark, source, model_name, WEIGHTS[model_name], os.path.join(scratch, name), BATCH)
            peaks[name] = {"files": n, "peak_rss_mib": rss.peak / 2 ** 20}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ratio = peaks["10x"]["peak_rss_mib"] / peaks["1x"]["peak_rss_mib"]
    print(f"\nPEAK RSS, whole process tree (driver + JVM + Python workers), sparkcnn {model_name}: "
          f"{peaks['1x']['files']} files {peaks['1x']['peak_rss_mib']:.0f} MiB, {peaks['10x']['files']} files "
          f"{peaks['10x']['peak_rss_mib']:.0f} MiB: {ratio:.2f}x (target <= 1.2x: {'met' if ratio <= 1.2 else 'not met'})")
    peaks["ratio"] = ratio
    return peaks


# ----------------------------------------------------------------------------------------------- report

ROW_NAMES = {
    "model_1": "model alone, TF 1 thread (pre-decoded floats)",
    "model_2": "model alone, TF 2 threads (pre-decoded floats)",
    "decode": "decode+resize per core (PIL)",
    "decode_draft": "decode+resize per core (PIL draft mode)",
    "limit": "limit: 2 cores / (1/model_1 + 1/decode)",
    "limit_draft": "limit with draft decode (info)",
    "plain": "plain loop (1 process, TF all cores)",
    "udf": "Spark binaryFile + predict_batch_udf",
    "ray": "Ray Data map_batches (actors)",
    "sparkcnn": "sparkcnn score_folder",
}


def rate_of(rows: dict, key: str):
    row = rows.get(key) or {}
    return row.get("images_per_s")


def add_limits(rows: dict) -> None:
    m1 = rate_of(rows, "model_1")
    for key, decode in (("limit", "decode"), ("limit_draft", "decode_draft")):
        d = rate_of(rows, decode)
        if m1 and d:
            rows[key] = {"images_per_s": CORES / (1 / m1 + 1 / d)}


def print_table(model_name: str, rows: dict) -> None:
    def ratio(value, key):
        base = rate_of(rows, key)
        return f"{value / base:6.2f}x" if value and base else f"{'-':>7}"
    print(f"  {'row':<50} {'images/s':>9} {'vs plain':>9} {'vs udf':>8} {'vs limit':>9}")
    for key, name in ROW_NAMES.items():
        row = rows.get(key)
        if row is None:
            continue
        value = row.get("images_per_s")
        if value is None:
            print(f"  {name:<50} {row.get('error', 'skipped')}")
            continue
        extra = ""
        if key == "ray":
            extra = f"   (job incl. model load: {row['job_images_per_s']:.1f}/s, Ray {row['ray']})"
        print(f"  {name:<50} {value:9.1f} {ratio(value, 'plain'):>9} {ratio(value, 'udf'):>8} "
              f"{ratio(value, 'limit'):>9}{extra}")


TARGETS = [  # (model, row, baseline row, factor)
    ("EfficientNetLite0", "sparkcnn", "limit", 0.9),
    ("EfficientNetLite0", "sparkcnn", "udf", 1.1),
    ("EfficientNetLite0", "sparkcnn", "plain", 1.2),
    ("EfficientNetLite0", "sparkcnn", "ray", 1.5),
    ("ResNet50", "sparkcnn", "model_2", 0.95),
]


def check_targets(results: dict) -> list:
    out = []
    print("\nTARGETS (from the issue)")
    for model_name, key, base, factor in TARGETS:
        if model_name not in results:
            continue
        value, ref = rate_of(results[model_name], key), rate_of(results[model_name], base)
        got = value / ref if value and ref else None
        verdict = "n/a" if got is None else ("met" if got >= factor else "not met")
        shown = "-" if got is None else f"{got:.2f}x"
        print(f"  {model_name:<18} sparkcnn >= {factor:.2f}x {ROW_NAMES[base]:<48} {shown:>7}  {verdict}")
        out.append({"model": model_name, "baseline": base, "target": factor, "ratio": got, "verdict": verdict})
    return out


# ------------------------------------------------------------------------------------------------- main

def guarded(row, *args) -> dict:
    """A row that fails is reported as failed (traceback on stderr) and the other rows still run."""
    try:
        return row(*args)
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]}


def bench_model(model_name: str, folder: str, warm_folder: str, args, spark) -> dict:
    rows = {}
    lim = ["--folder", folder, "--model", model_name, "--limit-images", args.limit_images,
           "--limit-repeats", args.limit_repeats]
    rows["model_1"] = run_worker("model", lim + ["--threads", 1])
    rows["model_2"] = run_worker("model", lim + ["--threads", CORES])
    rows["decode"] = decode_rate(folder, args.limit_images, args.limit_repeats, draft=False)
    rows["decode_draft"] = decode_rate(folder, args.limit_images, args.limit_repeats, draft=True)
    add_limits(rows)
    rows["plain"] = run_worker("plain", ["--folder", folder, "--model", model_name, "--repeats", args.repeats])
    rows["ray"] = {"error": "skipped (--skip-ray)"} if args.skip_ray else \
        ray_row(folder, warm_folder, model_name, args.repeats)
    if spark is None:
        rows["udf"] = rows["sparkcnn"] = {"error": "skipped (--skip-spark)"}
    else:
        rows["udf"] = guarded(spark_udf_row, spark, folder, warm_folder, model_name, args.repeats)
        rows["sparkcnn"] = guarded(sparkcnn_row, spark, folder, warm_folder, model_name, args.repeats)
    return rows


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000, help="photos in the workload")
    ap.add_argument("--models", default="EfficientNetLite0,ResNet50", help=f"comma-separated, of {', '.join(WEIGHTS)}")
    ap.add_argument("--repeats", type=int, default=1, help="passes of the big rows (median)")
    ap.add_argument("--limit-repeats", type=int, default=3, help="passes of the limit rows (median)")
    ap.add_argument("--limit-images", type=int, default=256, help="photos (spread over the set) in the limit rows")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-rss", action="store_true", help="no peak-RSS rows (1/10 of the files vs all of them)")
    ap.add_argument("--skip-spark", action="store_true", help="no predict_batch_udf and no sparkcnn row")
    ap.add_argument("--out", default="runs/bench_predict.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--warm-folder", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.limit_images = min(args.limit_images, args.images)
    unknown = [m for m in args.models.split(",") if m not in WEIGHTS]
    if unknown:
        ap.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(WEIGHTS)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    t_start = time.perf_counter()
    folder = photo_dir(args.images)
    make_photos(folder, args.images)
    warm_folder = os.path.join(CACHE, f"warmup-{WARM_PHOTOS}")
    make_photos(warm_folder, WARM_PHOTOS, seed=1)
    print(f"workload: {describe(list_photos(folder))}\n  in {folder}  (cores: {os.cpu_count()}, using {CORES})",
          flush=True)
    spark = None if args.skip_spark else start_spark()
    results = {}
    for model_name in args.models.split(","):
        print(f"\nPREDICT {model_name} ({WEIGHTS[model_name]}), {args.images} photos -> {SIDE}x{SIDE}, batch {BATCH}, "
              f"{CORES} cores; big rows median of {args.repeats}, limit rows of {args.limit_repeats} "
              f"on {args.limit_images} photos", flush=True)
        results[model_name] = bench_model(model_name, folder, warm_folder, args, spark)
        print_table(model_name, results[model_name])
    targets = check_targets(results)
    if spark is not None and not args.skip_rss:
        results["peak_rss"] = rss_rows(spark, folder, args.models.split(",")[0])
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nSpark driver (this process, no TensorFlow) peak RSS: {rss_mib:.0f} MiB; executors' RSS not measured")
    print(f"total {time.perf_counter() - t_start:.0f}s")
    report = {"images": args.images, "folder": folder, "cores": CORES, "batch": BATCH, "repeats": args.repeats,
              "limit_repeats": args.limit_repeats, "results": results, "targets": targets,
              "driver_peak_rss_mib": rss_mib}
    out = os.path.join(ROOT, args.out) if not os.path.isabs(args.out) else args.out
    write_report(out, report, f"make bench-predict   (or python -m benchmarks.predict --images {args.images})")
    if spark is not None:
        spark.stop()


if __name__ == "__main__":
    main()
