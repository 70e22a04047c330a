"""The committed bad-input corpus (tests/data/): every file accounted for, read = written + rejected,
each reject with its reason; whole-file IDX errors are one clear line from the CLI."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.core import records
from pipelines.core.records import stable_id
from pipelines.ingest import idx
from pipelines.ingest.stage import ingest

from conftest import make_conf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "data"))
from make_bad_corpus import EXPECTED  # noqa: E402


def test_every_file_of_the_bad_corpus_is_accounted_for(spark, tmp_path, capsys):
    corpus = str(tmp_path / "corpus")
    shutil.copytree(os.path.join(HERE, "data", "bad_corpus"), corpus)
    on_disk = sorted(os.path.relpath(os.path.join(d, n), corpus) for d, _, ns in os.walk(corpus) for n in ns)
    assert on_disk == sorted(EXPECTED)
    conf = make_conf(tmp_path, f"""
data: {{dataset: bad, format: folder, path: '{corpus}', datasets_dir: '{tmp_path}/ds'}}
ingest: {{image_size: [28, 28], channels: 1, resize: stretch, max_pixels: 10000000, test_fraction: 0.0}}""")
    metas = ingest(spark, conf)
    meta = metas["train"]
    rejects = {os.path.relpath(r["path"][len("file:"):], os.path.realpath(corpus)): r["reason"]
               for r in pq.read_table(os.path.join(tmp_path, "ds", "bad", "rejects")).to_pylist()}
    table = pq.read_table(os.path.realpath(conf.dataset_dir("train")))
    written = dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist()))
    tally = {"read": len(on_disk), "written": meta.num_rows, "rejected": len(rejects)}
    with capsys.disabled():
        print(f"\nbad corpus tally: {tally}")
        for rel, reason in sorted(rejects.items()):
            print(f"  rejected {rel}: {reason}")
    assert tally["read"] == tally["written"] + tally["rejected"]
    for rel, fate in EXPECTED.items():
        if fate.startswith("reject: "):
            assert rel in rejects, f"{rel} should be rejected"
            assert rejects[rel].startswith(fate[len("reject: "):]) and rejects[rel], (rel, rejects[rel])
        else:
            assert rel not in rejects, (rel, rejects.get(rel))
            assert meta.class_names[written[stable_id(rel)]] == fate
    images = records.decode_images(table.column("image"), (28, 28, 1))
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)


@pytest.mark.slow   # one CLI process per corrupt file
def test_idx_whole_file_errors_are_one_line(tmp_path):
    sparkcnn = os.path.join(os.path.dirname(sys.executable), "sparkcnn")
    for bad, message in (("wrong-magic-idx3-ubyte", "wrong magic number 0x12340803"),
                         ("wrong-count-idx3-ubyte", "header says 5 items of shape (28, 28)")):
        folder = tmp_path / bad
        folder.mkdir()
        shutil.copy(os.path.join(HERE, "data", "bad_idx", bad), folder / "train-images-idx3-ubyte")
        idx.write_idx(str(folder / "train-labels-idx1-ubyte"), np.zeros(3, np.uint8))
        proc = subprocess.run([sparkcnn, "ingest", "--conf", os.path.join(os.path.dirname(HERE), "conf", "mnist.yaml"),
                               "--set", "data.format=idx", "--set", f"data.path={folder}",
                               "--set", f"data.datasets_dir={tmp_path}/ds", "--set", f"data.cache_dir={tmp_path}/c"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 3          # bad input data (README: exit codes)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("sparkcnn ingest: error:")]
        assert len(lines) == 1 and message in lines[0] and "train-images-idx3-ubyte" in lines[0], proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
