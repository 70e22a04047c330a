"""jobs/: one thin spark-submit shell per CLI command, each handing its arguments to the CLI."""
import ast
import os
import subprocess
import sys

import pytest

from pipelines.stages import PIPELINES, STAGES

COMMANDS = sorted([*STAGES, *PIPELINES])


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_job_that_runs_it(command):
    path = os.path.join("jobs", f"{command}.py")
    assert os.path.exists(path), f"{path} missing: spark-submit users need one shell per command"
    tree = ast.parse(open(path).read())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "main"]
    assert len(calls) == 1 and isinstance(calls[0].args[0], ast.List)
    assert calls[0].args[0].elts[0].value == command


def test_a_job_answers_like_the_cli():
    out = subprocess.run([sys.executable, "jobs/localise.py", "--help"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    assert "localise.canvas (" in out.stdout and "usage: sparkcnn localise" in out.stdout


def test_no_job_without_a_command():
    jobs = {n[:-3] for n in os.listdir("jobs") if n.endswith(".py") and n != "__init__.py"}
    assert jobs == set(COMMANDS)
