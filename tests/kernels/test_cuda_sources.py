"""The CUDA sources compile for Hopper (sm_90) with NVRTC, and `xfd.kernels` imports without CuPy or a GPU.

Compilation needs only NVRTC (shipped with the CUDA wheels), not a device, so it runs on CPU-only machines.
"""

import subprocess
import sys

import pytest

from xfd.kernels.cuda_source import compile_without_device


def _nvrtc_available() -> bool:
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception:  # ImportError, or the NVRTC library missing
        return False
    return True


@pytest.mark.skipif(not _nvrtc_available(), reason="NVRTC (CUDA runtime compiler) not installed")
@pytest.mark.parametrize("source, kernels", [("topk.cu", ["topk_merge_f32", "topk_merge_f64"]),
                                             ("jaccard.cu", ["min_intersection_f32", "min_intersection_f64"])])
def test_cuda_source_compiles_for_sm90(source, kernels):
    ptx, log = compile_without_device(source, "compute_90")
    text = ptx.decode() if isinstance(ptx, bytes) else ptx
    for name in kernels:
        assert f".entry {name}(" in text
    cubin, log = compile_without_device(source, "sm_90")
    assert len(cubin) > 0
    assert "warning" not in log.lower()


def test_kernels_import_without_cupy():
    code = ("import sys; import xfd.kernels.graph, xfd.kernels.topk, xfd.kernels.jaccard, xfd.kernels.vmatrix, "
            "xfd.kernels.reciprocal, xfd.eval.rerank, xfd.eval.metrics; "
            "assert 'cupy' not in sys.modules, 'cupy imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True)
