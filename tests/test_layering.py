"""The tree keeps its layers: no import circles, the core imports no stage, executors no driver code."""
import textwrap

from import_rules import violations

ROOT = "."


def test_the_project_keeps_its_layers():
    found = violations(ROOT)
    assert not found, "the tree breaks its layers:\n" + "\n".join(found)


def _tree(tmp_path, files: dict):
    for path, text in files.items():
        f = tmp_path / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text))
    return str(tmp_path)


def test_the_rules_catch_a_circle_hidden_in_a_function(tmp_path):
    root = _tree(tmp_path, {
        "pipelines/__init__.py": "",
        "pipelines/train/__init__.py": "",
        "pipelines/train/stage.py": "from pipelines.train import remote\n",
        "pipelines/train/remote.py": "def f():\n    from pipelines.train.stage import g\n",
    })
    found = violations(root)
    assert "circle: pipelines.train.remote <-> pipelines.train.stage" in found
    assert "pipelines.train.remote -> pipelines.train.stage: executor code imports driver code" in found


def test_the_rules_catch_core_importing_a_stage_and_featurizers_reaching_past_core(tmp_path):
    root = _tree(tmp_path, {
        "pipelines/__init__.py": "",
        "pipelines/core/__init__.py": "",
        "pipelines/core/store.py": "import pipelines.score.stage\n",
        "pipelines/score/__init__.py": "",
        "pipelines/score/stage.py": "from featurizers import registry\n",
        "featurizers/__init__.py": "",
        "featurizers/registry.py": "from pipelines.score.stage import x\n",
        "jobs/__init__.py": "",
        "jobs/score.py": "from pipelines.score.stage import score\n",
    })
    found = violations(root)
    assert "pipelines.core.store -> pipelines.score.stage: the core imports no stage and not featurizers" in found
    assert "pipelines.score.stage -> featurizers.registry: only the transfer and predict stages use featurizers" in found
    assert "featurizers.registry -> pipelines.score.stage: featurizers use pipelines.core only" in found
    assert "jobs.score -> pipelines.score.stage: a job is a thin shell over the CLI" in found
    assert any(v.startswith("circle: featurizers.registry <-> pipelines.score.stage") for v in found)
