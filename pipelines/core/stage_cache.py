"""Stages skipped when nothing they depend on changed: each stage's key, its record, the check.

A stage that declares a `StageKey` (in its package's `key.py`) says what its output depends on:
`inputs(cfg, store)` returns JSON values (its config sections, the identities of the datasets,
raw files and model it reads) and `outputs(cfg, store, result)` the locations it wrote.  After the stage
succeeds the driver writes a record beside its output: the key (a digest of the inputs and of
the stage's own code: `code_version`), the inputs themselves, and the identity of every output.  Next time the
stage is skipped only if the key is the same *and* every output still has the identity it had
then (an output that was deleted, or rewritten by anything else, makes the stage run again).

Identities are cheap and exact for what this project writes: a published directory is its
version (local: the versioned directory the link points to; stores: the manifest's version),
so a stage that ran again makes everything downstream run again; a file is its size,
modification time and ETag; a folder of raw files is a digest of its listing (names, sizes,
times).  `--force STAGE` or `--force all` runs a stage whatever its key says.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from pipelines.core import source_graph, storage
from pipelines.core.published import published
from pipelines.core.store import read_json, write_json_atomic

RECORD_FORMAT = "sparkcnn-stage-key/1"


def code_version(spec: "StageKey") -> str:
    """The package version and a digest of the code the stage's output depends on: the modules its
    package (where its key is declared) reaches by imports, engines and core included, comments and
    docstrings left out (core/source_graph.py).  A change in another stage's package, or a fixed
    comment anywhere, leaves the key as it was."""
    import pipelines
    package = spec.inputs.__module__.rpartition(".")[0]
    return f"{pipelines.__version__}+{source_graph.package_code_digest(package)}"


def listing_identity(location: str) -> Optional[str]:
    """A digest of every file below a folder (name, size, time, ETag), or of one file; None if missing."""
    if not storage.exists(location):
        return None
    if storage.isfile(location):
        return json.dumps(storage.stat(location))
    digest = hashlib.sha256()
    for rel, size, mtime, tag in sorted(storage.walk_details(location)):
        digest.update(f"{rel}\0{size}\0{mtime}\0{tag}\n".encode())
    return digest.hexdigest()


def identity(location: str) -> Optional[str]:
    """What says whether an output or input changed: a published version, a file's stat, a listing.

    A published version is what the command reads of it (pipelines/core/published.py), so a key and
    the stage it lets run describe the same version."""
    if storage.is_remote(location):
        return published(location).version or listing_identity(location)
    if os.path.islink(location):
        return published(location).version
    if os.path.isfile(location):
        st = os.stat(location)
        return f"{st.st_size}:{st.st_mtime_ns}"
    return listing_identity(location)


@dataclass(frozen=True)
class StageKey:
    """What a stage's output depends on (`inputs`), what it writes (`outputs`), where its record lives."""
    inputs: Callable      # (cfg, store) -> dict of JSON values
    outputs: Callable     # (cfg, store, the stage's result) -> [locations it wrote]
    record_dir: Callable  # (cfg, store) -> folder of the record


@dataclass(frozen=True)
class Verdict:
    stage: str
    key: str
    inputs: dict
    record: str
    up_to_date: bool
    reason: str           # why it runs: "no record of an earlier run", "changed: train section", ...


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _changed(old: dict, new: dict) -> list:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def check(stage: str, spec: StageKey, cfg, store) -> Verdict:
    inputs = dict(spec.inputs(cfg, store), version=code_version(spec))
    key = _digest(inputs)
    record = storage.join(spec.record_dir(cfg, store), f"_stage_{stage}.json")
    try:
        old = read_json(record)
    except (FileNotFoundError, ValueError):
        old = None
    if not old or old.get("format") != RECORD_FORMAT:
        return Verdict(stage, key, inputs, record, False, "no record of an earlier run")
    if old.get("key") != key:
        changed = _changed(old.get("inputs", {}), inputs)
        return Verdict(stage, key, inputs, record, False, "changed: " + ", ".join(changed[:6]))
    moved = [loc for loc, was in old.get("outputs", {}).items() if identity(loc) != was]
    if moved:
        return Verdict(stage, key, inputs, record, False,
                       "output changed or missing: " + ", ".join(storage.redact(m) for m in moved[:3]))
    return Verdict(stage, key, inputs, record, True, "")


def remember(verdict: Verdict, spec: StageKey, cfg, store, result) -> None:
    """After the stage succeeded: its key, inputs and the identity of each output it wrote."""
    outputs = {loc: identity(loc) for loc in spec.outputs(cfg, store, result)}
    write_json_atomic(verdict.record, {"format": RECORD_FORMAT, "stage": verdict.stage, "key": verdict.key,
                                       "inputs": verdict.inputs, "outputs": outputs,
                                       "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
