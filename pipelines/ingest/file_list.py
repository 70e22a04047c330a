"""Image files named by a list instead of found by walking a folder (`data.path: images.txt`).

The list is read by the one path-list parser (pipelines/images/path_lists.py: `.txt`/`.lst` text or a
`.parquet` table, `#` comment lines, relative paths against the list's folder).  The files' common folder is the dataset root, and the path below
it says what the folder layout says: `<class>/<file>` or `<split>/<class>/<file>`, so a list and a
folder holding the same files make the same dataset (ids are a hash of that relative path).  A
listed file that is missing or unreadable becomes a row of the rejects table.

Each file is stat-ed (a HEAD on stores, a few at a time): a list may name a few files of a
large bucket, where a listing of the root would read every object.
"""
from __future__ import annotations

import posixpath

from pipelines.core import storage
from pipelines.core.context_threads import ContextThreadPool
from pipelines.core.errors import IngestSetupError
from pipelines.images.path_lists import read_path_list

def _identity(location: str) -> tuple:
    try:
        return storage.stat(location)
    except OSError:
        return 0, None, None           # missing or unreadable: its task rejects it, naming the reason


def listed_files(list_path: str) -> tuple:
    """(root, {path relative to root: (size, mtime, ETag)}) of the files a list names."""
    locations = sorted(set(read_path_list(list_path)))
    schemes = {storage.scheme_of(loc) for loc in locations}
    if len(schemes) > 1:
        raise IngestSetupError(f"data.path {storage.redact(list_path)}: the list mixes storage schemes "
                               f"({', '.join(sorted(s or 'local' for s in schemes))}); one dataset, one store")
    scheme = schemes.pop()
    prefix = f"{scheme}://" if scheme else ""             # URLs: their paths below the scheme; local: paths
    paths = [loc[len(prefix):] for loc in locations]
    root = posixpath.commonpath(paths) if len(paths) > 1 else posixpath.dirname(paths[0])
    if root in paths:                    # the list names one file only, or a file and a folder's contents
        root = posixpath.dirname(root)
    with ContextThreadPool(16 if prefix else 1) as pool:
        stats = list(pool.map(_identity, locations))
    rels = [posixpath.relpath(p, root) for p in paths]
    return prefix + root, dict(zip(rels, stats))
