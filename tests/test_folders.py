"""Image folders through Spark's binaryFile: real images, a corpus of bad files, rejects accounted for;
export -> ingest round trip; Spark image-struct interop; visualize."""
import io
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.core import records
from pipelines.export.stage import export_dataset
from pipelines.images.class_folders import safe_folder_name
from pipelines.images.spark_images import from_spark_images, to_spark_images
from pipelines.ingest.stage import ingest

from conftest import logged_lines, make_conf

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _png(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def image_folder(tmp_path, foolbox_images):
    """The 20 real CIFAR-10 images in class folders (one with a space and unicode), plus bad files."""
    root = tmp_path / "imgs"
    names = {k: n for k, n in enumerate(CLASSES)}
    names[3] = "chat noir ü"               # unicode and a space in a class folder name
    good = {}
    for fname, label, img in foolbox_images["cifar10"]:
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / fname).write_bytes(_png(img))
        good[f"{names[label]}/{fname}"] = (label, img)
    bird = root / names[2]
    bird.mkdir(exist_ok=True)
    rgb = foolbox_images["cifar10"][0][2]
    (bird / "empty.png").write_bytes(b"")
    (bird / "truncated.png").write_bytes(_png(rgb)[:300])
    (bird / "notes.txt").write_text("not an image")
    (bird / "jpeg_named.png").write_bytes(b"\xff\xd8\xff\xe0garbage")
    Image.new("L", (4000, 4000)).save(bird / "bomb.png")                 # 16M pixels > max_pixels
    (root / "stray.png").write_bytes(_png(rgb))                          # not in a class folder
    (bird / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")                    # hidden: Spark's listing skips it
    (bird / "_thumb.png").write_bytes(_png(rgb))
    # Unusual but valid modes: accepted and converted.
    deer = root / names[4]
    deer.mkdir(exist_ok=True)
    sixteen = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64)
    Image.fromarray(sixteen).save(deer / "sixteen_bit.png")                 # mode I;16
    Image.fromarray(rgb).convert("P").save(deer / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(deer / "cmyk.jpg", quality=95)
    Image.fromarray(rgb).save(deer / "frame.gif")
    Image.fromarray(rgb).save(deer / "bitmap.bmp")
    Image.fromarray(rgb[:20, :24]).save(deer / "small.png")             # another size: stretched
    return root, good, sixteen


def test_folder_ingest_accounts_for_every_file(spark, tmp_path, image_folder):
    root, good, sixteen = image_folder
    conf = make_conf(tmp_path, f"""
data: {{dataset: folder, format: folder, path: '{root}', datasets_dir: '{tmp_path}/ds'}}
ingest: {{image_size: [32, 32], channels: 3, resize: stretch, max_pixels: 1000000, test_fraction: 0.0}}""")
    with logged_lines() as logs:
        metas = ingest(spark, conf)
    n_files = sum(len(files) for _, _, files in os.walk(root))
    rejects = pq.read_table(os.path.join(tmp_path, "ds", "folder", "rejects")).to_pylist()
    assert metas["train"].num_rows + len(rejects) == n_files                      # read = written + rejected
    assert metas["train"].num_rows == 20 + 6 and metas["train"].rejected == len(rejects) == 8
    reasons = {os.path.basename(r["path"]): r["reason"] for r in rejects}
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert reasons["truncated.png"].startswith("corrupt or truncated PNG")
    assert reasons["notes.txt"] == "not an image file PIL can identify"
    assert reasons["jpeg_named.png"].startswith("unreadable image header")   # JPEG magic, garbage after
    assert "exceeds ingest.max_pixels=1000000" in reasons["bomb.png"]
    assert reasons["stray.png"] == "not inside a class folder"
    assert reasons[".DS_Store"].startswith("skipped by Spark's file listing") and "_thumb.png" in reasons
    assert any("read 34 = written 26 + rejected 8" in line for line in logs)

    meta = records.read_meta(conf.dataset_dir("train"))
    assert meta.class_names == sorted(["chat noir ü" if n == "cat" else n for n in CLASSES])
    table = pq.read_table(os.path.realpath(conf.dataset_dir("train")))
    assert len(set(table.column("id").to_pylist())) == 26
    images = records.decode_images(table.column("image"), (32, 32, 3))
    by_id = dict(zip(table.column("id").to_pylist(), range(26)))
    from pipelines.core.records import stable_id
    for rel, (label, img) in good.items():
        row = by_id[stable_id(rel)]
        np.testing.assert_array_equal(images[row], img)                          # pixel-exact
        assert meta.class_names[table.column("label")[row].as_py()] == rel.split("/")[0]
    sixteen_row = images[by_id[stable_id("deer/sixteen_bit.png")]]
    np.testing.assert_array_equal(sixteen_row[..., 0], (sixteen >> 8).astype(np.uint8))   # 16-bit -> 8-bit


def test_other_sizes_rejected_unless_resizing(spark, tmp_path, image_folder):
    root, *_ = image_folder
    conf = make_conf(tmp_path, f"""
data: {{dataset: strict, format: folder, path: '{root}', datasets_dir: '{tmp_path}/ds'}}
ingest: {{image_size: [32, 32], channels: 1, max_pixels: 1000000, test_fraction: 0.0}}""")
    metas = ingest(spark, conf)
    rejects = {os.path.basename(r["path"]): r["reason"]
               for r in pq.read_table(os.path.join(tmp_path, "ds", "strict", "rejects")).to_pylist()}
    assert rejects["small.png"] == "size 20x24 differs from the dataset's 32x32 (set ingest.resize to stretch, pad or crop)"
    assert metas["train"].channels == 1 and metas["train"].num_rows == 25


def test_hash_split_is_stable_and_split_folders_are_honoured(spark, tmp_path, foolbox_images):
    root = tmp_path / "split"
    for i, (fname, label, img) in enumerate(foolbox_images["cifar10"]):
        split = "test" if i % 4 == 0 else "train"
        folder = root / split / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / fname).write_bytes(_png(img))
    conf = make_conf(tmp_path, f"data: {{dataset: s, format: folder, path: '{root}', datasets_dir: '{tmp_path}/ds'}}")
    metas = ingest(spark, conf)
    assert metas["train"].num_rows == 15 and metas["test"].num_rows == 5
    assert metas["train"].class_names == metas["test"].class_names


def test_export_then_ingest_gives_identical_pixels_and_labels(spark, tmp_path, mnist_files):
    """Real MNIST rows -> PNG folders (Fashion-style names with '/' too) -> folder ingest -> same data."""
    from pipelines.ingest.arrays import plan_splits, write_split
    from pipelines.ingest.sources import open_idx_pair
    src = open_idx_pair(mnist_files["test_images"], mnist_files["test_labels"], str(tmp_path / "s"))
    names = ["zero/0", "one", "..", "three", "four", "five", ".six", "seven", "eight", "nine"]
    part = plan_splits(src, None, limit_train=300)[0]
    original = str(tmp_path / "ds" / "orig" / "train")
    write_split(spark, part, original, "orig", names, 64, 1)
    out = str(tmp_path / "exported")
    assert export_dataset(spark, original, out) == 300
    folders = sorted(d for d in os.listdir(out) if os.path.isdir(os.path.join(out, d)))
    assert "zero_0" in folders and ".." not in folders and all(not d.startswith(".") for d in folders)
    manifest = json.loads(open(os.path.join(out, "_classes.json"), encoding="utf-8").read())
    assert [e["name"] for e in manifest] == names
    conf = make_conf(tmp_path, f"data: {{dataset: back, format: folder, path: '{out}', datasets_dir: '{tmp_path}/ds'}}\n"
                               "ingest: {test_fraction: 0.0}")
    metas = ingest(spark, conf)
    assert metas["train"].num_rows == 300 and metas["train"].class_names == names and metas["train"].rejected == 0
    before = pq.read_table(os.path.realpath(original)).to_pandas().set_index("id")
    after = pq.read_table(os.path.realpath(conf.dataset_dir("train"))).to_pandas()
    from pipelines.core.records import stable_id
    key = {stable_id(f"{manifest[int(r.label)]['folder']}/{i}.png"): i for i, r in before.iterrows()}
    after["orig_id"] = after["id"].map(key)
    assert after["orig_id"].notna().all()
    merged = after.set_index("orig_id").loc[before.index]
    assert (merged["label"].to_numpy() == before["label"].to_numpy()).all()
    assert (merged["image"].to_numpy() == before["image"].to_numpy()).all()     # identical bytes


def test_safe_folder_names_stay_inside():
    for name in ["../../etc", "/abs", "a\\b", "", ".", "..", "_x", "con\x00trol", "ok name ü"]:
        cleaned = safe_folder_name(name, 7)
        assert "/" not in cleaned and "\\" not in cleaned and cleaned not in ("", ".", "..")
        assert not cleaned.startswith((".", "_"))
        assert os.path.commonpath(["/out", os.path.normpath(os.path.join("/out", cleaned))]) == "/out"
    assert safe_folder_name("ok name ü", 1) == "ok name ü"


@pytest.mark.slow   # over 3 s: make test, not the everyday tier
def test_spark_image_source_interop(spark, tmp_path, foolbox_images):
    root = tmp_path / "img"
    for fname, label, img in foolbox_images["cifar10"][:8]:
        (root / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        (root / CLASSES[label] / fname).write_bytes(_png(img))
    frame = spark.read.format("image").option("recursiveFileLookup", "true").load(str(root))
    rows, class_names = from_spark_images(frame)
    got = rows.toPandas()
    assert len(got) == 8 and set(class_names) <= set(CLASSES)
    expected = {fname: (label, img) for fname, label, img in foolbox_images["cifar10"][:8]}
    origins = frame.select("image.origin").toPandas()["origin"]
    from pipelines.core.records import stable_id
    by_id = {stable_id(o): o.rsplit("/", 1)[1] for o in origins}
    for _, r in got.iterrows():
        label, img = expected[by_id[r["id"]]]
        np.testing.assert_array_equal(np.frombuffer(r["image"], np.uint8).reshape(32, 32, 3), img)   # BGR -> RGB
        assert class_names[r["label"]] == CLASSES[label]
    # and back: a sparkcnn dataset as Spark image structs (BGR, OpenCV mode 16)
    from pipelines.datasets.publish import publish_dataset
    dest = str(tmp_path / "ds" / "x" / "train")
    meta = records.DatasetMeta("x", "train", 0, 32, 32, 3, class_names)
    publish_dataset(spark, rows, dest, meta, 1, 8)
    structs = to_spark_images(spark, dest).toPandas()
    first = structs.iloc[0]
    assert first["image"]["mode"] == 16 and first["image"]["nChannels"] == 3
    rgb = records.decode_images(pq.read_table(os.path.realpath(dest)).sort_by("id").column("image"), (32, 32, 3))
    ids = sorted(structs["id"])
    row = structs.set_index("id").loc[ids[0]]
    np.testing.assert_array_equal(np.frombuffer(row["image"]["data"], np.uint8).reshape(32, 32, 3), rgb[0][..., ::-1])


@pytest.mark.slow   # over 3 s: make test, not the everyday tier
def test_visualize_writes_samples_and_class_counts(spark, tmp_path, mnist_files):
    from pipelines.core.store import RunStore
    from pipelines.ingest.arrays import plan_splits, write_split
    from pipelines.ingest.sources import open_idx_pair
    from pipelines.visualize.stage import visualize
    src = open_idx_pair(mnist_files["train_images"], mnist_files["train_labels"], str(tmp_path / "s"))
    conf = make_conf(tmp_path, f"data: {{datasets_dir: '{tmp_path}/ds'}}\nrun: {{runs_dir: '{tmp_path}/runs'}}\n"
                               "visualize: {samples_per_class: 4}")
    write_split(spark, plan_splits(src, None, limit_train=400)[0], conf.dataset_dir("train"), "mnist",
                [str(d) for d in range(10)], 64, 1)
    files = visualize(spark, conf, RunStore(conf.run_dir))
    for path in files.values():
        assert Image.open(path).size[0] > 200
