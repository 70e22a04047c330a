"""Which store settings the running code uses: a StorageContext, active inside `with using(ctx):`.

A context holds everything that decides how storage I/O behaves: the fsspec options (endpoints,
credentials; pipelines.core.storage_options) and the publish policy (versions kept, when staging
counts as abandoned).  It is not process state: `using` sets it for the block in this thread only
(a ContextVar), so two threads, or two `with` blocks in one notebook, can use two stores with
different credentials at the same time, and leaving the block restores the previous context.
The CLI enters the conf's context for a command (`cfg.storage.context()`); every executor task
enters the copy its spec carries.  New threads start in an empty context: pools and threads that
do storage I/O go through pipelines.core.context_threads.  Outside any `using` block the context
is the default one: no options (credentials from the environment), the default policy.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from pipelines.core.storage_options import StorageOptions, hide_secrets_of


@dataclass(frozen=True)
class PublishPolicy:
    keep_versions: int = 2          # object stores: published versions kept (the current one included)
    stale_after_hours: float = 24.0  # staging of another host (or unknown owner) older than this is removed


@dataclass(frozen=True)
class StorageContext:
    """How storage is reached and how outputs are published; small and picklable (task specs carry it)."""
    options: StorageOptions = field(default_factory=StorageOptions)
    policy: PublishPolicy = field(default_factory=PublishPolicy)


_ACTIVE: ContextVar = ContextVar("sparkcnn_storage_context", default=StorageContext())


def active_context() -> StorageContext:
    """The context of the innermost `using` block around this code (in this thread), else the default."""
    return _ACTIVE.get()


@contextlib.contextmanager
def using(context: Optional[StorageContext]):
    """Run the block under `context` (None: the default one); its secrets are redacted from then on."""
    context = context if context is not None else StorageContext()
    hide_secrets_of(context.options)
    token = _ACTIVE.set(context)
    try:
        yield context
    finally:
        _ACTIVE.reset(token)


def iterate_using(context: Optional[StorageContext], items: Iterable) -> Iterator:
    """`items` advanced one step at a time under `context`, and closed under it.

    For Spark task bodies, which are generators: a `with using(...)` around a generator's yields
    would leave the context active in Spark's own code between them, and would reset it from
    wherever the generator happens to be closed (in a reused Python worker: a later task).
    """
    items = iter(items)
    try:
        while True:
            with using(context):
                try:
                    item = next(items)
                except StopIteration:
                    return
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            with using(context):
                close()
