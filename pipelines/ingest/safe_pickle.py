"""Loading pickled dataset files without letting them run code.

`pickle.load` executes whatever callables a file names, so a downloaded
"dataset" could run arbitrary code.  This unpickler resolves only the few
globals that numpy needs to rebuild a plain array; anything else stops with
an error naming the file and the global it asked for.  After loading, the
result is checked to be made only of dicts, lists, strings, bytes, numbers
and numeric numpy arrays.
"""
from __future__ import annotations

import io
import pickle

import numpy as np

from pipelines.core import storage
from pipelines.core.errors import DataError

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),   # how protocol-2 pickles written by Python 3 spell a bytes object
}


class UnsafePickleError(DataError, ValueError):
    """The file asked to load something other than plain data."""


class _Restricted(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="bytes")  # CIFAR's python batches are Python 2 pickles
        self.source = source

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(f"{self.source}: refuses to load '{module}.{name}': a dataset pickle may only "
                                "hold dicts, lists, strings, bytes, numbers and numpy arrays")


def _check_plain(obj, source: str, depth: int = 0):
    if depth > 8:
        raise UnsafePickleError(f"{source}: nested deeper than a dataset batch should be")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, source, depth + 1)
            _check_plain(v, source, depth + 1)
    elif isinstance(obj, (list, tuple)):
        if len(obj) and all(isinstance(x, (int, float)) for x in obj[:1000]):
            return
        for v in obj:
            _check_plain(v, source, depth + 1)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "uifb":
            raise UnsafePickleError(f"{source}: holds a numpy array of dtype {obj.dtype}; only numeric arrays are allowed")
    elif not isinstance(obj, (str, bytes, int, float, bool, type(None), np.generic)):
        raise UnsafePickleError(f"{source}: holds a {type(obj).__name__}; only plain data is allowed")


def _text_keys(obj):
    if isinstance(obj, dict):
        return {(k.decode("latin-1") if isinstance(k, bytes) else k): _text_keys(v) for k, v in obj.items()}
    return obj


def load_data_pickle(path: str):
    """Unpickle a dataset file safely; dict keys come back as str whatever Python wrote them."""
    data = storage.read_bytes(path)
    try:
        obj = _Restricted(io.BytesIO(data), path).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated, not a pickle, bad opcode
        raise UnsafePickleError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    _check_plain(obj, path)
    return _text_keys(obj)
