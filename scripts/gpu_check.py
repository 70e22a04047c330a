"""A first run on a GPU cluster in one command: which GPU each task and each Horovod rank sees, one timed
training epoch and one timed scoring pass, on synthetic images (nothing to download or ingest).

    make pyfiles
    spark-submit --master spark://host:7077 --py-files dist/sparkcnn-libs.zip \\
        --conf spark.executor.resource.gpu.amount=1 --conf spark.task.resource.gpu.amount=1 \\
        --conf spark.worker.resource.gpu.discoveryScript=scripts/gpu_discovery.sh \\
        scripts/gpu_check.py --store s3://bucket/tmp/gpu-check      # a store every executor reaches
    python scripts/gpu_check.py --master local[2] --gpus-per-task 0  # the same on CPUs (smoke run)

What to look for: every task line says `TensorFlow sees 1 GPU(s)` with a different address per
task on a host; the ranks' addresses differ; the matmul rate is GPU-like (TFLOP/s, not GFLOP/s).
"""
import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time

# Runnable from a checkout without installing (spark-submit ships the library with --py-files).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.core import resources, storage  # noqa: E402
from pipelines.core.resources import ResourcesSection  # noqa: E402
from pipelines.core.sections import SparkSection  # noqa: E402
from pipelines.core.session import build_spark  # noqa: E402


def probe(_index: int) -> dict:
    """Inside one Spark task: place it on its GPU (as every sparkcnn task does), then time a matmul there."""
    from pipelines.core.tf_runtime import place_task
    placement = place_task()
    import tensorflow as tf
    n, repeats = 2048, 10
    with tf.device(placement.device):
        a = tf.random.uniform((n, n))
        (a @ a).numpy()                                   # warm-up (kernel selection, transfers)
        t0 = time.perf_counter()
        for _ in range(repeats):
            b = a @ a
        b.numpy()
        seconds = time.perf_counter() - t0
    return {"host": socket.gethostname(), "pid": os.getpid(), **placement.as_dict(),
            "gpus_seen": [d.name for d in tf.config.list_logical_devices("GPU")],
            "gflops": 2 * n ** 3 * repeats / seconds / 1e9}


def synthetic_images(spark, rows: int, size: int, channels: int, partitions: int):
    """Spark image structs of random pixels with labels 0-9 (the image source's own schema)."""
    import numpy as np
    import pandas as pd
    from pyspark.sql import functions as F

    @F.pandas_udf("binary")
    def noise(ids: pd.Series) -> pd.Series:
        rng = np.random.default_rng(int(ids.iloc[0]) if len(ids) else 0)
        return pd.Series([rng.integers(0, 256, size * size * channels, dtype=np.uint8).tobytes() for _ in ids])

    mode = {1: 0, 3: 16}[channels]                        # OpenCV types CV_8UC1 / CV_8UC3, as Spark writes them
    image = F.struct(F.concat(F.lit("synthetic/"), F.col("id").cast("string")).alias("origin"),
                     F.lit(size).alias("height"), F.lit(size).alias("width"), F.lit(channels).alias("nChannels"),
                     F.lit(mode).alias("mode"), noise("id").alias("data"))
    return spark.range(0, rows, numPartitions=partitions).select(image.alias("image"),
                                                                 (F.col("id") % 10).cast("int").alias("label"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--master", help="Spark master (default: spark-submit's, else local[*])")
    p.add_argument("--gpus-per-task", type=float, default=1.0, help="resources.gpus_per_task (0: CPUs only)")
    p.add_argument("--require-gpu", action="store_true", help="fail unless every task sees a GPU")
    p.add_argument("--store", help="where the check's data and run go (default: a local temp dir, one host only)")
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--size", type=int, default=28, help="image side in pixels")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3))
    p.add_argument("--model", default="mnist_cnn", help="a train.model name (e.g. vgg_bn for a heavier check)")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)

    spark = build_spark(SparkSection(master=args.master or "local[*]", app_name="sparkcnn-gpu-check"),
                        resources=ResourcesSection(gpus_per_task=args.gpus_per_task, require_gpu=args.require_gpu))
    sc = spark.sparkContext
    # every executor that registers within a few seconds of the others
    gpu_slots = resources.gpu_task_slots(spark, wait_seconds=60, settle_seconds=5) if resources.task_gpus(spark) else 0
    slots = gpu_slots or sc.defaultParallelism
    print(f"[gpu_check] master {sc.master}; executors: {resources.executor_summary(spark) or 'local'}; "
          f"{slots} {'GPU ' if gpu_slots else ''}task slots")

    for row in sorted(sc.parallelize(range(slots), slots).map(probe).collect(), key=lambda r: (r["host"], r["pid"])):
        print(f"[gpu_check] task on {row['host']} (pid {row['pid']}): Spark assigned "
              f"{','.join(row['assigned']) or 'no GPU'}; CUDA_VISIBLE_DEVICES={row['visible'] or 'unset'}; TensorFlow sees "
              f"{row['gpus_seen'] or 'no GPU'}; matmul 2048^2 on {row['device']}: {row['gflops']:,.0f} GFLOP/s")

    from pipelines.training.estimator import CNNEstimator
    store = args.store or tempfile.mkdtemp(prefix="sparkcnn-gpu-check-")
    run_dir = storage.join(store, "runs", time.strftime("gpu-check-%Y%m%d-%H%M%S"))
    images = synthetic_images(spark, args.images, args.size, args.channels, partitions=2 * slots)
    estimator = CNNEstimator(inputCol="image", labelCol="label", store=store, runDir=run_dir, model=args.model,
                             epochs=1, batchSize=args.batch_size, numProc=None, checkpoint=False,
                             exportSavedModel=False, nics=["lo"] if sc.master.startswith("local") else None)
    model = estimator.fit(images)
    history = json.loads(storage.read_bytes(storage.join(run_dir, "history.json")))
    for d in sorted(history["devices"], key=lambda d: d["who"]):
        print(f"[gpu_check] {d['who']}: Spark assigned {','.join(d['assigned']) or 'no GPU'}"
              f"{' (' + d['source'] + ')' if d['source'] and d['source'] != 'spark' else ''}; "
              f"CUDA_VISIBLE_DEVICES={d['visible'] or 'unset'}; TensorFlow sees {d['tf_gpus']} GPU(s)")
    seconds = history["epoch_seconds"][-1]
    print(f"[gpu_check] training: 1 epoch of {history['samples_per_epoch']} images ({args.model}, "
          f"{history['workers']} Horovod workers x batch {args.batch_size}) in {seconds:.1f}s = "
          f"{history['samples_per_epoch'] / seconds:,.0f} images/s")

    t0 = time.perf_counter()
    model.transform(images).select("prediction").write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - t0
    print(f"[gpu_check] scoring: {args.images} images in {seconds:.1f}s = {args.images / seconds:,.0f} images/s "
          f"(includes generating the synthetic pixels)")
    spark.stop()
    if not args.store:
        shutil.rmtree(store, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
