"""The tree keeps its layers (declared in pipelines/core/layers.py, rules in tests/import_rules.py): no import
circles, core imports nothing above it, engines no stage, stages no other stage, executor code no driver
code, and every function handed to Spark is declared executor code.  Each rule is shown failing on a
small tree of its own."""
import textwrap

from import_rules import violations

ROOT = "."

LAYERS = '''
ENGINES = ("pipelines.training",)
SERVICES = ()
EXECUTOR_MODULES = ("pipelines.training.remote", "pipelines.score.remote")
'''


def test_the_project_keeps_its_layers():
    found = violations(ROOT)
    assert not found, "the tree breaks its layers:\n" + "\n".join(found)


def _tree(tmp_path, files: dict):
    files = {"pipelines/__init__.py": "", "pipelines/core/layers.py": LAYERS, **files}
    for path, text in files.items():
        f = tmp_path / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text))
    return str(tmp_path)


def test_the_rules_catch_a_circle_hidden_in_a_function(tmp_path):
    root = _tree(tmp_path, {
        "pipelines/train/__init__.py": "",
        "pipelines/train/stage.py": "from pipelines.train import helper\n",
        "pipelines/train/helper.py": "def f():\n    from pipelines.train.stage import g\n",
    })
    assert "circle: pipelines.train.helper <-> pipelines.train.stage" in violations(root)


def test_the_rules_catch_a_stage_importing_another_and_an_engine_importing_a_stage(tmp_path):
    root = _tree(tmp_path, {
        "pipelines/score/__init__.py": "",
        "pipelines/score/stage.py": "def run():\n    from pipelines.predict.helpers import fit\n",
        "pipelines/predict/__init__.py": "",
        "pipelines/predict/stage.py": "",
        "pipelines/predict/helpers.py": "",
        "pipelines/training/__init__.py": "",
        "pipelines/training/driver.py": "from pipelines.score.stage import run\n",
    })
    found = violations(root)
    assert "pipelines.score.stage -> pipelines.predict.helpers: a stage imports no other stage (move what both " \
           "need into an engine)" in found
    assert "pipelines.training.driver -> pipelines.score.stage: an engine imports no stage" in found


def test_the_rules_catch_core_importing_upwards_and_featurizers_reaching_past_core(tmp_path):
    root = _tree(tmp_path, {
        "pipelines/core/__init__.py": "",
        "pipelines/core/store.py": "import pipelines.score.stage\n",
        "pipelines/score/__init__.py": "",
        "pipelines/score/stage.py": "",
        "pipelines/training/__init__.py": "",
        "pipelines/training/driver.py": "from featurizers import transformers\n",
        "featurizers/__init__.py": "",
        "featurizers/transformers.py": "",
        "featurizers/registry.py": "from pipelines.score.stage import x\n",
        "jobs/__init__.py": "",
        "jobs/score.py": "from pipelines.score.stage import score\n",
    })
    found = violations(root)
    assert "pipelines.core.store -> pipelines.score.stage: the core imports no engine, stage or featurizer" in found
    assert "pipelines.training.driver -> featurizers.transformers: below the stages the library does not use the " \
           "featurizers (Spark ML stages built on the engines)" in found
    assert "featurizers.registry -> pipelines.score.stage: featurizers use core and the engines, never a stage" in found
    assert "jobs.score -> pipelines.score.stage: a job is a thin shell over the CLI" in found


def test_the_rules_catch_executor_code_importing_driver_or_undeclared_code(tmp_path):
    root = _tree(tmp_path, {
        "pipelines/training/__init__.py": "",
        "pipelines/training/remote.py": "from pipelines.training import helper, driver\n",
        "pipelines/training/helper.py": "",
        "pipelines/training/driver.py": "from pipelines.training.remote import work\n"
                                        "def go(sc):\n    return sc.parallelize([1]).map(work).collect()\n",
    })
    found = violations(root)
    assert "pipelines.training.remote -> pipelines.training.driver: executor code imports driver code" in found
    assert "pipelines.training.remote -> pipelines.training.helper: executor code imports code not declared to " \
           "run in executors (pipelines/core/layers.py)" in found


def test_the_rules_find_what_is_handed_to_spark(tmp_path):
    """Names, partials, closures with logic, instances and functions passed through a runner are followed to
    the module whose code runs in the task; thin closures that only bind arguments are not executor code."""
    root = _tree(tmp_path, {
        "pipelines/score/__init__.py": "",
        "pipelines/score/remote.py": "def score_batches(model, batches):\n    yield from batches\n",
        "pipelines/score/stage.py": textwrap.dedent("""\
            import functools
            from pipelines.score import remote
            from pipelines.score.remote import score_batches

            class Writer:
                def __call__(self, batches):
                    yield from batches

            def run_tasks(frame, task_fn):
                return frame.mapInArrow(task_fn, "x int")

            def score(frame, model):
                def body(batches):
                    return remote.score_batches(model, batches)      # thin: binds an argument
                def thick(batches):
                    for b in batches:
                        yield b.num_rows                             # logic of its own: runs in the task
                frame.mapInArrow(body, "x int")
                frame.mapInArrow(functools.partial(score_batches, model), "x int")
                frame.mapInArrow(thick, "x int")
                frame.mapInArrow(Writer(), "x int")
                run_tasks(frame, thick)
            """),
    })
    found = [v for v in violations(root) if "handed to Spark" in v]
    assert found == [
        "pipelines.score.stage:20: thick is handed to Spark but runs pipelines.score.stage, which is not declared "
        "executor code (pipelines/core/layers.py)",
        "pipelines.score.stage:21: Writer() is handed to Spark but runs pipelines.score.stage, which is not declared "
        "executor code (pipelines/core/layers.py)",
        "pipelines.score.stage:22: thick is handed to Spark but runs pipelines.score.stage, which is not declared "
        "executor code (pipelines/core/layers.py)",
    ], found


def test_the_rules_catch_declared_executor_code_that_submits_jobs_and_stale_declarations(tmp_path):
    root = _tree(tmp_path, {
        "pipelines/core/layers.py": LAYERS.replace('"pipelines.score.remote"', '"pipelines.score.remote", "pipelines.gone"'),
        "pipelines/score/__init__.py": "",
        "pipelines/score/stage.py": "",
        "pipelines/score/remote.py": "def f(batches):\n    yield from batches\n"
                                     "def g(frame):\n    return frame.mapInArrow(f, 'x int')\n",
    })
    found = violations(root)
    assert "pipelines.score.remote: declared executor code, but it submits Spark jobs (line 4)" in found
    assert "pipelines/core/layers.py: EXECUTOR_MODULES names pipelines.gone, which is not a module" in found
