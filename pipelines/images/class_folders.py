"""Images laid out one folder per class: what folder ingest reads and export writes.

`<root>/[train|val|test/]<class folder>/<image files>`, with an optional `_classes.json` that
records each class's index, name and folder (export writes it, so export -> ingest returns
identical labels even for class names that are not safe folder names).
"""
from __future__ import annotations

import json
import re
import unicodedata

from pipelines.core import storage
from pipelines.core.errors import IngestError, IngestSetupError

SPLIT_FOLDERS = ("train", "val", "test")
CLASS_MANIFEST = "_classes.json"


def folder_layout(root: str) -> dict:
    """{split or None: folder}; None means one folder to be split by path hash."""
    subdirs = {name for name, is_dir in storage.entries(root) if is_dir}
    splits = {s: storage.join(root, s) for s in SPLIT_FOLDERS if s in subdirs}
    return splits or {None: root}


def class_folders(root: str, layout: dict) -> list:
    """[(folder name, class name)] in class-index order."""
    manifest = storage.join(root, CLASS_MANIFEST)
    if storage.exists(manifest):
        entries = json.loads(storage.read_bytes(manifest).decode("utf-8"))
        try:
            ordered = sorted(entries, key=lambda e: int(e["index"]))
            return [(str(e["folder"]), str(e["name"])) for e in ordered]
        except (KeyError, TypeError, ValueError):
            raise IngestError(f"{manifest}: expected a list of {{index, name, folder}} entries") from None
    names = set()
    for folder in layout.values():
        names.update(name for name, is_dir in storage.entries(folder) if is_dir)
    if not names:
        raise IngestSetupError(f"{root}: no class subfolders (expected {root}/<class>/<image files>)")
    return [(n, n) for n in sorted(names)]


def safe_folder_name(name: str, index: int) -> str:
    """A class name as one path component that stays inside its parent."""
    cleaned = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C")
    cleaned = re.sub(r"[/\\\\:]", "_", cleaned).strip()
    if cleaned in ("", ".", "..") or cleaned.startswith((".", "_")):
        cleaned = f"class_{index}" + (f"_{cleaned.strip('._')}" if cleaned.strip("._") else "")
    return cleaned[:200]


def class_manifest(class_names: list) -> list:
    """The `_classes.json` entries for class names: index, name, and a safe folder unique among them."""
    folders, out = set(), []
    for k, name in enumerate(class_names):
        folder = safe_folder_name(name, k)
        if folder in folders:            # two names that clean to the same folder
            folder = f"{folder}_{k}"
        folders.add(folder)
        out.append({"index": k, "name": name, "folder": folder})
    return out
