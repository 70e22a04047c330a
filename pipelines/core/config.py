"""The config engine: YAML files in conf/ and `--set` overrides, validated into small typed sections.

A section is a frozen dataclass whose fields are declared with `setting(...)`: type (the
annotation), default, bounds, choices and a doc line, once.  Everything else derives from
that declaration: validation and its messages, `sparkcnn <stage> --help`, the executor
specs (they carry the section itself) and the resume fingerprint (every setting that is
not declared `runtime=True`).  Each stage declares its own section beside its code
(`pipelines/<stage>/section.py`); the stage table (pipelines/stages.py) hands the engine
the full set of sections, so this module imports no stage.

Unknown keys are errors (a typo such as `epoch: 3` must not silently train with the
default), and every error names the file and the dotted key, with a did-you-mean.

A section may define `check(self, where)` (checks across its keys, raise ConfigError) and
`resolve(self, where, sections, path) -> section` (defaults that depend on other sections or
on the conf file's name); `resolve` runs after every section is built, in table order.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import field
from typing import Any, Mapping, Optional

import yaml

from pipelines.core import storage
from pipelines.core.errors import SparkcnnError


class ConfigError(SparkcnnError, ValueError):
    """A configuration problem; the message names the file and the key."""


def setting(default, *, min=None, max=None, choices=None, doc="", raw=False, runtime=False):
    """Declare one setting of a section.

    raw: the value is checked by the section's own `check` (values of several shapes).
    runtime: how the work runs (threads, timeouts, where to log), not what it computes: such
    a setting may change between a run and its resumption without starting afresh.
    """
    return field(default=default, metadata={"min": min, "max": max, "choices": choices, "doc": doc,
                                            "raw": raw, "runtime": runtime})


def computing_settings(section) -> dict:
    """name -> value of the settings that decide what a stage computes (all but `runtime=True`)."""
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if not f.metadata.get("runtime")}


class Config:
    """A validated job configuration: one attribute per section (`cfg.train`, `cfg.data`, ...)."""

    def __init__(self, sections: Mapping[str, Any], source: str = ""):
        self.__dict__.update(sections)
        self.__dict__["_names"] = tuple(sections)
        self.__dict__["source"] = source   # the file it came from, for messages

    def __setattr__(self, name, value):
        raise AttributeError("Config is immutable: use cfg.replace(section=...)")

    @property
    def sections(self) -> dict:
        return {name: getattr(self, name) for name in self._names}

    def replace(self, **sections) -> "Config":
        return Config({**self.sections, **sections}, self.source)

    def to_dict(self) -> dict:
        """Every section's values, as written into run outputs: a section's `public_dict()` (secrets
        redacted) stands in for its raw values when it has one."""
        return {name: section.public_dict() if hasattr(section, "public_dict") else dataclasses.asdict(section)
                for name, section in self.sections.items()}

    @property
    def run_dir(self) -> str:
        return storage.join(storage.normalize(self.run.runs_dir), self.run.name)

    @property
    def dataset_root(self) -> str:
        """<datasets_dir>/<dataset>: its splits, rejects, file index, lock and ingest record."""
        return storage.join(storage.normalize(self.data.datasets_dir), self.data.dataset)

    def dataset_dir(self, split: str) -> str:
        return storage.join(self.dataset_root, split)


def suggest(name, options) -> str:
    """' (did you mean ...?)' for the closest option, else the known options: every unknown-name message ends so."""
    close = difflib.get_close_matches(str(name), list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(options))})"


def check_value(where: str, value: Any, hint, meta: Mapping) -> Any:
    """One value against its declared type, choices and bounds; returns it normalised (float, dict of str)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        hint = args[0]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
    elif hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads `1e-3` (no dot) as a string; users mean the number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
    elif meta.get("raw"):
        pass  # validated by its own checker after the section is built
    elif hint is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        value = {str(k): str(v) for k, v in value.items()}
    elif hint is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{where}: {value!r} is below the minimum {meta['min']}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{where}: {value!r} is above the maximum {meta['max']}")
    return value


def build_section(cls, raw: Any, name: str, source: str):
    """A section from its raw mapping: unknown keys refused, every value checked, then `check`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{name}' must be a mapping of settings, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{name}.{key}'" + suggest(str(key), fields))
    values = {}
    for fname, f in fields.items():
        value = raw.get(fname, f.default)
        values[fname] = check_value(f"{source}: {name}.{fname}", value, hints[fname], f.metadata)
    section = cls(**values)
    if hasattr(section, "check"):   # checks across keys, or of nested values (augment.pipeline)
        section.check(f"{source}: {name}")
    return section


def _apply_override(raw: dict, override: str, sections: Mapping) -> None:
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. train.epochs=1")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {override!r}: the key must be SECTION.NAME, e.g. train.epochs")
    section, name = parts
    if section not in sections:
        raise ConfigError(f"--set {override!r}: unknown section '{section}'" + suggest(section, sections))
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {override!r}: value is not valid YAML ({exc})") from None
    target = raw.setdefault(section, {})
    if target is None:
        target = raw[section] = {}
    target[name] = value


def load(sections: Mapping[str, type], path: Optional[str] = None, overrides=(),
         text: Optional[str] = None) -> Config:
    """Read a conf file (or YAML text), apply `--set` overrides, validate into `sections` (name -> class)."""
    source = path or "<conf>"
    if text is None:
        if path is None:
            raise ConfigError("no configuration given: pass --conf conf/<name>.yaml")
        try:
            with open(path) as f:
                text = f.read()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections ({', '.join(sections)})")
    for key in raw:
        if key not in sections:
            raise ConfigError(f"{source}: unknown section '{key}'" + suggest(str(key), sections))
    for override in overrides:
        _apply_override(raw, override, sections)
    built = {name: build_section(cls, raw.get(name), name, source) for name, cls in sections.items()}
    for name in sections:
        if hasattr(built[name], "resolve"):
            built[name] = built[name].resolve(f"{source}: {name}", built, path)
    return Config(built, source)


def describe(name: str, cls) -> list:
    """`--help` lines for a section: one per setting, from its declaration."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if typing.get_origin(hint) is typing.Union:
            hint = [a for a in typing.get_args(hint) if a is not type(None)][0]
        kind = getattr(hint, "__name__", str(hint))
        meta = f.metadata
        limits = []
        if meta.get("choices"):
            limits.append("one of " + "/".join(map(str, meta["choices"])))
        if meta.get("min") is not None:
            limits.append(f">= {meta['min']}")
        if meta.get("max") is not None:
            limits.append(f"<= {meta['max']}")
        head = f"  {name}.{f.name} ({'any' if meta.get('raw') else kind}, default {f.default!r}"
        head += (", " + ", ".join(limits) if limits else "") + ")"
        lines.append(head + (f": {meta['doc']}" if meta.get("doc") else ""))
    return lines
