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
from PIL import Image

from pipelines.core.config import ConfigError
from pipelines.predict import layout
from pipelines.predict.section import PredictSection
from pipelines.predict.stage import chunk_offsets, predict_files

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
    lines = []
    summary = predict_files(spark, section(input=root, model=model_file, output=output, top_k=3,
                                           probabilities=True, embedding_layer="pool"), log=lines.append)
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
    """The table's top-k equals Keras predict on the pixels pipelines.predict.pixels decodes."""
    import tensorflow as tf

    from pipelines.predict import pixels
    from pipelines.predict.cnn_model import network_from_file
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
    first = predict_files(spark, conf, log=lambda m: None)
    again = predict_files(spark, conf, log=lambda m: None)
    assert (again["scored"], again["rejected"], again["unchanged"]) == (0, 0, first["listed"])

    rng = np.random.default_rng(7)
    new = [os.path.join(root, "circle", "new", f"n{i}.jpg") for i in range(3)]
    for path in new:
        write_jpeg(path, photo(rng, 64, 64))
    changed = good[0]
    before = predictions(output).set_index("path").loc[changed]
    write_jpeg(changed, 255 - photo(rng, 90, 30))          # other pixels, other size
    third = predict_files(spark, conf, log=lambda m: None)
    assert (third["scored"], third["changed"], third["unchanged"]) == (4, 1, first["listed"] - 1)
    rows = predictions(output)
    assert rows.path.is_unique and sorted(rows.path) == sorted(good + new)
    after = rows.set_index("path").loc[changed]
    assert (after.height, after.width) == (90, 30) != (before.height, before.width)


def test_another_model_scores_everything_into_its_own_partition(spark, model_file, tmp_path):
    root, output = str(tmp_path / "photos"), str(tmp_path / "out")
    good = make_folder(root, count=8)
    first = predict_files(spark, section(input=root, model=model_file, output=output), log=lambda m: None)
    other = tiny_model(str(tmp_path / "other.keras"), seed=1)
    second = predict_files(spark, section(input=root, model=other, output=output), log=lambda m: None)
    assert second["model_digest"] != first["model_digest"]
    assert (second["scored"], second["unchanged"]) == (len(good), 0)
    assert sorted(predictions(output, first["model_digest"]).path) == good
    assert sorted(predictions(output, second["model_digest"]).path) == good


def test_globs_and_path_lists(spark, model_file, tmp_path):
    root, output = str(tmp_path / "photos"), str(tmp_path / "out")
    good = make_folder(root, count=8)
    jpegs = [p for p in good if p.endswith(".jpg")]
    summary = predict_files(spark, section(input=os.path.join(root, "**", "*.jpg"), model=model_file,
                                           output=output), log=lambda m: None)
    assert summary["listed"] == len(jpegs) + 2            # the two bad .jpg files are listed and rejected
    listed = tmp_path / "list.txt"
    gone = os.path.join(root, "gone.jpg")
    listed.write_text("# two files and one that does not exist\n" + "\n".join(good[:2] + [gone]) + "\n")
    out2 = str(tmp_path / "out2")
    summary = predict_files(spark, section(input=str(listed), model=model_file, output=out2), log=lambda m: None)
    assert (summary["scored"], summary["rejected"]) == (2, 1)
    assert "vanished" in rejects(out2).set_index("path").reason[gone]


def test_chunks_are_balanced_runs():
    assert chunk_offsets([1] * 10, 4, 100) == [0, 4, 8, 10]
    assert chunk_offsets([60, 60, 10, 10, 90], 10, 100) == [0, 1, 4, 5]   # bytes cut too
    assert chunk_offsets([], 4, 100) == [0]


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
    summary = predict_files(spark, section(input=root, model=str(run), output=output), log=lambda m: None)
    rows = predictions(output)
    assert summary["model"].startswith("run ") and len(rows) == 5
    assert {t[0]["className"] for t in rows.top_k} <= set(CLASSES)
