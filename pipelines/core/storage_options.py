"""Filesystem options for remote stores, and keeping the secrets among them out of every output.

`storage.options` in a conf (endpoints, regions, credentials: fsspec's constructor arguments) is
held in a StorageOptions whose repr and `redacted()` show only keys known to be harmless;
`redact()` scrubs secret values and URL user-info from any message before it is printed or
written.  Which options are in use is not decided here: a StorageContext carries them, active for
a `with using(ctx):` block (pipelines.core.storage_context).
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from typing import Optional

# Option keys that are safe to show and to write into run outputs; every other value is hidden.
PUBLIC_OPTION_KEYS = frozenset({
    "endpoint_url", "region_name", "anon", "use_ssl", "client_kwargs", "config_kwargs", "account_name",
    "project", "requester_pays", "version_aware", "host", "port", "user", "default_block_size",
    "s3_additional_kwargs", "addressing_style", "signature_version", "use_listings_cache", "skip_instance_cache",
})
SCHEME_KEYS = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "hdfs", "viewfs", "webhdfs",
                         "memory", "http", "https"})
HIDDEN = "<redacted>"


def _redact_tree(value, key: Optional[str] = None):
    if isinstance(value, dict):
        return {k: (_redact_tree(v, k) if (k in PUBLIC_OPTION_KEYS or k in SCHEME_KEYS) else HIDDEN)
                for k, v in value.items()}
    return value


def _secret_values(value) -> list:
    """Every option value that is hidden by redaction, as text (for scrubbing messages)."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in PUBLIC_OPTION_KEYS or k in SCHEME_KEYS:
                out += _secret_values(v) if isinstance(v, dict) else []
            elif isinstance(v, dict):
                out += [str(x) for x in _flatten(v)]
            elif v not in (None, "", True, False):
                out.append(str(v))
    return [s for s in out if len(s) >= 4]


def _flatten(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _flatten(v)
    elif value not in (None, "", True, False):
        yield value


@dataclass(frozen=True)
class StorageOptions:
    """fsspec filesystem options: applied to every remote scheme, or per scheme under its name.

    `{"endpoint_url": ...}` applies to all; `{"s3": {...}, "gs": {...}}` to one scheme each.
    For s3, `endpoint_url` and `region_name` are moved into `client_kwargs` where s3fs expects them.
    """
    options: dict = field(default_factory=dict)

    def for_scheme(self, scheme: str) -> dict:
        opts = {k: v for k, v in (self.options or {}).items() if k not in SCHEME_KEYS}
        opts.update((self.options or {}).get(scheme) or {})
        if scheme in ("s3", "s3a"):
            client = dict(opts.pop("client_kwargs", None) or {})
            for key in ("endpoint_url", "region_name"):
                if key in opts:
                    client.setdefault(key, opts.pop(key))
            if client:
                opts["client_kwargs"] = client
        return opts

    def redacted(self) -> dict:
        return _redact_tree(dict(self.options or {}))

    def __repr__(self) -> str:
        return f"StorageOptions({self.redacted()!r})"


# Every secret of every StorageOptions run under in this process (pipelines.core.storage_context.using):
# redaction only ever hides more, and a failure line printed after a `using` block ends is still
# scrubbed.  Nothing reads or writes storage by it.
_SECRETS_SEEN = [frozenset()]
_SECRETS_LOCK = threading.Lock()


def hide_secrets_of(options: StorageOptions) -> None:
    """From now on `redact` hides the secret values of `options` too."""
    found = frozenset(_secret_values(options.options or {}))
    if found <= _SECRETS_SEEN[0]:
        return
    with _SECRETS_LOCK:
        _SECRETS_SEEN[0] = _SECRETS_SEEN[0] | found


def redact(text: str) -> str:
    """`text` with the secret values of every storage context used here, of the environment's credential
    variables, and URL user-info (scheme://user:pass@) replaced."""
    text = re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@", r"\1" + HIDDEN + "@", str(text))
    for secret in sorted(_SECRETS_SEEN[0], key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
                 "AZURE_STORAGE_CONNECTION_STRING"):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, HIDDEN)
    return text
