"""The reused-worker tuning (pipelines/core/worker_remote.py) in a fresh interpreter, as a PySpark worker
runs it: an unchanged zip on sys.path is not re-read on invalidation, a changed one is, and
imports from it keep working either way."""
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the zipimport part applies to Python 3.11")
def test_unchanged_zip_is_not_reread_and_a_changed_one_is(tmp_path):
    lib = tmp_path / "lib.zip"
    with zipfile.ZipFile(lib, "w") as zf:
        zf.writestr("shipped/__init__.py", "")
        zf.writestr("shipped/one.py", "VALUE = 1\n")
    script = textwrap.dedent(f"""
        import gc, importlib, os, sys, time, zipfile
        sys.path.insert(0, {str(lib)!r})
        import shipped.one
        from pipelines.core.worker_remote import tune_worker
        importer = sys.path_importer_cache[{str(lib)!r}]
        tune_worker()
        tune_worker()                               # idempotent
        before = importer._files
        importlib.invalidate_caches()               # what PySpark does before every task
        assert importer._files is before, "an unchanged zip was read again"
        assert gc.get_freeze_count() > 1000
        time.sleep(0.01)
        with zipfile.ZipFile({str(lib)!r}, "a") as zf:
            zf.writestr("shipped/two.py", "VALUE = 2\\n")
        importlib.invalidate_caches()
        assert importer._files is not before and "shipped/two.py" in importer._files
        import shipped.two
        print(shipped.one.VALUE + shipped.two.VALUE)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "3"
