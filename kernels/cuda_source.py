"""Compile the CUDA C sources shipped in this package (`kernels/*.cu`) with CuPy/NVRTC.

Compiled modules are memoised per process (CuPy also caches the binaries on disk), so each source is compiled at
most once per process and never at import time.
"""

from __future__ import annotations

import functools
from importlib import resources

# -std=c++17 for `if constexpr`-free templates and `static_assert`; nothing here needs newer language features.
NVRTC_OPTIONS = ("-std=c++17",)


def read_source(filename: str) -> str:
    """Text of a `.cu` file installed with `xfd.kernels`."""
    return (resources.files("xfd.kernels") / filename).read_text()


@functools.lru_cache(maxsize=None)
def cuda_module(filename: str):
    """cupy.RawModule for `kernels/<filename>` (needs CuPy and a CUDA device)."""
    import cupy

    return cupy.RawModule(code=read_source(filename), options=NVRTC_OPTIONS)


def compile_without_device(filename: str, arch: str = "sm_90") -> tuple[bytes, str]:
    """Compile `kernels/<filename>` with NVRTC for `arch` (sm_90 = H100/H200) without touching a device.

    Returns (binary, compiler log): a cubin for "sm_XX", PTX for "compute_XX". This is the syntax, type and
    (for cubin) assembly check that runs on CPU-only machines where NVRTC is installed.
    """
    from cupy.cuda import nvrtc

    program = nvrtc.createProgram(read_source(filename), filename, (), ())
    try:
        try:
            nvrtc.compileProgram(program, NVRTC_OPTIONS + (f"-arch={arch}",))
        except nvrtc.NVRTCError as error:
            raise RuntimeError(f"{filename} does not compile:\n{nvrtc.getProgramLog(program)}") from error
        binary = nvrtc.getCUBIN(program) if arch.startswith("sm_") else nvrtc.getPTX(program)
        return binary, nvrtc.getProgramLog(program)
    finally:
        nvrtc.destroyProgram(program)
