"""Lists of image paths: the one parser for every setting that takes one (`data.path`, `predict.input`).

A list is a text file (`.txt`, `.lst`: one path or URL per line) or a Parquet table (`.parquet`: a
string column of paths, `path` unless the setting names another).  The rules are the same for both
and for every stage:
  - a line whose first non-blank character is `#` is a comment, and blank lines are skipped; a `#`
    anywhere else is part of the path (`photos/a#1.jpg` names that file);
  - surrounding white space is not part of a path;
  - a relative path is relative to the list's own folder (as in a playlist), never to the process's
    working directory, so a list means the same files wherever the job runs; URLs stay as written;
  - a list that names nothing is an error naming the list, and so is a Parquet list without the column.
Files a list names that are missing are not errors here: each stage accounts for them (a rejects row).
"""
from __future__ import annotations

import io
import posixpath

import pyarrow.parquet as pq

from pipelines.core import storage
from pipelines.core.errors import SparkcnnError

TEXT_SUFFIXES = (".txt", ".lst")
TABLE_SUFFIXES = (".parquet",)
LIST_SUFFIXES = TEXT_SUFFIXES + TABLE_SUFFIXES


class PathListError(SparkcnnError, ValueError):
    """A list of paths that names nothing usable; the message names the setting, the list and why."""


def is_path_list(location: str) -> bool:
    """Whether `location` is a list of paths (by its suffix) that exists as a file."""
    return bool(location) and location.lower().endswith(LIST_SUFFIXES) and storage.isfile(location)


def _text_entries(data: bytes, shown: str, setting: str) -> list:
    try:
        text = data.decode("utf-8-sig")           # a BOM some editors write is not part of the first path
    except UnicodeDecodeError as exc:
        raise PathListError(f"{setting} {shown}: not UTF-8 text (byte {exc.start}); a list has one path "
                            "per line") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _table_entries(data: bytes, column: str, shown: str, setting: str) -> list:
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:                      # noqa: BLE001 (pyarrow raises several kinds for a bad file)
        raise PathListError(f"{setting} {shown}: not a readable Parquet table ({exc})") from None
    if column not in table.column_names:
        raise PathListError(f"{setting} {shown}: no column '{column}' in the list; columns: "
                            f"{', '.join(table.column_names)}")
    return [str(p).strip() for p in table.column(column).to_pylist() if p is not None and str(p).strip()]


def absolute(entry: str, list_folder: str) -> str:
    """A listed path as a location: URLs as written, local paths absolute against the list's folder."""
    if storage.is_remote(entry) or entry.startswith("file://") or posixpath.isabs(entry):
        return storage.normalize(entry)
    return storage.normalize(storage.join(list_folder, entry))


def read_path_list(location: str, column: str = "path", setting: str = "data.path") -> list:
    """The locations a list names, in the list's order (duplicates kept: the caller decides)."""
    shown = storage.redact(location)
    data = storage.read_bytes(location)
    if location.lower().endswith(TABLE_SUFFIXES):
        entries = _table_entries(data, column, shown, setting)
    else:
        entries = _text_entries(data, shown, setting)
    if not entries:
        raise PathListError(f"{setting} {shown}: the list names no file")
    folder = storage.split(storage.normalize(location))[0]
    return [absolute(entry, folder) for entry in entries]
