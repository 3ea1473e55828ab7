"""Read PyTorch ``.pth`` weight files into NumPy arrays without torch and without arbitrary unpickling.

``torch.save`` writes a pickle whose tensors refer to raw storages kept beside it. Two layouts
exist and both are read here:

* **zip** (torch ≥ 1.6): ``<prefix>/data.pkl`` plus one member ``<prefix>/data/<key>`` per
  storage, each the raw little-endian bytes of the storage.
* **legacy** (torch < 1.6, e.g. the linear-layer files shipped in the ``lpips`` package): a
  magic-number pickle, a protocol-version pickle, a system-info pickle, the object pickle, a
  pickle of the storage keys, then per key an int64 element count and the raw bytes.

A pickle can call any importable function while it is read, so the object pickle goes through
:class:`RestrictedUnpickler`, whose ``find_class`` admits only ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2``, ``torch._utils._rebuild_parameter`` and the typed storage
classes (``torch.FloatStorage`` …), each mapped to a NumPy stand-in defined here; any other
global raises ``ValueError("refusing to unpickle <module>.<name> from <file>")``. Tensor views
are rebuilt with :func:`numpy.lib.stride_tricks.as_strided` after a bounds check against the
storage, then copied.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np

__all__ = ["RestrictedUnpickler", "read_pth"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

#: torch typed-storage class name -> NumPy dtype (little-endian, as torch writes them).
STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _StorageType:
    """Stand-in for ``torch.<Name>Storage``: only carries the dtype."""

    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGE_DTYPES[name]


class _Storage:
    """A storage descriptor from ``persistent_load``; its bytes are attached after unpickling."""

    def __init__(self, dtype: np.dtype, key: str, numel: int, view: tuple[int, int] | None = None):
        self.dtype, self.key, self.numel, self.view = dtype, key, numel, view
        self.array: np.ndarray | None = None


class _Tensor:
    """A tensor to materialise once its storage's bytes are known."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialise(self, where: str) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise ValueError(f"{where}: storage {self.storage.key!r} has no data")
        if self.storage.view is not None:  # legacy storage views: (offset, size) into the root
            v_off, v_size = self.storage.view
            if v_off < 0 or v_off + v_size > flat.size:
                raise ValueError(f"{where}: storage view {self.storage.view} lies outside storage {self.storage.key!r}")
            flat = flat[v_off : v_off + v_size]
        size, stride, off = self.size, self.stride, self.offset
        if len(size) != len(stride) or off < 0 or any(s < 0 for s in (*size, *stride)):
            raise ValueError(f"{where}: bad tensor layout (offset {off}, size {size}, stride {stride})")
        if 0 not in size:
            last = off + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= flat.size:
                raise ValueError(
                    f"{where}: tensor (offset {off}, size {size}, stride {stride}) reads past its storage of {flat.size} elements"
                )
        else:
            return np.zeros(size, flat.dtype)
        view = np.lib.stride_tricks.as_strided(flat[off:], shape=size, strides=[s * flat.itemsize for s in stride], writeable=False)
        return np.array(view, dtype=flat.dtype.newbyteorder("="), copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise ValueError(f"_rebuild_tensor_v2 expects a storage, got {type(storage).__name__}")
    ints = (storage_offset, *size, *stride)
    if not all(isinstance(i, int) for i in ints):
        raise ValueError("_rebuild_tensor_v2: offset, size and stride must be integers")
    return _Tensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    if not isinstance(data, _Tensor):
        raise ValueError(f"_rebuild_parameter expects a tensor, got {type(data).__name__}")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds torch state dicts and nothing else.

    Args:
      file: the pickle stream.
      source: the file's name, for error messages.
      storages: ``key -> _Storage`` registry filled by ``persistent_load``.
    """

    def __init__(self, file, *, source: str, storages: dict | None = None):
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.storages = {} if storages is None else storages

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise ValueError(f"refusing to unpickle {module}.{name} from {self.source}")

    def persistent_load(self, pid):
        # zip: ('storage', type, key, location, numel); legacy adds view_metadata (view_key, offset, size) | None
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise ValueError(f"unexpected persistent id {pid!r:.80} in {self.source}")
        key, numel = str(pid[2]), pid[4]
        if not isinstance(numel, int) or numel < 0:
            raise ValueError(f"bad storage size {numel!r} in {self.source}")
        root = self.storages.setdefault(key, _Storage(pid[1].dtype, key, numel))
        if root.dtype != pid[1].dtype:
            raise ValueError(f"storage {key!r} used with two dtypes in {self.source}")
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return root
        v_key, v_off, v_size = view
        if not (isinstance(v_off, int) and isinstance(v_size, int)):
            raise ValueError(f"bad storage view {view!r} in {self.source}")
        return self.storages.setdefault(f"{key}/{v_key}", _StorageView(root, v_off, v_size))


class _StorageView(_Storage):
    def __init__(self, root: _Storage, offset: int, size: int):
        super().__init__(root.dtype, root.key, size, (offset, size))
        self.root = root

    @property
    def array(self):
        return self.root.array

    @array.setter
    def array(self, value):
        pass


def _read_storage(raw: bytes, st: _Storage, where: str) -> np.ndarray:
    need = st.numel * st.dtype.itemsize
    if len(raw) < need:
        raise ValueError(f"{where}: storage {st.key!r} holds {len(raw)} bytes, needs {need}")
    return np.frombuffer(raw, dtype=st.dtype, count=st.numel)


def _read_zip(path: Path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pkl) != 1:
            raise ValueError(f"{path}: not a torch zip checkpoint (no single <prefix>/data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        obj = RestrictedUnpickler(io.BytesIO(z.read(pkl[0])), source=str(path), storages=storages).load()
        for key, st in storages.items():
            if isinstance(st, _StorageView):
                continue
            member = f"{prefix}data/{key}"
            if member not in names:
                raise ValueError(f"{path}: missing storage member {member}")
            st.array = _read_storage(z.read(member), st, str(path))
    return obj


def _read_legacy(path: Path):
    with open(path, "rb") as f:
        src = str(path)
        try:
            magic = RestrictedUnpickler(f, source=src).load()
        except (pickle.UnpicklingError, EOFError) as e:
            raise ValueError(f"{path}: not a torch checkpoint ({e})") from e
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path}: not a torch checkpoint (bad magic number)")
        if RestrictedUnpickler(f, source=src).load() != _LEGACY_PROTOCOL:
            raise ValueError(f"{path}: unsupported legacy torch protocol")
        info = RestrictedUnpickler(f, source=src).load()
        if isinstance(info, dict) and not info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        storages: dict[str, _Storage] = {}
        obj = RestrictedUnpickler(f, source=src, storages=storages).load()
        keys = RestrictedUnpickler(f, source=src).load()
        if not isinstance(keys, list):
            raise ValueError(f"{path}: bad storage key list")
        for key in keys:
            st = storages.get(str(key))
            if st is None:
                raise ValueError(f"{path}: storage {key!r} is not referenced by any tensor")
            (numel,) = struct.unpack("<q", f.read(8))
            if numel != st.numel:
                raise ValueError(f"{path}: storage {key!r} has {numel} elements, expected {st.numel}")
            st.array = _read_storage(f.read(numel * st.dtype.itemsize), st, src)
    return obj


def _materialise(obj, where):
    if isinstance(obj, _Tensor):
        return obj.materialise(where)
    if isinstance(obj, dict):
        return {k: _materialise(v, where) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, where) for v in obj)
    return obj


def read_pth(path: str | os.PathLike) -> dict:
    """Reads a ``torch.save``'d object (usually a state dict) with every tensor as a NumPy array.

    Args:
      path: ``.pth``/``.pt`` file written by ``torch.save`` (zip or legacy format).

    Returns:
      The saved object with tensors replaced by C-contiguous ``np.ndarray`` copies (dicts,
      including ``OrderedDict`` state dicts, come back as plain ``dict``).

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a torch checkpoint, corrupt, or holding anything besides tensors,
        containers and plain values (``"refusing to unpickle <module>.<name> from <file>"``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    obj = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    return _materialise(obj, str(path))
