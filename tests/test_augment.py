"""Augmentation: each op's effect on real MNIST digits, the Spark stage on real Parquet, reproducibility."""
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.augment.stage import (
    augment,
    augment_split,
    pipeline_of,
    stored_permutation,
)
from pipelines.augmentation.draws import scramble_permutation
from pipelines.augmentation.on_the_fly import OnTheFly
from pipelines.augmentation.params import AugmentError
from pipelines.augmentation.pipeline import OPS, Pipeline
from pipelines.core import records
from pipelines.core.config import ConfigError
from pipelines.core.store import RunStore
from pipelines.ingest import idx
from pipelines.stages import load_config

from conftest import petastorm_first_pass


@pytest.fixture(scope="module")
def digits(mnist_files, tmp_path_factory):
    """The first 300 real MNIST training digits (N, 28, 28, 1) and labels."""
    scratch = str(tmp_path_factory.mktemp("idx"))
    images = idx.read_rows(idx.read_header(idx.ensure_uncompressed(mnist_files["train_images"], scratch)), 0, 300)
    labels = idx.read_rows(idx.read_header(idx.ensure_uncompressed(mnist_files["train_labels"], scratch),
                                           expect_ndim=1), 0, 300)
    return images[..., None].copy(), labels.astype(np.int32)


def run(steps, images, seed=1, samples=1):
    n = len(images)
    return Pipeline.parse(steps, seed).apply(images, np.arange(n), np.full(n, samples))


def centre_of_mass(images):
    img = images[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0:img.shape[1], 0:img.shape[2]]
    total = img.sum(axis=(1, 2))
    return (img * xs).sum(axis=(1, 2)) / total, (img * ys).sum(axis=(1, 2)) / total


# ---------------------------------------------------------------- ops, in numpy

def test_flips_and_quarter_turns_are_exact(digits):
    images, _ = digits
    np.testing.assert_array_equal(run([{"op": "flip_lr"}], images), images[:, :, ::-1])
    np.testing.assert_array_equal(run([{"op": "flip_tb"}], images), images[:, ::-1])
    for angle, k in ((90, 1), (180, 2), (270, 3)):   # counter-clockwise, like np.rot90
        np.testing.assert_array_equal(run([{"op": "rotate90", "angles": [angle]}], images),
                                      np.rot90(images, k, axes=(1, 2)))


def test_rotate_turns_the_same_way_as_rotate90(digits):
    images, _ = digits
    by_range = run([{"op": "rotate", "degrees": [90, 90]}], images).astype(int)
    exact = np.rot90(images, 1, axes=(1, 2)).astype(int)
    assert np.abs(by_range - exact).max() <= 1    # cos(90 deg) is not exactly 0 in floating point


@pytest.mark.parametrize("step", [
    {"op": "rotate", "degrees": [0, 0]}, {"op": "shift", "x": [0, 0], "y": [0, 0]}, {"op": "zoom", "factor": [1, 1]},
    {"op": "shear", "x_degrees": [0, 0]}, {"op": "crop", "size": [1, 1]}, {"op": "skew", "magnitude": 0.0},
    {"op": "elastic", "magnitude": 0.0}, {"op": "brightness", "factor": [1, 1]},
    {"op": "contrast", "factor": [1, 1]}, {"op": "noise", "sigma": [0, 0]}, {"op": "rotate", "p": 0.0},
])
def test_identity_parameters_give_identical_images(digits, step):
    images, _ = digits
    np.testing.assert_array_equal(run([step], images), images)


def bilinear64(image, x, y):
    """The exact bilinear sample of a (H, W) image at float64 input coordinates, black outside."""
    padded = np.pad(image.astype(np.float64), 1)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0

    def at(yy, xx):
        yy, xx = yy.astype(int) + 1, xx.astype(int) + 1
        inside = (yy >= 0) & (yy < padded.shape[0]) & (xx >= 0) & (xx < padded.shape[1])
        return np.where(inside, padded[np.clip(yy, 0, padded.shape[0] - 1), np.clip(xx, 0, padded.shape[1] - 1)], 0)
    return ((at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx) * (1 - fy)
            + (at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx) * fy)


def assert_close_to_exact(out, exact):
    """Against exact float64 bilinear: OpenCV samples at 1/32 pixel, which on a digit's 0-255 edge
    is worth a few grey levels, so a few pixels differ by some levels and the mean by a fraction of one."""
    diff = np.abs(np.rint(exact) - out)
    assert diff.max() <= 10 and diff.mean() < 0.3, (diff.max(), diff.mean())


def test_rotate_matches_exact_bilinear(digits):
    """The batched resample against float64 bilinear of each image alone, at the angles in the lineage."""
    images, _ = digits
    out, lineage = Pipeline.parse([{"op": "rotate", "degrees": [-40, 40]}], seed=4).apply(
        images, np.arange(300), np.ones(300), lineage=True)
    ys, xs = np.mgrid[0:28, 0:28].astype(np.float64) - 13.5
    exact = []
    for img, text in zip(images, lineage):
        a = np.radians(json.loads(text)[0]["degrees"])
        # output -> input: rotate back by the angle (positive: counter-clockwise on screen, y down)
        exact.append(bilinear64(img[..., 0], np.cos(a) * xs - np.sin(a) * ys + 13.5, np.sin(a) * xs + np.cos(a) * ys + 13.5))
    assert_close_to_exact(out[..., 0], np.stack(exact))


def test_elastic_matches_exact_bilinear(digits):
    """Elastic as the only op: the displacement interpolated in float64 from the drawn grid, each image
    sampled alone; the batched, folded float32 field must give the same pixels up to rounding."""
    from pipelines.augmentation.draws import image_keys
    images, _ = digits
    p = Pipeline.parse([{"op": "elastic", "grid_width": 4, "grid_height": 3, "magnitude": 4}], seed=9)
    n = 100
    ids, samples = np.arange(n), np.ones(n)
    out = p.apply(images[:n], ids, samples)
    d = p.ops[0].draw(image_keys(9, ids, samples), 28, 28)
    ys, xs = np.mgrid[0:28, 0:28].astype(np.float64)
    fx, fy = xs * 4 / 27, ys * 3 / 27
    x0, y0 = np.minimum(np.floor(fx), 3).astype(int), np.minimum(np.floor(fy), 2).astype(int)
    tx, ty = fx - x0, fy - y0

    def field(g):
        return ((g[y0, x0] * (1 - tx) + g[y0, x0 + 1] * tx) * (1 - ty)
                + (g[y0 + 1, x0] * (1 - tx) + g[y0 + 1, x0 + 1] * tx) * ty)
    exact = np.stack([bilinear64(images[i, ..., 0], xs + field(d["dx"][i]), ys + field(d["dy"][i])) for i in range(n)])
    assert_close_to_exact(out[..., 0], exact)
    assert np.abs(exact - images[:n, ..., 0]).mean() > 5    # the field moves pixels at all


def test_shift_moves_the_centre_of_mass(digits):
    images, _ = digits
    x0, y0 = centre_of_mass(images)
    x1, y1 = centre_of_mass(run([{"op": "shift", "x": [0.25, 0.25], "y": [-0.1, -0.1]}], images))
    # digits leave the frame a little, so the centre moves by about, not exactly, 7 and -2.8 pixels
    assert np.median(x1 - x0) == pytest.approx(7.0, abs=0.5)
    assert np.median(y1 - y0) == pytest.approx(-2.8, abs=0.5)


def test_zoom_in_spreads_ink_and_crop_resizes_back(digits):
    images, _ = digits
    zoomed = run([{"op": "zoom", "factor": [1.5, 1.5]}], images)
    assert (zoomed > 0).sum() > 1.5 * (images > 0).sum()
    cropped = run([{"op": "crop", "size": [0.5, 0.5], "mode": "centre"}], images)
    assert cropped.shape == images.shape and (cropped > 0).sum() > 2 * (images > 0).sum()


def test_every_op_keeps_shape_dtype_range_on_gray_and_rgb(digits):
    gray, _ = digits
    rgb = np.concatenate([gray, 255 - gray, gray // 2], axis=-1)
    steps = [{"op": name} for name, cls in OPS.items() if cls.kind != "pixel"] + \
            [{"op": name} for name, cls in OPS.items() if cls.kind == "pixel"] + [{"op": "erase", "fill": "noise"}]
    for images in (gray, rgb):
        out = run(steps, images)
        assert out.dtype == np.uint8 and out.shape == images.shape
        assert not np.array_equal(out, images)
    # one op at a time too, with large parameters that push values out of range before clipping
    for step in ({"op": "brightness", "factor": [3, 3]}, {"op": "contrast", "factor": [4, 4]},
                 {"op": "noise", "sigma": [200, 200]}):
        out = run([step], gray)
        assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_erase_blanks_a_rectangle(digits):
    images, _ = digits
    out = run([{"op": "erase", "area": [0.25, 0.25], "aspect": [1, 1], "fill": 255}], images)
    changed = (out == 255) & (images != 255)
    assert ((out == 255).sum(axis=(1, 2, 3)) >= 14 * 14 - 1).all() and changed.any()


def test_scramble_is_one_fixed_permutation(digits):
    images, _ = digits
    out = run([{"op": "scramble", "seed": 5}], images, seed=99)
    perm = scramble_permutation(5, 28, 28)
    np.testing.assert_array_equal(out.reshape(len(out), -1), images.reshape(len(images), -1)[:, perm])


def test_draws_depend_on_seed_source_and_sample_only(digits):
    images, _ = digits
    p = Pipeline.parse([{"op": "rotate"}, {"op": "shift"}, {"op": "skew"}, {"op": "elastic"},
                        {"op": "noise"}, {"op": "erase", "fill": "noise"}], seed=3)
    ids, samples = np.arange(300) + 1000, np.full(300, 2)
    whole = p.apply(images, ids, samples)
    order = np.random.default_rng(0).permutation(300)
    shuffled = p.apply(images[order], ids[order], samples[order])
    np.testing.assert_array_equal(shuffled, whole[order])
    np.testing.assert_array_equal(p.apply(images[7:9], ids[7:9], samples[7:9]), whole[7:9])
    assert not np.array_equal(p.apply(images, ids, samples + 1), whole)
    assert not np.array_equal(Pipeline.parse(p.spec()["pipeline"], seed=4).apply(images, ids, samples), whole)


def test_elastic_at_p_below_1_between_matrix_ops_gives_the_same_bytes_however_the_batch_is_split(digits):
    """An elastic op applied to some images of a batch must not change how the others are resampled.

    Images are split into batches of 1, uneven batches and a shuffled whole batch; every image must
    come out byte-identical to the whole-batch run.  Large enough (300 digits, a dozen p < 1 ops) that
    images on every path through the chain (which elastic ops apply, skew or not) share batches.
    """
    images, _ = digits
    p = Pipeline.parse([{"op": "rotate", "p": 0.7}, {"op": "skew", "p": 0.5}, {"op": "elastic", "p": 0.4},
                        {"op": "zoom", "p": 0.6, "factor": [0.7, 1.3]}, {"op": "shift", "p": 0.5},
                        {"op": "elastic", "p": 0.5, "magnitude": 3}, {"op": "shear", "p": 0.5},
                        {"op": "flip_lr", "p": 0.5}, {"op": "noise", "p": 0.5}], seed=11)
    n = len(images)
    ids, samples = np.arange(n) + 500, np.full(n, 3)
    whole = p.apply(images, ids, samples)
    alone = np.concatenate([p.apply(images[i:i + 1], ids[i:i + 1], samples[i:i + 1]) for i in range(n)])
    np.testing.assert_array_equal(alone, whole)
    for parts in (np.array_split(np.arange(n), 7), np.split(np.arange(n), [1, 3, 40, 41, 200])):
        split = np.concatenate([p.apply(images[r], ids[r], samples[r]) for r in parts])
        np.testing.assert_array_equal(split, whole)
    order = np.random.default_rng(5).permutation(n)
    np.testing.assert_array_equal(p.apply(images[order], ids[order], samples[order]), whole[order])
    assert not np.array_equal(whole, images)


def test_resampling_is_split_independent_for_large_coordinates(digits):
    """A far zoom-out and strong skews put coordinates far outside the image, where the sub-pixel
    rounding takes another route; still the same bytes alone as in a batch."""
    images, _ = digits
    p = Pipeline.parse([{"op": "zoom", "p": 0.5, "factor": [0.05, 0.06]}, {"op": "skew", "p": 0.5, "magnitude": 1.0},
                        {"op": "rotate", "degrees": [-180, 180]}], seed=2)
    ids, samples = np.arange(60), np.ones(60)
    whole = p.apply(images[:60], ids, samples)
    alone = np.concatenate([p.apply(images[i:i + 1], ids[i:i + 1], samples[i:i + 1]) for i in range(60)])
    np.testing.assert_array_equal(alone, whole)


def test_lineage_lists_applied_ops_and_drawn_parameters(digits):
    images, _ = digits
    p = Pipeline.parse([{"op": "rotate", "degrees": [10, 20]}, {"op": "flip_lr", "p": 0.0}, {"op": "noise"}], 1)
    _, lineage = p.apply(images[:5], np.arange(5), np.ones(5), lineage=True)
    for text in lineage:
        ops = json.loads(text)
        assert [o["op"] for o in ops] == ["rotate", "noise"]
        assert 10 <= ops[0]["degrees"] <= 20


@pytest.mark.parametrize("pipeline, message", [
    ("[{op: rotat}]", r"augment.pipeline\[0\]: unknown op 'rotat' \(did you mean 'rotate'\?\)"),
    ("[{op: rotate, degres: [1, 2]}]", r"augment.pipeline\[0\] \(rotate\): unknown parameter 'degres'"),
    ("[{op: rotate, degrees: 25}]", r"\(rotate\).degrees: expected \[low, high\], got 25"),
    ("[{op: rotate, p: 1.5}]", r"\(rotate\).p: value 1.5 is above the maximum 1.0"),
    ("[{op: crop, mode: middle}]", r"\(crop\).mode: 'middle' is not one of random, centre"),
    ("[{op: noise}, {op: shift}]", r"\[1\] \(shift\): geometric op after pixel op 'noise'"),
    ("[rotate]", r"augment.pipeline\[0\]: expected a mapping with an 'op' key"),
    ("{op: rotate}", r"augment.pipeline: expected a list"),
])
def test_bad_pipeline_is_a_clear_conf_error(tmp_path, pipeline, message):
    conf = tmp_path / "x.yaml"
    conf.write_text(f"augment:\n  pipeline: {pipeline}\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_config(str(conf))
    assert str(err.value).startswith(f"{conf}: augment.pipeline")


def test_shipped_conf_is_the_seeds_augmentation():
    cfg = load_config("conf/augment_mnist.yaml")
    spec = pipeline_of(cfg).spec()["pipeline"]
    assert spec[0] == {"op": "rotate", "p": 0.9, "degrees": [-25.0, 25.0]}
    assert spec[1]["op"] == "shift" and spec[1]["x"] == [-0.25, 0.25]


def test_on_the_fly_augments_every_call_differently_and_reproducibly(digits):
    images, _ = digits
    spec = Pipeline.parse([{"op": "rotate"}, {"op": "shift"}], seed=1).spec()
    first = OnTheFly(spec, stream=0)
    epoch1, epoch2 = first(images[:64]), first(images[:64])
    assert epoch1.shape == images[:64].shape and epoch1.dtype == np.uint8
    assert not np.array_equal(epoch1, epoch2)
    again = OnTheFly(spec, stream=0)
    np.testing.assert_array_equal(again(images[:64]), epoch1)


@pytest.mark.slow   # over 5 s: make test, not the everyday tier
def test_on_the_fly_inside_tf_data():
    """In a subprocess: this test process must not initialise TensorFlow (Horovod tests fork later)."""
    code = (
        "import numpy as np, tensorflow as tf\n"
        "from pipelines.augmentation.pipeline import Pipeline\n"
        "from pipelines.augmentation.on_the_fly import augment_tf_dataset\n"
        "spec = Pipeline.parse([{'op': 'flip_lr'}], 0).spec()\n"
        "x = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6, 1)\n"
        "ds = tf.data.Dataset.from_tensors((x, np.arange(4, dtype=np.int32)))\n"
        "img, lbl = next(iter(augment_tf_dataset(ds, spec, stream=0)))\n"
        "assert img.dtype == tf.uint8 and img.shape == (4, 5, 6, 1), (img.dtype, img.shape)\n"
        "np.testing.assert_array_equal(img.numpy(), x[:, :, ::-1])\n"
        "np.testing.assert_array_equal(lbl.numpy(), np.arange(4))\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


# ---------------------------------------------------------------- the Spark stage

def write_dataset(path, images, labels, split, files=1, class_names=None):
    """A dataset following the record contract, written by pyarrow into `files` Parquet files."""
    os.makedirs(path)
    n = len(images)
    for i, rows in enumerate(np.array_split(np.arange(n), files)):
        batch = records.encode_batch(rows, labels[rows], images[rows])
        pq.write_table(pa.Table.from_batches([batch]), os.path.join(path, f"part-{i}.parquet"))
    counts = {str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))}
    h, w, c = images.shape[1:]
    records.write_meta(path, records.DatasetMeta(
        name="toy", split=split, num_rows=n, height=h, width=w, channels=c,
        class_names=class_names or [str(i) for i in range(10)], class_counts=counts))


def conf(tmp_path, datasets, **augment):
    text = {"run": {"name": "aug", "runs_dir": str(tmp_path / "runs")},
            "data": {"datasets_dir": str(datasets)},
            "augment": {"seed": 7, "n_per_image": 2,
                        "pipeline": [{"op": "rotate", "p": 0.9}, {"op": "shift", "p": 0.5},
                                     {"op": "elastic", "p": 0.3}, {"op": "noise", "p": 0.5}], **augment}}
    return load_config(text=json.dumps(text))


def read_sorted(path):
    return pq.read_table(os.path.realpath(path)).sort_by([("source_id", "ascending"), ("sample", "ascending")])


@pytest.mark.slow   # three augment jobs of the same data
def test_same_seed_same_bytes_whatever_the_partitioning(spark, tmp_path, digits):
    images, labels = digits
    outputs = []
    for files, partitions in ((1, 1), (3, 3)):
        root = tmp_path / f"p{files}"
        write_dataset(str(root / "mnist" / "train"), images, labels, "train", files=files)
        cfg = conf(tmp_path, root, partitions=partitions)
        dest, meta = augment_split(spark, cfg, "train", pipeline_of(cfg))
        assert len([f for f in os.listdir(dest) if f.endswith(".parquet")]) == partitions
        outputs.append((read_sorted(dest), meta))
    (one, meta1), (three, meta3) = outputs
    assert one.equals(three)
    assert one.num_rows == 300 * 3 == meta1.num_rows == meta3.num_rows
    ids = one.column("id").to_numpy()
    assert len(np.unique(ids)) == len(ids)
    np.testing.assert_array_equal(ids, one.column("source_id").to_numpy() * 3 + one.column("sample").to_numpy())
    # labels preserved, originals kept as sample 0, pixels in range and shaped like the source
    src = dict(zip(range(300), labels))
    assert all(src[s] == lab for s, lab in zip(one.column("source_id").to_pylist(), one.column("label").to_pylist()))
    originals = one.filter(pa.compute.equal(one.column("sample"), 0))
    np.testing.assert_array_equal(records.decode_images(originals.column("image"), (28, 28, 1)), images)
    assert set(one.column("height").to_pylist()) == {28} and set(one.column("channels").to_pylist()) == {1}
    ops = [json.loads(t) for t in one.column("ops").to_pylist()]
    assert any(o and o[0]["op"] == "rotate" for o in ops)
    assert meta1.augmentation["pipeline"][0]["op"] == "rotate" and meta1.augmentation["seed"] == 7
    assert sum(meta1.class_counts.values()) == 900


@pytest.mark.slow   # over 5 s: make test, not the everyday tier
def test_drop_originals_and_class_balanced_counts(spark, tmp_path, digits):
    images, _ = digits
    labels = np.array([0] * 200 + [1] * 70 + [2] * 30, np.int32)   # imbalanced
    write_dataset(str(tmp_path / "d" / "mnist" / "train"), images, labels, "train")
    cfg = conf(tmp_path, tmp_path / "d", keep_originals=False, n_per_image=3)
    _, meta = augment_split(spark, cfg, "train", pipeline_of(cfg))
    assert meta.class_counts == {"0": 600, "1": 210, "2": 90}
    assert 0 not in set(read_sorted(cfg.dataset_dir("train_aug")).column("sample").to_pylist())

    cfg = conf(tmp_path, tmp_path / "d", keep_originals=True, n_per_image=1, balance_classes=True)
    _, meta = augment_split(spark, cfg, "train", pipeline_of(cfg))
    assert meta.class_counts == {"0": 400, "1": 400, "2": 400}   # every class up to the largest: 200 * (1 + 1)
    table = read_sorted(cfg.dataset_dir("train_aug"))
    assert len(np.unique(table.column("id").to_numpy())) == 1200
    # Petastorm reads the augmented dataset the way training does: an endless reader, bounded by
    # steps. Its first pass must deliver every row exactly once.
    ids = petastorm_first_pass(cfg.dataset_dir("train_aug"), 1200, [records.ID, records.IMAGE, records.LABEL])
    assert len(ids) == 1200 and len(set(ids)) == 1200


@pytest.mark.slow   # over 5 s: make test, not the everyday tier
def test_scramble_permutation_is_stored_and_shared_by_train_and_test(spark, tmp_path, digits):
    images, labels = digits
    root = tmp_path / "s"
    write_dataset(str(root / "mnist" / "train"), images[:200], labels[:200], "train")
    write_dataset(str(root / "mnist" / "test"), images[200:], labels[200:], "test")
    cfg = conf(tmp_path, root, pipeline=[{"op": "scramble"}], n_per_image=1, keep_originals=False,
               splits=["train", "test"])
    results = augment(spark, cfg, RunStore(cfg.run_dir))
    assert set(results) == {"train", "test"}
    perm_train, perm_test = stored_permutation(cfg.dataset_dir("train_aug")), stored_permutation(cfg.dataset_dir("test_aug"))
    np.testing.assert_array_equal(perm_train, perm_test)
    test_out = read_sorted(cfg.dataset_dir("test_aug"))
    scrambled = records.decode_images(test_out.column("image"), (28, 28, 1)).reshape(100, -1)
    np.testing.assert_array_equal(scrambled, images[200:].reshape(100, -1)[:, perm_test])
    figure = os.path.join(cfg.run_dir, "augment", "train_before_after.png")
    with open(figure, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_input_errors_name_the_dataset(spark, tmp_path):
    cfg = conf(tmp_path, tmp_path / "none")
    with pytest.raises(records.RecordError, match="not a sparkcnn dataset"):
        augment_split(spark, cfg, "train", pipeline_of(cfg))
    with pytest.raises(AugmentError, match=r"expects \(N,H,W,C\) uint8"):
        Pipeline.parse([{"op": "rotate"}]).apply(np.zeros((2, 4, 4, 1), np.float32), [0, 1], [1, 1])
