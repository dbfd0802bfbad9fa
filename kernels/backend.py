"""Array-module plumbing: one code path for NumPy (CPU) and CuPy (GPU).

Kernels are written once against an array module `xp` (NumPy or CuPy). CuPy is imported only inside the functions
that need it, so `import xfd.kernels` works on machines without CUDA or without CuPy at all.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np
import scipy.sparse  # imported with the kernels: 0.1 s, not paid inside the first re-ranking

DEVICES = ("auto", "cpu", "cuda")


def _cupy_module() -> ModuleType | None:
    try:
        return importlib.import_module("cupy")
    except ImportError:
        return None


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    cupy = _cupy_module()
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except cupy.cuda.runtime.CUDARuntimeError:  # no driver / no device
        return False


def use_gpu(index: int) -> None:
    """Make CUDA device `index` CuPy's current device in this thread (each rank of a launch computes on its local
    GPU; CuPy's current device is its own, apart from torch's). Nothing happens without CuPy or a GPU."""
    if gpu_available():
        _cupy_module().cuda.Device(index).use()


def resolve_device(device: str) -> str:
    """Map "auto" | "cpu" | "cuda" to the device that will run: "cpu" or "cuda"."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    if device == "cuda" and not gpu_available():
        raise RuntimeError("device='cuda' was asked for, but CuPy sees no CUDA device on this machine")
    return device


def module_for_device(device: str) -> ModuleType:
    """The array module (numpy or cupy) that runs on `device` ("cpu" or "cuda", already resolved)."""
    if device == "cpu":
        return np
    cupy = _cupy_module()
    if cupy is None:
        raise RuntimeError("device='cuda' needs CuPy, which is not installed")
    return cupy


def array_module(x) -> ModuleType:
    """numpy or cupy, whichever owns array `x` (without importing CuPy for NumPy arrays)."""
    if type(x).__module__.split(".")[0] == "cupy":
        return _cupy_module()
    return np


def sparse_module(xp) -> ModuleType:
    """scipy.sparse for NumPy arrays, cupyx.scipy.sparse (the same API) for CuPy arrays."""
    if xp is np:
        return scipy.sparse
    return importlib.import_module("cupyx.scipy.sparse")


def fresh_array(xp, shape: tuple, dtype):
    """An uninitialised array for a large buffer that is written once and read once (re-ranking's kept query
    distances). On the CPU its memory is an anonymous mapping of plain 4 KiB pages: numpy asks the kernel for
    transparent huge pages, whose first use can stall on memory compaction (measured: 0.33 s for 144 MB on a
    machine whose memory the page cache had fragmented, against 0.09 s for plain pages)."""
    if xp is not np:
        return xp.empty(shape, dtype=dtype)
    import mmap

    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    if size == 0:
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, size), dtype=dtype).reshape(shape)


def is_numpy(xp: ModuleType) -> bool:
    return xp is np


def to_numpy(x) -> np.ndarray:
    """Host copy of a NumPy or CuPy array (NumPy arrays are returned as they are)."""
    if array_module(x) is np:
        return np.asarray(x)
    return x.get()


def stable_argsort(x, axis: int = -1):
    """Indices that sort `x` along `axis`, equal keys keeping their order (CuPy's sort is always stable and
    accepts no `kind`)."""
    if array_module(x) is np:
        return np.argsort(x, axis=axis, kind="stable")
    return x.argsort(axis=axis)
