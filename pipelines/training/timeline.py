"""Horovod's timeline (HOROVOD_TIMELINE, written by the coordinator, rank 0), read back into numbers.

The file is Chrome-trace JSON: one "process" per tensor name, and per reduction a
NEGOTIATE_ALLREDUCE span (waiting until every rank has submitted the tensor) then an ALLREDUCE
span (fusion-buffer copies and the gloo/NCCL transfer inside) whose end carries the tensor's
dtype and shape.  From those: what Horovod itself moved (bytes, per dtype) and where its time
went, independent of the train step's own accounting (pipelines/training/step.py).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict

GRADIENTS = "sparkcnn_gradients"   # the name the train step gives its grouped allreduce

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int32": 4, "int64": 8,
               "uint8": 1, "int8": 1, "bool": 1}


def parse_events(events: list, only: str = GRADIENTS) -> dict:
    """Bytes and wall time per activity of the reductions of tensors whose name contains `only`.

    NEGOTIATE_ALLREDUCE is the wait for the last rank to submit (a straggler shows here),
    GLOO_ALLREDUCE (or NCCL_ALLREDUCE) the transfer, MEMCPY_* the fusion buffer's copies.
    """
    names, stacks = {}, defaultdict(list)
    spans = defaultdict(list)
    bytes_by_dtype = defaultdict(int)
    reductions = 0
    for event in events:
        phase, pid = event.get("ph"), event.get("pid")
        if phase == "M" and event.get("name") == "process_name":
            names[pid] = event.get("args", {}).get("name", "")
        elif phase == "B":
            stacks[pid].append((event.get("name"), event["ts"]))
        elif phase == "E" and stacks[pid]:
            name, start = stacks[pid].pop()
            if only not in names.get(pid, ""):
                continue
            spans[name].append((start, event["ts"]))
            args = event.get("args") or {}
            if name == "ALLREDUCE" and "dtype" in args:
                shape = json.loads(args.get("shape", "[]"))
                bytes_by_dtype[args["dtype"]] += math.prod(shape) * DTYPE_BYTES.get(args["dtype"], 4)
                reductions += 1
    return {"tensor_reductions": reductions, "bytes": sum(bytes_by_dtype.values()),
            "bytes_by_dtype": dict(bytes_by_dtype),
            "activity_ms": {k: _union_us(v) / 1000 for k, v in sorted(spans.items())}}


def _union_us(intervals: list) -> float:
    """Wall time covered: the tensors of one fused reduction share their spans, counted once."""
    total, end = 0.0, -math.inf
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def load_events(text: str) -> list:
    """The events of a timeline file; one still being written lacks its closing bracket."""
    text = text.strip().rstrip(",")
    if not text.endswith("]"):
        text += "]"
    return json.loads(text)


def read_timeline(path: str) -> dict:
    """{"summary": parse_events(...), "text": the file} (the driver keeps the file in the run directory)."""
    with open(path) as f:
        text = f.read()
    return {"summary": parse_events(load_events(text)), "text": text}
