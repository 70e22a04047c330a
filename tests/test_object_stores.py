"""The storage layer against real object-store servers on 127.0.0.1: an S3-protocol server (moto's
ThreadedMotoServer) and Azure's Blob emulator (Azurite, through adlfs).  On both: manifest publishing,
versions kept N deep, staging cleaned by age or owner, conditional PUTs that lose races, ingest equal
to the local one.  On S3: raw inputs (IDX, an image folder) in the bucket, augment and export, and
credentials that never reach outputs or messages."""
import hashlib
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

from pipelines.core import storage
from pipelines.core.parquet_io import read_frame
from pipelines.core.publish_store import LEASE
from pipelines.core.store import (
    PublishConflict,
    atomic_dir,
    atomic_dirs,
    published_files,
    read_manifest,
    resolve,
)

from conftest import logged_lines, make_conf

SPARKCNN = os.path.join(os.path.dirname(sys.executable), "sparkcnn")


def _write_part(staging, n, name="part-0.parquet"):
    with storage.open_file(storage.join(staging, name), "wb") as f:
        pq.write_table(pa.table({"x": list(range(n))}), f)


def _rows(dest):
    """What a reader of this project sees: the rows of the files the manifest names."""
    total = 0
    for location in published_files(dest):
        with storage.open_file(location, "rb") as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def _versions(s3, dest):
    return sorted(n for n in storage.listdir(dest) if n.startswith("v-"))


def test_publish_goes_through_one_manifest_and_keeps_versions_n_deep(object_store):
    store = object_store
    dest = store.url("publish", "ds")
    assert not storage.exists(storage.join(dest, "_manifest.json"))
    for n in (3, 5, 7):
        with atomic_dir(dest) as staging:
            assert staging.startswith(dest + "/v-")
            _write_part(staging, n)
        assert _rows(dest) == n
    manifest = read_manifest(dest)
    assert manifest["rows"] == 7 and [e["rows"] for e in manifest["files"]] == [7]
    assert _versions(store, dest) == sorted(manifest["versions"]) and len(manifest["versions"]) == 2
    assert resolve(dest) == manifest["url"] == storage.join(dest, manifest["version"])
    # a plain pyarrow reader, given the versioned URL the job prints, reads the same complete table
    assert pq.read_table(manifest["url"].split("://", 1)[1], filesystem=store.fs()).num_rows == 7
    assert not storage.exists(storage.join(manifest["url"], LEASE))
    with storage.using(store.context(keep_versions=1, stale_after_hours=24)), atomic_dir(dest) as staging:
        _write_part(staging, 2)
    assert _versions(store, dest) == [read_manifest(dest)["version"]] and _rows(dest) == 2


def test_failed_job_publishes_nothing_and_leaves_no_staging(object_store):
    store = object_store
    dest = store.url("failed", "ds")
    with atomic_dir(dest) as staging:
        _write_part(staging, 3)
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_dir(dest) as staging:
            _write_part(staging, 9)
            raise RuntimeError("job failed mid-write")
    assert _rows(dest) == 3 and _versions(store, dest) == [read_manifest(dest)["version"]]
    with pytest.raises(RuntimeError, match="nothing was written"):
        with atomic_dir(dest):
            pass
    assert _rows(dest) == 3 and len(_versions(store, dest)) == 1


def test_outputs_of_one_job_are_published_together_or_not_at_all(object_store):
    store = object_store
    train, test = store.url("together", "train"), store.url("together", "test")
    with atomic_dirs([train, test]) as staging:
        _write_part(staging[train], 3)
        _write_part(staging[test], 2)
    with pytest.raises(RuntimeError):
        with atomic_dirs([train, test]) as staging:
            _write_part(staging[train], 30)
            raise RuntimeError("a check failed after the tasks wrote")
    with atomic_dirs([train, test]) as staging:
        _write_part(staging[train], 5)
        storage.remove(staging[test])                     # a split with no rows is not written
    assert (_rows(train), _rows(test)) == (5, 2)
    assert len(_versions(store, test)) == 1


def test_stale_staging_is_removed_by_owner_or_age_never_by_a_foreign_pid(object_store):
    """A staging prefix of a job on another host is kept while its lease is fresh, removed once stale;
    one of a dead process on this host is removed at once."""
    store = object_store
    dest = store.url("stale", "ds")
    with atomic_dir(dest) as staging:
        _write_part(staging, 1)
    foreign = storage.join(dest, "v-20260101T000000-4242-abcd0123-otherhost")
    storage.put_bytes(storage.join(foreign, LEASE), b"{}")
    _write_part(foreign, 4)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from pipelines.core.leases import host as _host
    local_dead = storage.join(dest, f"v-20260101T000000-{int(dead.stdout)}-abcd0124-{_host()}")
    storage.put_bytes(storage.join(local_dead, LEASE), b"{}")
    _write_part(local_dead, 4)
    with atomic_dir(dest) as staging:
        _write_part(staging, 2)
    names = _versions(store, dest)
    assert storage.basename(foreign) in names and storage.basename(local_dead) not in names
    with storage.using(store.context(keep_versions=2, stale_after_hours=0)):   # now every foreign lease is stale
        with atomic_dir(dest) as staging:
            _write_part(staging, 3)
    assert storage.basename(foreign) not in _versions(store, dest) and _rows(dest) == 3


def test_conditional_puts_lose_races_on_the_real_server(object_store):
    store = object_store
    location = store.url("cond", "pointer.json")
    storage.put_bytes(location, b"1", if_absent=True)
    with pytest.raises(storage.PreconditionFailed):
        storage.put_bytes(location, b"2", if_absent=True)
    first = storage.etag(location)
    storage.put_bytes(location, b"3", if_match=first)
    with pytest.raises(storage.PreconditionFailed):
        storage.put_bytes(location, b"4", if_match=first)         # someone else wrote in between
    assert storage.read_bytes(location) == b"3"


def test_two_jobs_writing_one_output_the_second_to_finish_fails(object_store):
    store = object_store
    dest = store.url("race", "ds")
    with atomic_dir(dest) as staging:
        _write_part(staging, 1)
    slow = atomic_dir(dest)
    slow_staging = slow.__enter__()
    _write_part(slow_staging, 100)
    with atomic_dir(dest) as fast_staging:      # begins later, finishes first
        _write_part(fast_staging, 2)
    with pytest.raises(PublishConflict, match="another job published this output"):
        slow.__exit__(None, None, None)
    assert _rows(dest) == 2


def _dataset_digest(location_files):
    """(rows, sorted ids, labels by id, sha256 of the images in id order) of a dataset's part files."""
    tables = []
    for location in location_files:
        with storage.open_file(location, "rb") as f:
            tables.append(pq.read_table(f, columns=["id", "label", "image"]))
    table = pa.concat_tables(tables)
    order = np.argsort(table.column("id").to_numpy())
    ids = table.column("id").to_numpy()[order]
    labels = table.column("label").to_numpy()[order]
    images = table.column("image").to_pylist()
    digest = hashlib.sha256(b"".join(images[i] for i in order)).hexdigest()
    return len(ids), ids.tolist(), labels.tolist(), digest


@pytest.mark.slow   # over 5 s: make test, not the everyday tier
def test_ingest_to_an_object_store_gives_the_same_datasets_as_local(spark, object_store, mnist_files, tmp_path):
    store = object_store
    common = "ingest: {limit_train: 3000, limit_test: 1000, validation_rows: 500, partition_mb: 1}\n"
    from pipelines.ingest.stage import ingest
    local = make_conf(tmp_path, f"data: {{datasets_dir: {tmp_path}/datasets}}\n" + common)
    local_metas = ingest(spark, local)
    remote = make_conf(tmp_path, f"data: {{datasets_dir: '{store.url('ingest', 'datasets')}'}}\n"
                       + common + store.conf_yaml())
    with logged_lines() as logged:
        remote_metas = ingest(spark, remote)
    for split in ("train", "val", "test"):
        assert remote_metas[split].num_rows == local_metas[split].num_rows
        assert remote_metas[split].class_counts == local_metas[split].class_counts
        local_files = [os.path.join(resolve(local.dataset_dir(split)), n)
                       for n in sorted(os.listdir(resolve(local.dataset_dir(split)))) if n.endswith(".parquet")]
        assert _dataset_digest(published_files(remote.dataset_dir(split))) == _dataset_digest(local_files)
    # the job names the versioned URL, and Spark reads the published dataset through the storage layer
    assert any(f"(version {resolve(remote.dataset_dir('train'))})" in line for line in logged)
    frame = read_frame(spark, remote.dataset_dir("test"), ["id", "label"])
    assert frame.count() == 1000 and frame.select("id").distinct().count() == 1000


def _png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_image_folder_whose_raw_files_are_on_s3(spark, s3_storage, foolbox_images, tmp_path):
    """Same folder, local and on S3: same rows, ids and pixels; the bad file is a row of the rejects table."""
    s3 = s3_storage
    raw = s3.url("folder", "raw")
    local_root = tmp_path / "raw"
    files = {}
    for k, (name, label, array) in enumerate(foolbox_images["mnist"]):
        files[f"{label}/{k:02d}_{name}.png"] = _png(array)
    files["3/broken.png"] = b"not a png at all"
    for rel, data in files.items():
        storage.put_bytes(storage.join(raw, rel), data)
        (local_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (local_root / rel).write_bytes(data)
    common = "data: {format: folder, dataset: digits, %s}\ningest: {test_fraction: 0.3}\n"
    from pipelines.ingest.stage import ingest
    local = make_conf(tmp_path, common % f"path: {local_root}, datasets_dir: {tmp_path}/datasets")
    local_metas = ingest(spark, local)
    remote = make_conf(tmp_path, common % f"path: '{raw}', datasets_dir: '{s3.url('folder', 'datasets')}'"
                       + s3.conf_yaml())
    remote_metas = ingest(spark, remote)
    assert sorted(remote_metas) == sorted(local_metas)
    for split in remote_metas:
        local_dir = resolve(local.dataset_dir(split))
        local_files = [os.path.join(local_dir, n) for n in sorted(os.listdir(local_dir)) if n.endswith(".parquet")]
        assert _dataset_digest(published_files(remote.dataset_dir(split))) == _dataset_digest(local_files)
    assert sum(m.num_rows for m in remote_metas.values()) == len(files) - 1
    rejects = [pq.read_table(storage.open_file(f)) for f in published_files(s3.url("folder", "datasets", "digits",
                                                                                      "rejects"))]
    rows = pa.concat_tables(rejects).to_pylist()
    assert [r["path"] for r in rows] == [storage.join(raw, "3/broken.png")]
    assert "decode" in rows[0]["reason"] or "image" in rows[0]["reason"]


@pytest.mark.slow   # two sparkcnn processes
def test_credentials_never_reach_outputs_logs_or_error_lines(s3_server, mnist_files, tmp_path):
    """A user's job, as run from the shell: every object it wrote and everything it printed is
    searched for the secret key; a store that cannot be reached gives one line, no traceback."""
    s3 = s3_server
    conf = tmp_path / "s3.yaml"
    conf.write_text(f"""
run: {{name: secret_check, runs_dir: '{s3.url("secrets", "runs")}'}}
spark: {{master: "local[2]", driver_memory: 1g}}
data: {{datasets_dir: '{s3.url("secrets", "datasets")}'}}
ingest: {{limit_train: 600, limit_test: 200, validation_rows: 100}}
""" + s3.conf_yaml())
    proc = subprocess.run([SPARKCNN, "ingest", "--conf", str(conf)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = s3.all_bytes("secrets")
    assert any(k.endswith("config.yaml") for k in written) and any(k.endswith("_manifest.json") for k in written)
    for key, data in written.items():
        assert s3.secret.encode() not in data, key
    assert s3.secret not in proc.stdout + proc.stderr
    assert "<redacted>" in written[f"{s3.bucket}/secrets/runs/secret_check/config.yaml"].decode()
    bad = subprocess.run([SPARKCNN, "ingest", "--conf", str(conf), "--set",
                          "data.datasets_dir=s3://no-such-bucket-here/datasets"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2, bad.stderr[-3000:]
    errors = [line for line in bad.stderr.splitlines() if line.startswith("sparkcnn ingest: error:")]
    assert len(errors) == 1 and "no-such-bucket-here" in errors[0], bad.stderr[-3000:]
    assert "Traceback" not in bad.stderr and s3.secret not in bad.stdout + bad.stderr


def test_redaction_of_options_urls_and_messages(s3_storage):
    s3 = s3_storage
    opts = storage.StorageOptions({"s3": {"endpoint_url": "http://h:1", "key": "K", "secret": s3.secret},
                                   "token": "tok-123456"})
    assert opts.redacted() == {"s3": {"endpoint_url": "http://h:1", "key": "<redacted>", "secret": "<redacted>"},
                               "token": "<redacted>"}
    assert s3.secret not in repr(opts)
    assert storage.redact(f"failed: {s3.secret} at s3://user:pw@bucket/x") == \
        "failed: <redacted> at s3://<redacted>@bucket/x"
    assert opts.for_scheme("s3") == {"key": "K", "secret": s3.secret, "token": "tok-123456",
                                     "client_kwargs": {"endpoint_url": "http://h:1"}}
    assert json.dumps(opts.redacted()).count("<redacted>") == 3


def _local_digest(dataset_dir):
    root = resolve(dataset_dir)
    return _dataset_digest([os.path.join(root, n) for n in sorted(os.listdir(root)) if n.endswith(".parquet")])


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_raw_idx_files_on_s3(spark, s3_storage, mnist_files, tmp_path, suffix):
    """IDX files in a bucket: uncompressed ones are read by byte range in the tasks, gzipped ones are
    unpacked on the driver (a local master); either way the dataset equals the local ingest's."""
    from pipelines.ingest import idx
    from pipelines.ingest.stage import ingest
    s3 = s3_storage
    raw, raw_url = tmp_path / "raw", s3.url("idx" + suffix, "raw")
    raw.mkdir()
    for role, name, rows in (("train_images", "train-images-idx3-ubyte", 1500),
                             ("train_labels", "train-labels-idx1-ubyte", 1500),
                             ("test_images", "t10k-images-idx3-ubyte", 400),
                             ("test_labels", "t10k-labels-idx1-ubyte", 400)):
        header = idx.read_header(idx.ensure_uncompressed(mnist_files[role], str(tmp_path / "scratch")))
        idx.write_idx(str(raw / (name + suffix)), idx.read_rows(header, 0, rows))
        storage.put_bytes(storage.join(raw_url, name + suffix), (raw / (name + suffix)).read_bytes())
    common = "data: {format: idx, dataset: digits, %s}\ningest: {validation_rows: 300, partition_mb: 1}\n"
    local = make_conf(tmp_path, common % f"path: {raw}, datasets_dir: {tmp_path}/datasets")
    ingest(spark, local)
    remote = make_conf(tmp_path, common % f"path: '{raw_url}', datasets_dir: '{s3.url('idx' + suffix, 'ds')}'"
                       + s3.conf_yaml())
    metas = ingest(spark, remote)
    assert {s: m.num_rows for s, m in metas.items()} == {"train": 1200, "val": 300, "test": 400}
    for split in metas:
        assert _dataset_digest(published_files(remote.dataset_dir(split))) == _local_digest(local.dataset_dir(split))


@pytest.mark.slow   # four Spark jobs
def test_augment_and_export_on_s3_round_trip(spark, s3_storage, mnist_files, tmp_path):
    """Augment an S3 dataset into S3 (the same rows and bytes as locally), export it to PNGs in the
    bucket, and ingest that image folder back from S3: the pixels come back unchanged."""
    from pipelines.augment.stage import augment
    from pipelines.core.store import RunStore
    from pipelines.export.stage import export_stage
    from pipelines.ingest.stage import ingest
    s3 = s3_storage
    common = """
ingest: {limit_train: 400, limit_test: 100, validation_rows: 0}
augment: {seed: 7, n_per_image: 2, splits: [train], report_images: 3,
          pipeline: [{op: rotate, p: 0.9, degrees: [-20, 20]}, {op: shift, p: 0.5, x: [-0.2, 0.2], y: [-0.2, 0.2]}]}
export: {splits: [test]}
"""
    local = make_conf(tmp_path, f"run: {{name: aug, runs_dir: {tmp_path}/runs}}\n"
                      f"data: {{datasets_dir: {tmp_path}/datasets}}\n" + common)
    ingest(spark, local)
    augment(spark, local, RunStore(local.run_dir))
    remote = make_conf(tmp_path, f"run: {{name: aug, runs_dir: '{s3.url('aug', 'runs')}'}}\n"
                       f"data: {{datasets_dir: '{s3.url('aug', 'datasets')}'}}\n" + common + s3.conf_yaml())
    ingest(spark, remote)
    store = RunStore(remote.run_dir)
    metas = augment(spark, remote, store)
    assert metas["train"].num_rows == 400 * 3
    assert _dataset_digest(published_files(remote.dataset_dir("train_aug"))) == \
        _local_digest(local.dataset_dir("train_aug"))
    assert storage.exists(storage.join(store.augment_figures_dir, "train_before_after.png"))

    counts = export_stage(spark, remote, store)
    assert counts == {"test": 100}
    exported = storage.join(store.root, "export", "test")
    pngs = [f for f in storage.walk_files(resolve(exported)) if f.endswith(".png")]
    assert len(pngs) == 100
    back = make_conf(tmp_path, f"data: {{format: folder, dataset: back, path: '{resolve(exported)}', "
                     f"datasets_dir: '{s3.url('aug', 'datasets')}'}}\ningest: {{test_fraction: 0}}\n" + s3.conf_yaml())
    returned = ingest(spark, back)
    assert returned["train"].num_rows == 100
    original = read_frame(spark, remote.dataset_dir("test"), ["label", "image"]).toPandas()
    again = read_frame(spark, back.dataset_dir("train"), ["label", "image"]).toPandas()
    assert sorted(zip(original["label"], original["image"])) == sorted(zip(again["label"], again["image"]))


@pytest.mark.slow   # over 3 s: make test, not the everyday tier
def test_mlflow_file_store_needs_an_explicit_uri_when_runs_are_remote(s3_storage, tmp_path):
    from pipelines.core.config import ConfigError
    with pytest.raises(ConfigError, match=r"data.cache_dir 's3://.*' must be a local folder"):
        make_conf(tmp_path, f"data: {{cache_dir: '{s3_storage.url('cache')}'}}\n")
    with pytest.raises(ConfigError, match=r"tracking.uri must be set when run.runs_dir is on a remote store"):
        make_conf(tmp_path, f"run: {{runs_dir: '{s3_storage.url('runs')}'}}\ntracking: {{mlflow: true}}\n")
    cfg = make_conf(tmp_path, f"run: {{runs_dir: '{s3_storage.url('runs')}'}}\n"
                    f"tracking: {{mlflow: true, uri: {tmp_path}/mlruns}}\n")
    assert cfg.tracking.uri == f"file://{tmp_path}/mlruns" and cfg.run_dir == s3_storage.url("runs", "conf")
