"""Compile the C source shipped in this package (`kernels/cpu_kernels.c`) and load it with ctypes.

Why C next to the NumPy twins: between two GEMM tiles of the re-ranking graph, NumPy needs one pass over the tile
per array operation (scale, two norm additions, two maxima, two candidate scans, the merges), and the Jaccard
expansion builds several arrays per (entry, gallery row) pair; each C function makes one pass. At N = 20k,
d = 1024 that was most of the time above the GEMM floor (README, "Exact re-ranking in O(N·k) memory").

The library is built on first use with the system C compiler (`cc`, or $CC) and cached outside the repository, in
CACHE/xfd/cpu_kernels/ (CACHE is $XDG_CACHE_HOME or ~/.cache), under a name that hashes the source, the flags, the
compiler's version and the machine, so an edit, another compiler or another CPU builds anew; the build writes a
temporary file and renames it, so ranks that build at once do not see each other's half-written files. Build time:
well under a second.

Without a compiler (or with XFD_CPU_KERNELS=numpy) `cpu_library()` is None, the callers use their NumPy twins and a
warning says so once: the results are the same bit for bit (the tests compare both), only slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from importlib import resources
from pathlib import Path

SOURCE = "cpu_kernels.c"
# -ffp-contract=off: no multiply-add is fused, so each value is rounded exactly as the NumPy twin rounds it.
# No -march=native: the same instructions on every x86-64 (or aarch64) machine that shares the cache folder.
FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math")
CHOICE_VARIABLE = "XFD_CPU_KERNELS"  # "numpy": skip the C kernels (the NumPy twins run instead)

_POINTER, _INT64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
SIGNATURES = {  # name (without the f32/f64 suffix) -> argument types; every function returns nothing
    "finish_tile": (_POINTER, _INT64, _INT64, _POINTER, _POINTER, _INT, _POINTER, _POINTER),
    "merge_rows": (_POINTER, _INT64, _INT64, _INT64, _POINTER, _POINTER, _INT64, _INT64, _INT64, _POINTER),
    "merge_columns": (_POINTER, _INT64, _INT64, _INT64, _POINTER, _POINTER, _INT64, _INT64, _INT64, _POINTER,
                      _POINTER),
    "jaccard_blend": (_POINTER, _POINTER, _POINTER, _INT64, _POINTER, _POINTER, _POINTER, _POINTER, _INT64, _INT64,
                      _POINTER, None, None, _POINTER),  # None: the dtype's scalar (c_float or c_double)
    "query_expansion": (_POINTER, _POINTER, _POINTER, _POINTER, _INT64, _INT64, _INT64, _INT64, _POINTER, _POINTER,
                        _POINTER, _POINTER, _POINTER),
}

INDEX_SIGNATURES = {  # functions over index arrays only (no float type): name -> argument types
    "reciprocal_mask": (_POINTER, _INT64, _INT64, _INT64, _INT64, _POINTER),
    "reciprocal_sets": (_POINTER, _POINTER, _INT64, _INT64, _INT64, _INT64, _INT64, _POINTER, _POINTER, _INT64,
                        _POINTER),
}


def compiler() -> str | None:
    """The C compiler to build with: $CC, else cc, else gcc (None when there is none)."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xfd" / "cpu_kernels"


def library_path(cc: str, source: str) -> Path:
    """Where the build of `source` by `cc` for this machine is cached."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    key = "\n".join([source, " ".join(FLAGS), version, platform.machine(), platform.system()])
    return cache_dir() / f"cpu_kernels-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"


def build(cc: str, source: str, target: Path) -> None:
    """Compile `source` into `target`, atomically (a temporary file in the same folder, then a rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as work:
        c_file, so_file = Path(work) / SOURCE, Path(work) / target.name
        c_file.write_text(source)
        done = subprocess.run([cc, *FLAGS, "-o", str(so_file), str(c_file)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{cc} could not build {SOURCE}:\n{done.stderr[-2000:]}")
        os.replace(so_file, target)


@functools.lru_cache(maxsize=None)
def cpu_library() -> ctypes.CDLL | None:
    """The loaded C kernels, built on first use; None when they are switched off or cannot be built (the NumPy
    twins then run, with a warning once per process)."""
    if os.environ.get(CHOICE_VARIABLE, "").lower() == "numpy":
        return None
    cc = compiler()
    if cc is None:
        warnings.warn("xfd: no C compiler (cc, gcc or $CC) found: re-ranking uses its NumPy kernels, the same "
                      "results, slower", RuntimeWarning, stacklevel=2)
        return None
    source = (resources.files("xfd.kernels") / SOURCE).read_text()
    path = library_path(cc, source)
    try:
        if not path.is_file():
            build(cc, source, path)
        library = ctypes.CDLL(str(path))
    except (OSError, RuntimeError) as error:
        warnings.warn(f"xfd: the C kernels could not be built or loaded ({error}); re-ranking uses its NumPy "
                      "kernels, the same results, slower", RuntimeWarning, stacklevel=2)
        return None
    for name, arguments in SIGNATURES.items():
        for suffix, scalar in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
            function = getattr(library, f"{name}_{suffix}")
            function.argtypes = [scalar if kind is None else kind for kind in arguments]
            function.restype = None
    for name, arguments in INDEX_SIGNATURES.items():
        getattr(library, name).argtypes = arguments
    library.reciprocal_mask.restype = None
    library.reciprocal_sets.restype = _INT64
    return library


def kernel(name: str, dtype=None):
    """The C function `name` for float32 or float64 arrays (dtype None: one over index arrays only), or None (no
    library, or another dtype)."""
    import numpy as np

    library = cpu_library()
    if dtype is None:
        return None if library is None else getattr(library, name)
    suffix = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}.get(np.dtype(dtype))
    if library is None or suffix is None:
        return None
    return getattr(library, f"{name}_{suffix}")


def address(array) -> int:
    """The data pointer of a NumPy array (None for None: a NULL argument)."""
    return None if array is None else array.ctypes.data
