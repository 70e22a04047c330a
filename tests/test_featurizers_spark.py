"""DeepImageFeaturizer / DeepImagePredictor as Spark ML stages on a real local Spark: Spark's image
source and sparkcnn datasets as input, a Pipeline with LogisticRegression, a PipelineModel saved and
loaded in a new process, bad input, and the `sparkcnn transfer` command on a slice of real MNIST."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pyspark.sql import functions as F

from featurizers import DeepImageFeaturizer, DeepImagePredictor
from pipelines.inference.cnn_model import CNNModel
from pipelines.inference.model_files import network_from_zoo
from pipelines.inference.network import CLASSIFIER_INPUT, NetworkError, network_input
from pipelines.inference.pretrained import keras_models, registry
from pipelines.inference.pretrained.registry import FeaturizerConfigError
from pipelines.core import records
from pipelines.ingest import idx

SPARKCNN = os.path.join(os.path.dirname(sys.executable), "sparkcnn")


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory, imagenet_samples):
    root = tmp_path_factory.mktemp("imagenet")
    for name, _, jpeg in imagenet_samples:
        (root / name).write_bytes(jpeg)
    return root


@pytest.fixture(scope="module")
def mnist_dataset(tmp_path_factory, mnist_files):
    """700 real MNIST training digits as a sparkcnn dataset (Parquet, record contract), in 2 files."""
    root = tmp_path_factory.mktemp("mnist_records")
    scratch = str(root / "unpacked")
    images = idx.read_header(idx.ensure_uncompressed(mnist_files["train_images"], scratch))
    labels = idx.read_header(idx.ensure_uncompressed(mnist_files["train_labels"], scratch), expect_ndim=1)
    for lo, hi in ((0, 350), (350, 700)):
        batch = records.encode_batch(np.arange(lo, hi), idx.read_rows(labels, lo, hi), idx.read_rows(images, lo, hi))
        pq.write_table(pa.Table.from_batches([batch]), root / f"part-{lo}.parquet")
    return root


@pytest.mark.slow   # EfficientNet over the photo set through Spark
def test_predictor_on_spark_image_source_gets_reference_accuracy_with_names(spark, imagenet_dir, imagenet_samples):
    """Spark's image struct is BGR and of any size (one sample is 1024x683); top-1 must match the reference 17/20."""
    frame = spark.read.format("image").load(str(imagenet_dir))
    predictor = DeepImagePredictor(inputCol="image", outputCol="top", modelName="EfficientNetLite0", topK=3)
    rows = predictor.transform(frame).select("image.origin", "top").collect()
    truth = {name: label for name, label, _ in imagenet_samples}
    assert len(rows) == 20
    top1 = sum(r.top[0].classIndex == truth[os.path.basename(r.origin)] for r in rows)
    assert top1 == 17
    for r in rows:
        probs = [p.probability for p in r.top]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert r.top[0].className == registry.imagenet_class_names()[r.top[0].classIndex]


@pytest.mark.slow   # EfficientNet on a thousand digits, twice
def test_featurizer_on_dataset_records_matches_keras_in_process(spark, mnist_dataset):
    frame = spark.read.parquet(str(mnist_dataset)).where("id < 40")
    featurizer = DeepImageFeaturizer(inputCol=records.IMAGE, outputCol="features", modelName="EfficientNetLite0",
                                     batchSize=16)
    out = featurizer.transform(frame).select(records.ID, records.LABEL, "features").orderBy(records.ID).toPandas()
    assert list(out[records.ID]) == list(range(40))
    got = np.stack([v.toArray() for v in out["features"]])
    assert got.shape == (40, 1280)
    table = pq.read_table(mnist_dataset).sort_by(records.ID).slice(0, 40)
    spec = registry.get_spec("EfficientNetLite0")
    model = keras_models.build_model(spec, registry.IMAGENET, keras_models.FEATURES)
    digits = records.decode_images(table.column(records.IMAGE), (28, 28, 1))
    expected = model.predict(network_input(network_from_zoo("EfficientNetLite0", registry.IMAGENET), digits), verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.slow   # EfficientNet through Spark, three ways
def test_one_preprocessing_rule_whichever_stage_scores_an_image(spark, imagenet_dir):
    """The same photos, as Spark's image struct and as file bytes, give identical features from
    DeepImageFeaturizer and from CNNModel.from_zoo: the featurizers run on the inference engine, with its one
    pixel rule (pipelines.images.pixels: cover the input with PIL's antialiased bilinear resize, centre crop;
    then the model's own normalisation)."""
    structs = spark.read.format("image").load(str(imagenet_dir)).orderBy("image.origin").limit(4)
    files = spark.read.format("binaryFile").load(str(imagenet_dir)).orderBy("path").limit(4)
    featurizer = DeepImageFeaturizer(outputCol="features", modelName="EfficientNetLite0", batchSize=4)
    engine = CNNModel.from_zoo("EfficientNetLite0", embeddingLayer=CLASSIFIER_INPUT, batchSize=4)
    for frame, column, name in ((structs, "image", F.col("image.origin")), (files, "content", F.col("path"))):
        by_featurizer = {r.name: r.features.toArray() for r in featurizer.setInputCol(column).transform(frame)
                         .select(name.alias("name"), "features").collect()}
        by_engine = {r.name: np.array(r.embedding, np.float32) for r in engine.setInputCol(column).transform(frame)
                     .select(name.alias("name"), "embedding").collect()}
        assert len(by_featurizer) == 4 and set(by_featurizer) == set(by_engine)
        for key, features in by_featurizer.items():
            np.testing.assert_array_equal(features, by_engine[key])


@pytest.mark.slow   # a second Spark driver process
def test_pipeline_with_logistic_regression_round_trips_in_a_new_process(spark, mnist_dataset, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression
    data = spark.read.parquet(str(mnist_dataset))
    train, test = data.where("id < 500"), data.where("id >= 500")
    pipeline = Pipeline(stages=[
        DeepImageFeaturizer(inputCol="image", outputCol="features", modelName="EfficientNetLite0", batchSize=64),
        LogisticRegression(featuresCol="features", labelCol="label", maxIter=100, regParam=1e-3)])
    fitted = pipeline.fit(train)
    predictions = fitted.transform(test).select("id", "label", "prediction").orderBy("id").toPandas()
    accuracy = float((predictions["label"] == predictions["prediction"]).mean())
    assert accuracy > 0.8, accuracy  # 500 training digits, pretrained ImageNet features
    saved = tmp_path / "pipeline_model"
    fitted.write().save(str(saved))
    meta = json.loads(next((saved / "stages").glob("0_DeepImageFeaturizer_*")).joinpath("metadata", "part-00000")
                      .read_text())
    assert meta["class"] == "featurizers.transformers.DeepImageFeaturizer"
    assert meta["paramMap"]["modelName"] == "EfficientNetLite0" and meta["paramMap"]["batchSize"] == 64
    # A new session in a new process loads it and predicts the same classes.
    script = f"""
import sys
from pipelines.core.sections import SparkSection
from pipelines.core.session import build_spark
from pyspark.ml import PipelineModel
spark = build_spark(SparkSection(master="local[2]", app_name="reload", driver_memory="1g", conf={{}}))
model = PipelineModel.load({str(saved)!r})
frame = spark.read.parquet({str(mnist_dataset)!r}).where("id >= 500")
for r in model.transform(frame).select("id", "prediction").orderBy("id").collect():
    print("PRED", r.id, int(r.prediction))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reloaded = [int(line.split()[2]) for line in proc.stdout.splitlines() if line.startswith("PRED")]
    assert reloaded == [int(p) for p in predictions["prediction"]]
    assert type(PipelineModel.load(str(saved)).stages[0]) is DeepImageFeaturizer


def test_params_are_documented_validated_and_copied():
    featurizer = DeepImageFeaturizer(modelName="ResNet50", weights=registry.RANDOM_UNTRAINED)
    assert featurizer.getModelName() == "ResNet50" and featurizer.featureSize() == 2048
    assert featurizer.getInputCol() == "image" and featurizer.getOutputCol() == "features"
    text = featurizer.explainParams()
    for name in ("modelName", "weights", "batchSize", "inputCol", "outputCol"):
        assert name in text
    copy = featurizer.copy({featurizer.batchSize: 8})
    assert copy.getBatchSize() == 8 and featurizer.getBatchSize() == 32
    with pytest.raises(FeaturizerConfigError, match="modelName 'InceptionV4' is not a known model"):
        DeepImageFeaturizer(modelName="InceptionV4")
    assert DeepImagePredictor().getTopK() == 5


@pytest.mark.slow   # over 5 s: make test, not the everyday tier
def test_bad_inputs_are_clear_errors(spark, tmp_path, mnist_dataset):
    frame = spark.read.parquet(str(mnist_dataset))
    with pytest.raises(NetworkError, match="inputCol 'pixels' is not a column"):
        DeepImageFeaturizer(inputCol="pixels").transform(frame)
    with pytest.raises(NetworkError, match="inputCol 'label' is int"):
        DeepImageFeaturizer(inputCol="label").transform(frame)
    with pytest.raises(FeaturizerConfigError, match="weights '/nowhere/w.pth' is neither"):
        DeepImageFeaturizer(weights="/nowhere/w.pth").transform(frame)
    # Raw pixels without their shape columns read as image files: each row says it is not one.
    rows = DeepImageFeaturizer(weights=registry.RANDOM_UNTRAINED, errorCol="error") \
        .transform(frame.select("image").limit(2)).select("features", "error").collect()
    assert [(r.features, r.error) for r in rows] == [(None, "not an image file PIL can identify")] * 2


@pytest.mark.slow   # a Spark job over a corrupt image
def test_a_corrupt_image_is_that_rows_error_and_the_job_finishes(spark, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    for name, shape in (("fine.png", (9, 7, 3)), ("gray.png", (12, 20))):
        buf = io.BytesIO()
        Image.fromarray(np.full(shape, 90, np.uint8)).save(buf, format="PNG")
        (tmp_path / name).write_bytes(buf.getvalue())
    images = spark.read.format("image").option("dropInvalid", False).load(str(tmp_path / "*.png"))
    featurizer = DeepImageFeaturizer(weights=registry.RANDOM_UNTRAINED, errorCol="error")
    rows = {os.path.basename(r.origin): r for r in
            featurizer.transform(images).select("image.origin", "features", "error").collect()}
    assert sorted(rows) == ["broken.png", "fine.png", "gray.png"]
    assert rows["broken.png"].features is None
    assert rows["broken.png"].error.startswith("no pixels (Spark's image source marks files it could not decode")
    for name in ("fine.png", "gray.png"):
        assert rows[name].error is None and rows[name].features.size == 1280
    predictor = DeepImagePredictor(weights=registry.RANDOM_UNTRAINED, errorCol="why", topK=2)
    top = {os.path.basename(r.origin): r for r in predictor.transform(images).select("image.origin", "predicted_labels",
                                                                                      "why").collect()}
    assert top["broken.png"].predicted_labels is None and top["broken.png"].why == rows["broken.png"].error
    assert len(top["fine.png"].predicted_labels) == 2 and top["fine.png"].why is None


@pytest.mark.slow   # the whole transfer command
def test_transfer_command_on_a_slice_of_mnist(tmp_path, mnist_files):
    conf = tmp_path / "t.yaml"
    conf.write_text(f"""
run: {{name: tl, runs_dir: {tmp_path}/runs}}
spark: {{master: "local[2]", driver_memory: 2g}}
data: {{datasets_dir: {tmp_path}/datasets}}
ingest: {{limit_train: 600, limit_test: 200}}
transfer: {{model: EfficientNetLite0, weights: imagenet, train_rows: 500, test_rows: 200, reg_param: 0.001}}
report: {{samples_per_class: 2}}
""")
    proc = subprocess.run([SPARKCNN, "transfer", "--conf", str(conf)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run = tmp_path / "runs" / "tl"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["rows"] == 200 and metrics["accuracy"] > 0.8
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 200 and np.trace(cm) / 200 == pytest.approx(metrics["accuracy"])
    assert metrics["spark_accuracy"] == pytest.approx(metrics["accuracy"]) and 0 < metrics["weighted_f1"] <= 1
    assert metrics["transfer"]["train_rows"] == 500 and metrics["transfer"]["feature_dim"] == 1280
    html = (run / "report" / "index.html").read_text()
    assert f"{metrics['accuracy']:.4f}" in html and "confusion_matrix.png" in html and "Transfer learning" in html
    assert (run / "transfer_model" / "stages").is_dir()
    assert proc.stdout.strip().splitlines()[-1] == f"report: {run}/report/index.html"
    bad = subprocess.run([SPARKCNN, "transfer", "--conf", str(conf), "--set", "transfer.model=VGG"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "transfer: modelName 'VGG' is not a known model" in bad.stderr
