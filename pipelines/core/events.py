"""`<run dir>/events.jsonl`: what each command did, one JSON object per line, for schedulers and dashboards.

Every line has `time` (UTC ISO), `invocation` (one id per command started) and `event`:
`command_start` (command, stages, argv with secrets redacted), `stage_start`, `stage_skipped`
(the key that was up to date), `stage_end` (seconds and the stage's counts and metrics),
`command_end` (exit code, and for a failure its reason and message).  Lines are appended as
they happen, so a `tail -f` or a log shipper sees a stage start before it ends.

Local files are appended to (one write per line).  Object stores cannot append: the file is
read and rewritten whole (one GET, one PUT) for each event; it stays small (a few lines per command).  A failure to write an event is logged and never fails the command.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from typing import Any

from pipelines.core import storage

EVENTS_NAME = "events.jsonl"
logger = logging.getLogger("sparkcnn.core")


def summary_of(result: Any, depth: int = 0) -> Any:
    """The counts and metrics in a stage's result, as JSON values (arrays, models and figures left out)."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        result = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    if isinstance(result, bool) or result is None or isinstance(result, str) and len(result) <= 500:
        return result
    if isinstance(result, (int, float)):
        return round(result, 6) if isinstance(result, float) else result
    if hasattr(result, "item") and getattr(result, "shape", None) == ():
        return summary_of(result.item(), depth)
    if isinstance(result, dict) and depth < 3:
        out = {}
        for key, value in result.items():
            if isinstance(value, (list, tuple)) and len(value) > 20:
                continue                      # per-row or per-step series: history.json has them
            kept = summary_of(value, depth + 1)
            if kept is not None or value is None:
                out[str(key)] = kept
        return out
    if isinstance(result, (list, tuple)) and len(result) <= 20 and depth < 3:
        return [summary_of(v, depth + 1) for v in result]
    return None


class EventLog:
    """Appends events for one command invocation to `<run dir>/events.jsonl`."""

    def __init__(self, run_dir: str):
        self.location = storage.join(run_dir, EVENTS_NAME)
        self.invocation = uuid.uuid4().hex[:12]

    def emit(self, event: str, **fields) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "invocation": self.invocation,
                  "event": event, **fields}
        line = json.dumps(record, default=str, sort_keys=False) + "\n"
        try:
            self._write(storage.redact(line))
        except OSError as exc:
            logger.warning(f"[events] could not write {storage.redact(self.location)}: {storage.redact(exc)}")

    def _write(self, line: str) -> None:
        if not storage.is_remote(self.location):
            os.makedirs(os.path.dirname(self.location), exist_ok=True)
            with open(self.location, "a", encoding="utf-8") as f:
                f.write(line)
            return
        try:                                   # read again each time: a run refused by the lock adds its lines too
            before = storage.read_bytes(self.location)
        except FileNotFoundError:
            before = b""
        storage.put_bytes(self.location, before + line.encode("utf-8"))


def read_events(run_dir: str) -> list:
    """Every event of a run directory, oldest first (a half-written last line is skipped)."""
    location = storage.join(run_dir, EVENTS_NAME)
    try:
        text = storage.read_bytes(location).decode("utf-8")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
