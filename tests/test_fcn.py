"""Fully-convolutional localisation: the converted net equals the classifier on the 10k real MNIST test digits,
composites are deterministic, the Spark heatmaps equal the in-process FCN, and the scores count what they say."""
import numpy as np
import pytest

from pipelines.localise.composites import (
    Placement,
    compose,
    localisation_scores,
    upsample,
    window_geometry,
)


@pytest.fixture(scope="module")
def mnist_arrays(mnist_files, tmp_path_factory):
    from pipelines.ingest import idx
    from pipelines.ingest.sources import open_idx_pair
    scratch = str(tmp_path_factory.mktemp("idx"))
    out = {}
    for split in ("train", "test"):
        src = open_idx_pair(mnist_files[f"{split}_images"], mnist_files[f"{split}_labels"], scratch)
        n = 2000 if split == "train" else src.images.count
        out[split] = (idx.read_rows(src.images, 0, n)[..., None], idx.read_rows(src.labels, 0, n).astype(np.int32))
    return out


@pytest.fixture(scope="module")
def trained_cnn(mnist_arrays):
    """mnist_cnn after one short epoch on 2,000 real digits: confident enough that argmax ties cannot occur."""
    import tensorflow as tf

    from pipelines.training.networks import build_model
    tf.keras.utils.set_random_seed(1)
    model = build_model("mnist_cnn", (28, 28, 1), 10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = mnist_arrays["train"]
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return model


@pytest.mark.slow   # 10k digits through two models
def test_fcn_equals_mnist_cnn_on_the_10k_test_digits(trained_cnn, mnist_arrays):
    from pipelines.localise.fcn_model import equivalence, to_fully_convolutional
    fcn = to_fully_convolutional(trained_cnn)
    kinds = [type(layer).__name__ for layer in fcn.layers]
    assert kinds == ["InputLayer", "Rescaling", "Conv2D", "Conv2D", "MaxPooling2D", "Conv2D", "Conv2D"]
    assert fcn.layers[-2].kernel.shape == (12, 12, 64, 128) and fcn.layers[-1].kernel.shape == (1, 1, 128, 10)
    assert fcn.count_params() == trained_cnn.count_params()
    images, labels = mnist_arrays["test"]
    result = equivalence(trained_cnn, fcn, images)
    assert result["rows"] == 10000
    assert result["max_abs_diff"] < 1e-5 and result["identical_predictions"], result
    probs = trained_cnn.predict(images[:2000], verbose=0)
    assert np.mean(probs.argmax(axis=1) == labels[:2000]) > 0.5  # a real classifier, not a constant one
    assert fcn(np.zeros((1, 100, 60, 1), np.uint8)).shape == (1, 37, 17, 10)  # any canvas size


def test_models_without_a_flatten_classifier_are_refused():
    import tensorflow as tf

    from pipelines.localise.fcn_model import ConversionError, to_fully_convolutional
    inputs = tf.keras.Input((28, 28, 1))
    x = tf.keras.layers.Conv2D(4, 3)(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(10)(x))
    with pytest.raises(ConversionError, match="layer 'gap' \\(GlobalAveragePooling2D\\) has no fully-convolutional"):
        to_fully_convolutional(model)


def test_composites_are_deterministic_and_hold_their_digits(mnist_arrays):
    images, labels = mnist_arrays["test"]
    a, pa_ = compose(images, labels, 3, 200, 40, 0.5, seed=11)
    b, pb = compose(images, labels, 3, 200, 40, 0.5, seed=11)
    c, _ = compose(images, labels, 3, 200, 40, 0.5, seed=12)
    assert np.array_equal(a, b) and pa_ == pb and not np.array_equal(a, c)
    assert a.shape == (3, 200, 200, 1) and 3 <= len(pa_) <= 75
    for p in pa_:
        assert np.array_equal(a[p.image, p.top:p.top + 28, p.left:p.left + 28], images[p.row])
        assert p.label == labels[p.row] and p.top // 40 == (p.top + 27) // 40  # inside one cell
    covered = np.zeros((3, 200, 200), int)
    for p in pa_:
        covered[p.image, p.top:p.top + 28, p.left:p.left + 28] += 1
    assert covered.max() == 1 and np.array_equal(covered > 0, (a[..., 0] > 0) | (covered > 0))


def test_scores_on_a_tiny_hand_made_heatmap():
    # A 60x60 canvas, 28-pixel windows at stride 2 -> 17x17 map; one '3' at (10, 20), centre (24, 34) = window (5, 10).
    assert window_geometry(60, 28, 17) == 2
    heat = np.zeros((1, 17, 17, 10), np.float32)
    placements = [Placement(0, 0, 3, 10, 20)]
    heat[0, 5, 10, 3] = 0.9
    s = localisation_scores(heat, placements, 28, 2, 0.5, 4)
    assert (s["recall"], s["peak_rate"], s["precision"], s["hits"]) == (1.0, 1.0, 1.0, 1)
    heat[0, 0, 0, 7] = 0.8     # a false hit far away: precision halves, the digit still peaks
    s = localisation_scores(heat, placements, 28, 2, 0.5, 4)
    assert (s["recall"], s["peak_rate"], s["precision"], s["false_hits_per_image"]) == (1.0, 1.0, 0.5, 1.0)
    # one of the 49 quarter-digit windows names the digit; every window of this small canvas overlaps it
    assert (s["area_rate"], s["area_accuracy"], s["background_hit_rate"]) == (0.0, 1 / 49, 0.0)
    heat[0, 2:9, 7:14, 3] = 0.6    # the 7x7 windows within a quarter digit (7 px) all name the '3'
    s = localisation_scores(heat, placements, 28, 2, 0.5, 4)
    assert (s["area_rate"], s["area_accuracy"], s["peak_rate"]) == (1.0, 1.0, 1.0)
    heat[0, 2:9, 7:14, 3] = 0.0
    heat[0, 5, 10, 3] = 0.9
    heat[0, 8, 12, 5] = 0.95   # a stronger wrong class over the digit: found, but it no longer peaks
    s = localisation_scores(heat, placements, 28, 2, 0.5, 4)
    assert s["recall"] == 1.0 and s["peak_rate"] == 0.0
    heat[0, 5, 10, 3] = 0.4    # below the threshold: not found
    assert localisation_scores(heat, placements, 28, 2, 0.5, 4)["recall"] == 0.0
    big = upsample(heat[0, ..., 3], 60, 28, 2)
    assert big.shape == (60, 60) and big[24, 34] == pytest.approx(0.4) and big[0, 0] == 0


@pytest.mark.slow   # trains a CNN, then heatmaps through Spark
def test_spark_heatmaps_equal_the_in_process_fcn(spark, trained_cnn, mnist_arrays):
    from pipelines.core.tf_runtime import model_to_bytes
    from pipelines.localise.fcn_model import to_fully_convolutional
    from pipelines.localise.stage import heatmaps_with_spark
    images, labels = mnist_arrays["test"]
    canvases, placements = compose(images, labels, 3, 120, 40, 0.6, seed=3)
    heat = heatmaps_with_spark(spark, model_to_bytes(trained_cnn), canvases, threads=1)
    expected = to_fully_convolutional(trained_cnn)(canvases).numpy()
    assert heat.shape == (3, 47, 47, 10)
    np.testing.assert_allclose(heat, expected, atol=1e-5)
    scores = localisation_scores(heat, placements, 28, 2, 0.5, 4)
    assert scores["digits"] == len(placements) and scores["recall"] > 0.5  # it finds real digits


def test_background_hits_count_only_windows_clear_of_every_digit():
    # 100x100 canvas -> 37x37 map at stride 2; one digit at the top-left corner, centre (14, 14) = window (0, 0).
    heat = np.zeros((1, 37, 37, 10), np.float32)
    placements = [Placement(0, 0, 1, 0, 0)]
    heat[0, 20:, 20:, 1] = 0.7     # windows from (40, 40) on: clear of the digit (it spans 0..27)
    s = localisation_scores(heat, placements, 28, 2, 0.5, 4)
    clear = 37 * 37 - 14 * 14      # windows whose top-left is within 27 px of the digit's in both axes overlap it
    assert s["background_hit_rate"] == pytest.approx(17 * 17 / clear)


def test_background_windows_hold_no_centred_digit():
    from pipelines.training.trial_remote import background_windows, with_background
    solid = np.full((20, 28, 28, 1), 255, np.uint8)    # digits that fill their whole window
    out = background_windows(solid, 2000, np.random.default_rng(0))
    assert out.shape == (2000, 28, 28, 1) and out.dtype == np.uint8
    shown = (out > 0).reshape(2000, -1).mean(axis=1)
    assert shown.max() <= 13 / 28                    # the digit's centre is > 14 px away in some axis
    assert 0.15 < (shown == 0).mean() < 0.3          # the blank share (0.2)
    x, y = with_background(solid, np.zeros(20, np.int32), 0.5, 10, np.random.default_rng(1))
    assert x.shape[0] == 30 and (y[20:] == 10).all() and (y[:20] == 0).all()


def test_a_background_class_names_no_digit_and_makes_no_hits():
    # as the hand-made case above, with an 11th channel: background
    heat = np.zeros((1, 17, 17, 11), np.float32)
    placements = [Placement(0, 0, 3, 10, 20)]
    heat[0, 2:9, 7:14, 3] = 0.6
    heat[0, 5, 10, 3] = 0.9
    heat[0, ..., 10] = 0.7                            # background everywhere, strongest outside the digit
    heat[0, 2:9, 7:14, 10] = 0.3
    s = localisation_scores(heat, placements, 28, 2, 0.5, 4, background=True)
    assert (s["area_rate"], s["area_accuracy"], s["peak_rate"], s["hits"]) == (1.0, 1.0, 1.0, 49)
    heat[0, 2:5, 7:14, 10] = 0.8                      # background now tops 21 of the 49 windows: still named
    s = localisation_scores(heat, placements, 28, 2, 0.5, 4, background=True)
    assert (s["area_rate"], s["area_accuracy"]) == (1.0, 28 / 49)
    heat[0, 2:9, 7:14, 10] = 0.8                      # background tops all but the 0.9 peak: the digit is not named
    s = localisation_scores(heat, placements, 28, 2, 0.5, 4, background=True)
    assert (s["area_rate"], s["area_accuracy"]) == (0.0, 1 / 49) and s["hits"] == 49   # hits: digit classes only
