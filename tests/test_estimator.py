"""CNNEstimator: Params from the train section's declaration, fit on Spark's image source with real
Horovod workers, the materialisation cache, and PipelineModels saved and loaded in a new process.

Data: real MNIST test digits written out as PNG class folders (what `sparkcnn export` gives), plus
one broken file, read by Spark's own image and binaryFile sources.
"""
import dataclasses
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import logged_lines
from PIL import Image

from pipelines.core.config import ConfigError
from pipelines.training.estimator import CNNEstimator
from pipelines.training.estimator_params import NOT_PARAMS, camel
from pipelines.training.section import TrainSection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = 1500
LABEL_FROM_PATH = r"/(\d)/[^/]*$"


# ---- Params (no Spark) -------------------------------------------------------------------------

def test_every_train_setting_is_a_param_with_its_default_and_doc():
    est = CNNEstimator()
    for f in dataclasses.fields(TrainSection):
        name = camel(f.name)
        if f.name in NOT_PARAMS:
            assert not est.hasParam(name)
            continue
        param = est.getParam(name)
        assert param.doc == f.metadata["doc"], name
        assert (est.getOrDefault(name) if est.hasDefault(name) else None) == f.default, name
    assert est.getBatchSize() == TrainSection().batch_size and est.getNumProc() == TrainSection().num_proc
    assert "batchSize: per Horovod worker" in est.explainParams()
    signature = inspect.signature(CNNEstimator)
    assert signature.parameters["learningRate"].default == 0.001 and "inputCol" in signature.parameters
    est.setLearningRate(0.01).setEpochs(7)
    assert est.getLearningRate() == 0.01 and est.getEpochs() == 7


@pytest.mark.parametrize("kwargs, message", [
    ({"batchSize": 0}, "CNNEstimator.batchSize: 0 is below the minimum 1"),
    ({"optimizer": "adamw"}, "CNNEstimator.optimizer: 'adamw' is not one of adam"),
    ({"epochs": "three"}, "CNNEstimator.epochs: expected an integer"),
    ({"validation": 1.5}, "CNNEstimator.validation: expected null, a fraction"),
    ({"imageSize": [28]}, r"CNNEstimator.imageSize: expected \[height, width\]"),
    ({"channels": 2}, "CNNEstimator.channels: 2 is not an image layout"),
    ({"augmentation": [{"op": "spin"}]}, "CNNEstimator.augmentation"),
    ({"epoch": 3}, r"CNNEstimator: unknown Param 'epoch' \(did you mean 'epochs'\?\)"),
])
def test_param_errors_name_the_param(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CNNEstimator(**kwargs)
    with pytest.raises(ConfigError, match=message):
        CNNEstimator().setParams(**kwargs)


def test_the_cli_train_section_becomes_the_same_settings(tmp_path):
    from pipelines.core.store import RunStore
    from pipelines.stages import load_config
    from pipelines.train.stage import estimator_for
    from pipelines.training.estimator_params import sections_of
    conf = tmp_path / "c.yaml"
    conf.write_text("train: {model: lenet, epochs: 3, batch_size: 16, validation: 0.2, augment: true}\n"
                    "augment: {pipeline: [{op: rotate, p: 1.0, degrees: [-5, 5]}], seed: 3}\n")
    cfg = load_config(str(conf))
    train, own = sections_of(estimator_for(cfg, RunStore(str(tmp_path / "run"))))
    assert train == cfg.train                      # every setting, the augment switch included
    assert own.augmentation == cfg.augment.pipeline and own.augmentation_seed == 3
    assert own.run_dir == str(tmp_path / "run") and own.row_group_mb == cfg.ingest.row_group_mb


# ---- fitting (Horovod) -------------------------------------------------------------------------

def export_digits(root, mnist_files, count, start=0, broken=True):
    """MNIST test digits as <root>/<label>/<index>.png (and one broken file); -> {path: label}."""
    from pipelines.ingest.idx import read_header, read_rows
    images = read_rows(read_header(mnist_files["test_images"]), start, start + count)
    labels = read_rows(read_header(mnist_files["test_labels"]), start, start + count)
    out = {}
    for i, (image, label) in enumerate(zip(images, labels)):
        path = os.path.join(root, str(int(label)), f"{start + i:05d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(image).save(path)
        out[path] = int(label)
    if broken:
        with open(os.path.join(root, "3", "broken.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n not really")
    return out


def image_frame(spark, folder):
    from pyspark.sql import functions as F
    return (spark.read.format("image").option("recursiveFileLookup", "true").load(folder)
            .withColumn("label", F.regexp_extract("image.origin", LABEL_FROM_PATH, 1).cast("int")))


@pytest.fixture(scope="module")
def trained(spark, mnist_files, s3_server, tmp_path_factory):
    """One fit, with the store on the S3 server: materialised data, checkpoints and model all go there."""
    from pipelines.core import storage
    root = tmp_path_factory.mktemp("estimator")
    folder = str(root / "digits")
    labels = export_digits(folder, mnist_files, DIGITS)
    est = CNNEstimator(store=s3_server.url("estimator"), epochs=2, batchSize=32, numProc=2, validation=0.1)
    with storage.using(s3_server.context()):          # credentials from the driver's storage context, not Params
        with logged_lines() as logs:                  # the estimator's lines, the ranks' relayed ones too
            model = est.fit(image_frame(spark, folder).coalesce(2))     # 1,500 tiny files: 2 tasks, not 47
        yield root, folder, labels, est, model, logs


@pytest.mark.slow
def test_fit_on_spark_image_source_with_two_horovod_workers(spark, trained, s3_server):
    from pipelines.inference.cnn_model import CNNModel
    root, folder, labels, est, model, logs = trained
    text = "\n".join(logs)
    assert "materialising the DataFrame" in text and f"materialised {DIGITS} rows in 10 classes, 1 rejected" in text
    assert "2 Horovod workers" in text and re.search(r"by 0\.1: \d+ training \+ \d+ validation rows", text)
    assert isinstance(model, CNNModel) and model.getClassNames() == [str(i) for i in range(10)]

    rows = model.transform(image_frame(spark, folder).coalesce(2)).select("image.origin", "label", "prediction", "probability",
                                                               "error").collect()
    scored = [r for r in rows if r.error is None]
    assert len(rows) == DIGITS + 1 and len(scored) == DIGITS
    assert "broken.png" in next(r.origin for r in rows if r.error is not None)
    accuracy = np.mean([r.prediction == r.label for r in scored])
    assert accuracy > 0.85, accuracy                 # chance is 0.1; 2 epochs on 1,350 digits

    # the model's predictions are Keras predict on the same pixels
    from pipelines.core import storage
    from pipelines.core.tf_runtime import load_model_bytes
    run_dir = next(line.split("run directory ")[1] for line in logs if "run directory" in line)
    assert run_dir.startswith("s3://sparkcnn-test/estimator/runs/")
    keras_model = load_model_bytes(storage.read_bytes(storage.join(run_dir, "model.keras")), ".keras")
    sample = sorted(scored, key=lambda r: r.origin)[:200]
    pixels = np.stack([np.asarray(Image.open(re.sub("^file:(//)?", "", r.origin)))[..., None] for r in sample])
    expected = keras_model.predict(pixels, verbose=0)
    np.testing.assert_allclose(np.array([r.probability for r in sample]), expected, atol=1e-5)
    assert [r.prediction for r in sample] == list(expected.argmax(1))
    history = json.loads(storage.read_bytes(storage.join(run_dir, "history.json")))
    assert len(history["metrics"]["val_accuracy"]) == 2 and history["metrics"]["val_accuracy"][-1] > 0.8

    # the rejects table names the broken file and why
    import pyarrow.parquet as pq
    key = re.search(r"key ([0-9a-f]{16})", text).group(1)
    rejects = pq.read_table(io.BytesIO(storage.read_bytes(
        s3_server.url("estimator", "materialised", key, "rejects.parquet")))).to_pylist()
    assert len(rejects) == 1 and rejects[0]["origin"].endswith("3/broken.png") and rejects[0]["reason"]
    # the store holds the records, checkpoints and model; no credential reached it or the log
    objects = s3_server.all_bytes("estimator")
    assert any("/checkpoints/" in k for k in objects) and any(k.endswith("model.keras") for k in objects)
    assert not any(s3_server.secret.encode() in v for v in objects.values()) and s3_server.secret not in text


MATERIALISE = """
import json
from pyspark.sql import functions as F
from pipelines.core.sections import SparkSection
from pipelines.core.session import build_spark
from pipelines.training.estimator import CNNEstimator
from pipelines.training.estimator_params import sections_of
from pipelines.training.materialise import materialise
spark = build_spark(SparkSection(master="local[1]", app_name="materialise", driver_memory="1g", conf={{}}))
df = (spark.read.format("image").option("recursiveFileLookup", "true").load({folder!r})
      .withColumn("label", F.regexp_extract("image.origin", {pattern!r}, 1).cast("int")))
train, own = sections_of(CNNEstimator(store={store!r}))
m = materialise(spark, df, own, None)
print(json.dumps([m.key, m.reused, m.scope]))
"""


@pytest.mark.slow
def test_materialised_data_is_reused_across_fits_and_processes_and_rewritten_when_inputs_change(
        spark, mnist_files, tmp_path):
    from pipelines.training.estimator_params import sections_of
    from pipelines.training.materialise import materialise
    folder, store = str(tmp_path / "digits"), str(tmp_path / "store")
    export_digits(folder, mnist_files, 120, start=3000, broken=False)

    def listing():
        return sorted((p, os.stat(os.path.join(d, p)).st_mtime_ns) for d, _, files in os.walk(store) for p in files)

    _, own = sections_of(CNNEstimator(store=store))
    first = materialise(spark, image_frame(spark, folder), own, None)
    assert not first.reused and first.meta.num_rows == 120 and first.scope == "files"
    written = listing()
    # another fit's settings (batch size, epochs) do not enter the key: the same data is found again
    _, own_other = sections_of(CNNEstimator(store=store, batchSize=16, epochs=9, learningRate=0.1))
    again = materialise(spark, image_frame(spark, folder), own_other, None)
    assert again.reused and again.key == first.key and listing() == written
    # ... and from another process
    proc = subprocess.run([sys.executable, "-c", MATERIALISE.format(folder=folder, pattern=LABEL_FROM_PATH,
                                                                    store=store)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, SPARK_LOCAL_IP="127.0.0.1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [first.key, True, "files"]
    assert listing() == written
    # a changed input file, an added one, another reading of the images: new keys, rewritten
    victim = sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files)[0]
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(victim)
    os.utime(victim, (1, 1))
    changed = materialise(spark, image_frame(spark, folder), own, None)
    assert not changed.reused and changed.key != first.key
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(os.path.join(folder, "1", "extra.png"))
    added = materialise(spark, image_frame(spark, folder), own, None)
    assert not added.reused and added.key not in (first.key, changed.key) and added.meta.num_rows == 121
    resized = materialise(spark, image_frame(spark, folder), dataclasses.replace(own, image_size=[20, 20]), None)
    assert not resized.reused and resized.meta.shape == (20, 20, 1)
    # rows that are not file-backed are keyed for this application only
    local = spark.createDataFrame([(int(i % 2), bytes(28 * 28), 28, 28, 1) for i in range(40)],
                                  "label INT, image BINARY, height INT, width INT, channels INT")
    from_rows = materialise(spark, local, own, None)
    assert from_rows.scope == "application" and from_rows.meta.num_rows == 40
    assert materialise(spark, local, own, None).reused


def test_mixed_sizes_without_image_size_is_one_clear_error(spark, tmp_path):
    from pipelines.training.estimator_params import sections_of
    from pipelines.training.materialise import MaterialiseError, materialise
    folder = tmp_path / "mixed"
    for i, size in enumerate([(28, 28)] * 3 + [(32, 30)]):
        (folder / str(i % 2)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full(size, 9 * i, np.uint8)).save(folder / str(i % 2) / f"{i}.png")
    _, own = sections_of(CNNEstimator(store=str(tmp_path / "store")))
    with pytest.raises(MaterialiseError, match=r"imageSize is not set and [13] image\(s\) differ in size from the first \(.*png: (32x30|28x28), not"):
        materialise(spark, image_frame(spark, str(folder)), own, None)
    assert not os.path.exists(tmp_path / "store" / "materialised" / os.listdir(tmp_path / "store" / "materialised")[0]
                              / "data")
    _, own = sections_of(CNNEstimator(store=str(tmp_path / "store"), labelCol="nope"))
    with pytest.raises(MaterialiseError, match="labelCol: 'nope' is not a column"):
        materialise(spark, image_frame(spark, str(folder)), own, None)


NEW_PROCESS = """
import json, sys
from pyspark.ml import PipelineModel
from pipelines.core.sections import SparkSection
from pipelines.core.session import build_spark
spark = build_spark(SparkSection(master="local[1]", app_name="roundtrip", driver_memory="1g", conf={{}}))
out = {{}}
for name, path, fmt in (("resizing", {resizing!r}, "binaryFile"), ("plain", {plain!r}, "image")):
    frame = spark.read.format(fmt).option("recursiveFileLookup", "true").load({folder!r}).coalesce(2)
    origin = "path" if fmt == "binaryFile" else "image.origin"
    rows = PipelineModel.load(path).transform(frame).select(origin, "prediction", "probability").collect()
    out[name] = sorted([r[0], r[1], r[2]] for r in rows)
for name, path in (("flipped", {flipped!r}), ("lambda", {lambda_copy!r})):
    try:
        PipelineModel.load(path).transform(
            spark.read.format("image").option("recursiveFileLookup", "true").load({folder!r}).coalesce(2)).collect()
        out[name] = "LOADED"
    except Exception as exc:
        out[name] = "REFUSED " + str(exc)[:20000]
print(json.dumps(out))
"""


def _stage_dir(pipeline_dir, class_name):
    stages = os.path.join(pipeline_dir, "stages")
    return os.path.join(stages, next(n for n in os.listdir(stages) if class_name in n))


def _lambda_keras(path):
    """A .keras file an attacker could write: a Lambda layer runs arbitrary Python when loaded unsafely."""
    import tensorflow as tf
    inputs = tf.keras.Input((28, 28, 1))
    x = tf.keras.layers.Lambda(lambda t: t * 0.0)(tf.keras.layers.Flatten()(inputs))
    tf.keras.Model(inputs, tf.keras.layers.Dense(10, activation="softmax")(x)).save(path)


@pytest.mark.slow
def test_pipelines_with_the_estimator_save_and_load_in_a_new_process(spark, trained, tmp_path):
    import hashlib

    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.sql import functions as F

    from pipelines.inference.image_resizer import ImageResizer
    root, folder, labels, est, model, logs = trained
    # a resizing stage before the estimator, string labels, image file bytes as input
    files = (spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(folder)
             .withColumn("label", F.concat(F.lit("digit-"), F.regexp_extract("path", LABEL_FROM_PATH, 1)))
             .coalesce(2))
    pipeline = Pipeline(stages=[
        ImageResizer(inputCol="content", outputCol="small", height=20, width=20, channels=1, resizeMode="stretch"),
        CNNEstimator(inputCol="small", store=str(root / "store"), epochs=1, batchSize=32, numProc=2, seed=7)])
    fitted = pipeline.fit(files)
    resizing, plain = str(tmp_path / "resizing"), str(tmp_path / "plain")
    fitted.write().overwrite().save(resizing)
    PipelineModel(stages=[model]).write().overwrite().save(plain)
    cnn = fitted.stages[1]
    assert cnn.getClassNames() == [f"digit-{d}" for d in range(10)] and cnn.network.size == (20, 20)

    here = {}
    rows = fitted.transform(files).select("path", "prediction", "probability", "label", "top_k").collect()
    here["resizing"] = sorted([r.path, r.prediction, r.probability] for r in rows)
    accuracy = np.mean([r.top_k[0].className == r.label for r in rows if r.top_k])
    assert accuracy > 0.6, accuracy               # one epoch, 20x20: still far above chance (0.1)
    rows = PipelineModel(stages=[model]).transform(image_frame(spark, folder).coalesce(2)).select(
        "image.origin", "prediction", "probability").collect()
    here["plain"] = sorted([r[0], r[1], r[2]] for r in rows)

    # tampered copies: other bytes under the same digest are refused; a Lambda layer with a matching
    # digest is refused by Keras' safe mode when executors load it
    flipped = str(tmp_path / "flipped")
    shutil.copytree(plain, flipped)
    stage = _stage_dir(flipped, "CNNModel")
    payload = os.path.join(stage, "data", "model.keras")
    data = bytearray(open(payload, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(payload, "wb").write(bytes(data))
    lambda_copy = str(tmp_path / "lambda")
    shutil.copytree(plain, lambda_copy)
    stage = _stage_dir(lambda_copy, "CNNModel")
    _lambda_keras(os.path.join(stage, "data", "model.keras"))
    meta_file = os.path.join(stage, "metadata", "part-00000")
    meta = json.loads(open(meta_file).read())
    meta["network"]["digest"] = hashlib.sha256(open(os.path.join(stage, "data", "model.keras"), "rb").read()).hexdigest()
    open(meta_file, "w").write(json.dumps(meta))
    os.remove(os.path.join(stage, "metadata", ".part-00000.crc"))     # Hadoop's checksum of the old text

    proc = subprocess.run([sys.executable, "-c", NEW_PROCESS.format(resizing=resizing, plain=plain, folder=folder,
                                                                    flipped=flipped, lambda_copy=lambda_copy)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, SPARK_LOCAL_IP="127.0.0.1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    assert there["resizing"] == json.loads(json.dumps(here["resizing"]))      # identical, float for float
    assert there["plain"] == json.loads(json.dumps(here["plain"]))
    assert there["flipped"].startswith("REFUSED") and "do not match its digest" in there["flipped"]
    assert there["lambda"].startswith("REFUSED") and "safe_mode" in there["lambda"], there["lambda"][:3000]


def test_an_unfitted_pipeline_with_the_estimator_saves_and_loads(spark, tmp_path):
    from pyspark.ml import Pipeline

    from pipelines.inference.image_resizer import ImageResizer
    augmentation = [{"op": "rotate", "p": 0.5, "degrees": [-5, 5]}]
    pipeline = Pipeline(stages=[
        ImageResizer(inputCol="content", outputCol="small", height=20, width=20, channels=1),
        CNNEstimator(inputCol="small", store=str(tmp_path / "store"), epochs=3, validation=0.2,
                     augmentation=augmentation)])
    pipeline.write().overwrite().save(str(tmp_path / "unfitted"))
    resizer, est = Pipeline.load(str(tmp_path / "unfitted")).getStages()
    assert isinstance(est, CNNEstimator) and est.getEpochs() == 3 and est.getValidation() == 0.2
    assert est.getAugmentation() == augmentation and est.getBatchSize() == TrainSection().batch_size
    assert resizer.getOrDefault("height") == 20 and resizer.getOrDefault("channels") == 1
