"""Stage keys, fast (pipelines/core/stage_cache.py, core/source_graph.py): when a record says a stage is
up to date and when it runs, what an input's or output's identity is (local files, folder listings,
published directories, missing paths; on a real S3-protocol server, published prefixes and files), and
which code edits change a stage's code version.  A real key (score's) on real files, no Spark."""
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import time
import tokenize

import pytest

from pipelines.core import storage
from pipelines.core.stage_cache import RECORD_FORMAT, check, identity, listing_identity, remember
from pipelines.core.store import RunStore, atomic_dir, read_manifest, resolve, write_json_atomic
from pipelines.score.key import SCORE_KEY

from conftest import make_conf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _publish_local(dest, content: str) -> None:
    with atomic_dir(dest) as staging:
        os.makedirs(staging)
        with open(os.path.join(staging, "part-0.txt"), "w") as f:
            f.write(content)


@pytest.fixture
def scored(tmp_path):
    """A conf, its run store and what score's key reads and writes, all on local disk: a published
    test split, a model file, published predictions and metrics.json."""
    cfg = make_conf(tmp_path, f"run: {{name: keys, runs_dir: '{tmp_path}/runs'}}\n"
                              f"data: {{datasets_dir: '{tmp_path}/datasets'}}\n")
    store = RunStore(cfg.run_dir)
    _publish_local(cfg.dataset_dir("test"), "rows")
    os.makedirs(store.root, exist_ok=True)
    with open(store.model_path, "wb") as f:
        f.write(b"a model")
    _publish_local(store.predictions_dir, "predictions")
    write_json_atomic(store.metrics_path, {"accuracy": 0.5})
    return cfg, store


def _ran(cfg, store):
    """Check score's key, and remember it as a successful run would."""
    verdict = check("score", SCORE_KEY, cfg, store)
    remember(verdict, SCORE_KEY, cfg, store, None)
    return verdict


def test_no_record_runs_and_the_same_key_with_intact_outputs_is_up_to_date(scored):
    cfg, store = scored
    first = check("score", SCORE_KEY, cfg, store)
    assert not first.up_to_date and first.reason == "no record of an earlier run"
    remember(first, SCORE_KEY, cfg, store, None)
    record = json.loads(open(first.record).read())
    assert record["format"] == RECORD_FORMAT and record["key"] == first.key
    assert set(record["outputs"]) == {store.predictions_dir, store.metrics_path}
    again = check("score", SCORE_KEY, cfg, store)
    assert again.up_to_date and again.key == first.key and again.reason == ""


def test_a_changed_input_is_named_in_the_reason(scored, tmp_path):
    cfg, store = scored
    _ran(cfg, store)
    other = cfg.replace(score=dataclasses.replace(cfg.score, batch_size=cfg.score.batch_size + 1))
    verdict = check("score", SCORE_KEY, other, store)
    assert not verdict.up_to_date and verdict.reason == "changed: score section"

    time.sleep(0.01)
    with open(store.model_path, "wb") as f:          # retrained: other bytes, another modification time
        f.write(b"another model")
    verdict = check("score", SCORE_KEY, cfg, store)
    assert not verdict.up_to_date and verdict.reason == "changed: model"

    remember(verdict, SCORE_KEY, cfg, store, None)
    _publish_local(cfg.dataset_dir("test"), "rows")  # re-ingested: a new published version
    verdict = check("score", SCORE_KEY, cfg, store)
    assert not verdict.up_to_date and verdict.reason == "changed: dataset test"


def test_an_output_deleted_or_rewritten_makes_the_stage_run(scored):
    cfg, store = scored
    _ran(cfg, store)
    os.remove(store.metrics_path)
    verdict = check("score", SCORE_KEY, cfg, store)
    assert not verdict.up_to_date and verdict.reason == f"output changed or missing: {store.metrics_path}"

    write_json_atomic(store.metrics_path, {"accuracy": 0.5})
    _ran(cfg, store)
    _publish_local(store.predictions_dir, "predictions")       # the same content, published again
    verdict = check("score", SCORE_KEY, cfg, store)
    assert not verdict.up_to_date and verdict.reason == f"output changed or missing: {store.predictions_dir}"


def test_a_record_of_another_format_makes_the_stage_run(scored):
    cfg, store = scored
    verdict = _ran(cfg, store)
    record = json.loads(open(verdict.record).read())
    write_json_atomic(verdict.record, {**record, "format": "sparkcnn-stage-key/0"})
    assert check("score", SCORE_KEY, cfg, store).reason == "no record of an earlier run"
    with open(verdict.record, "w") as f:
        f.write("{not json")
    assert check("score", SCORE_KEY, cfg, store).reason == "no record of an earlier run"


def test_identity_of_a_local_file_a_folder_a_published_dir_and_a_missing_path(tmp_path):
    path = tmp_path / "raw.bin"
    path.write_bytes(b"12345")
    st = os.stat(path)
    assert identity(str(path)) == f"5:{st.st_mtime_ns}"
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert identity(str(path)) == f"5:{st.st_mtime_ns + 1_000_000}"      # touched: another identity

    folder = tmp_path / "images"
    (folder / "cats").mkdir(parents=True)
    (folder / "cats" / "1.png").write_bytes(b"png")
    listed = identity(str(folder))
    assert listed == listing_identity(str(folder)) and len(listed) == 64
    assert identity(str(folder)) == listed                                 # read again: the same
    (folder / "cats" / "2.png").write_bytes(b"png")
    assert identity(str(folder)) != listed                                 # a file added
    added = identity(str(folder))
    (folder / "cats" / "2.png").write_bytes(b"PNG!")
    assert identity(str(folder)) != added                                  # a file rewritten

    dest = str(tmp_path / "datasets" / "d" / "train")
    _publish_local(dest, "v1")
    first = identity(dest)
    assert os.path.islink(dest) and first == os.path.realpath(dest) == resolve(dest)
    _publish_local(dest, "v1")
    assert identity(dest) != first and identity(dest) == os.path.realpath(dest)

    assert identity(str(tmp_path / "nothing")) is None
    assert listing_identity(str(tmp_path / "nothing")) is None
    os.symlink(str(tmp_path / "gone"), str(tmp_path / "dangling"))
    assert identity(str(tmp_path / "dangling")) is None


def test_identity_on_an_object_store(s3_storage):
    dest = s3_storage.url("keys", "datasets", "d", "train")
    for content in (b"v1", b"v2"):
        with atomic_dir(dest) as staging:
            storage.put_bytes(storage.join(staging, "part-0.txt"), content)
        assert identity(dest) == read_manifest(dest)["version"]
    versions = read_manifest(dest)["versions"]
    assert len(versions) == 2 and identity(dest) == versions[0] != versions[1]

    location = s3_storage.url("keys", "raw", "labels.idx")
    storage.put_bytes(location, b"one")
    size, _, tag = json.loads(identity(location))
    assert size == 3 and tag
    storage.put_bytes(location, b"other")
    assert json.loads(identity(location))[0] == 5 and json.loads(identity(location))[2] != tag
    assert identity(s3_storage.url("keys", "raw", "missing.idx")) is None


# -- code versions ----------------------------------------------------------------------------------

VERSIONS = """
import json, sys
import pipelines
from pipelines.core.source_graph import package_code_digest
from pipelines.core.stage_cache import code_version
from pipelines.score.key import SCORE_KEY
from pipelines.train.key import TRAIN_KEY
assert pipelines.__file__.startswith(sys.argv[1]), pipelines.__file__
print(json.dumps({"train": code_version(TRAIN_KEY), "score": code_version(SCORE_KEY),
                  "augment": package_code_digest("pipelines.augment")}))
"""


def _versions(copy) -> dict:
    """Train's and score's code versions (and the augment package's digest) of the library at `copy`,
    in a process of its own: a process digests its library once."""
    out = subprocess.run([sys.executable, "-c", VERSIONS, str(copy)], env=dict(os.environ, PYTHONPATH=str(copy)),
                         cwd=str(copy), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _tokens(path):
    with open(path, encoding="utf-8") as f:
        return list(tokenize.generate_tokens(io.StringIO(f.read()).readline))


def _replace_token(path, token, new: str) -> None:
    """Replace one token's text in place (line and columns from tokenize)."""
    lines = open(path, encoding="utf-8").read().splitlines(keepends=True)
    (row, start), (end_row, end) = token.start, token.end
    assert row == end_row, token
    lines[row - 1] = lines[row - 1][:start] + new + lines[row - 1][end:]
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(lines))


def edit_comment(path) -> None:
    comment = next(t for t in _tokens(path) if t.type == tokenize.COMMENT)
    _replace_token(path, comment, "# reworded for a test")


def edit_docstring(path) -> None:
    text = open(path, encoding="utf-8").read()
    assert text.startswith('"""'), path
    with open(path, "w", encoding="utf-8") as f:
        f.write('"""Reworded for a test. ' + text[3:])


def edit_code(path) -> None:
    """A number in the code becomes one more: what the module does changes."""
    number = next(t for t in _tokens(path) if t.type == tokenize.NUMBER)
    _replace_token(path, number, f"({number.string} + 1)")


def test_code_versions_follow_the_code_each_stage_reaches(tmp_path):
    from pipelines.core import source_graph
    copy = tmp_path / "lib"
    for package in ("pipelines", "featurizers"):
        shutil.copytree(os.path.join(ROOT, package), copy / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    sources = source_graph.read_sources(str(copy), ("pipelines", "featurizers"))
    edges = source_graph.import_edges(sources)

    def reaches(package):
        return source_graph.reachable(edges, [m for m in sources if m == package or m.startswith(package + ".")])
    train_reach, score_reach = reaches("pipelines.train"), reaches("pipelines.score")
    assert "pipelines.augment.stage" not in train_reach and "pipelines.training.step" in train_reach
    assert "pipelines.inference.cnn_model" in score_reach and "pipelines.inference.cnn_model" in train_reach
    before = _versions(copy)

    # (a) another stage's package, a comment and a code line: train's code is the same
    augment = copy / "pipelines" / "augment" / "stage.py"
    edit_comment(augment)
    edit_code(augment)
    after_augment = _versions(copy)
    assert after_augment["augment"] != before["augment"]         # the edit is one the digest sees
    assert after_augment["train"] == before["train"] and after_augment["score"] == before["score"]

    # (b) the training engine's comments and docstring: what it does is the same
    step = copy / "pipelines" / "training" / "step.py"
    edit_comment(step)
    edit_docstring(step)
    assert _versions(copy) == after_augment

    # (c) a code line of the training engine: train's code changed; score's only if it reaches it
    edit_code(step)
    after_step = _versions(copy)
    assert after_step["train"] != before["train"]
    assert (after_step["score"] != before["score"]) == ("pipelines.training.step" in score_reach)

    # (d) a code line of the inference engine score runs: both keys that reach it change
    edit_code(copy / "pipelines" / "inference" / "cnn_model.py")
    after_inference = _versions(copy)
    assert after_inference["score"] != after_step["score"] and after_inference["train"] != after_step["train"]
