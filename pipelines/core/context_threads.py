"""Threads that run in the context of the code that starts them.

A new thread, and every worker of a ThreadPoolExecutor, starts with an empty contextvars
context: storage I/O there would run under the default StorageContext (no credentials, the
default publish policy; pipelines.core.storage_context), not under the one of the code that
handed it the work.  Every pool and thread of this project that reads or writes storage, or
reports on the running stage, goes through these two.
"""
from __future__ import annotations

import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable


class ContextThreadPool(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose calls (submit, and map, which submits) run in a copy of the context
    of the thread that submitted them."""

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def in_this_context(fn: Callable) -> Callable:
    """`fn` bound to a copy of the context active here: a threading.Thread's target, run once."""
    return functools.partial(contextvars.copy_context().run, fn)
