"""`make gpu-check` (bench/gpu_check.py) on a CPU machine: the JSON it writes, its compile part, and how it brings
packages and xfd itself to a machine without a package index."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _gpu_check()

PTXAS_LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'topk_merge_f64' for 'sm_90'
ptxas info    : Function properties for topk_merge_f64
    2048 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 2048 bytes cumulative stack size, 2132 bytes smem
ptxas info    : Compiling entry function 'min_intersection_f32' for 'sm_90'
ptxas info    : Function properties for min_intersection_f32
ptxas         .     8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers
"""


def test_ptxas_report_is_parsed_per_kernel():
    kernels = gpu_check.parse_ptxas(PTXAS_LOG)
    assert kernels == {
        "topk_merge_f64": {"arch": "sm_90", "stack_bytes": 2048, "spill_store_bytes": 0, "spill_load_bytes": 0,
                           "registers": 32, "smem_bytes": 2132},
        "min_intersection_f32": {"arch": "sm_90", "stack_bytes": 8, "spill_store_bytes": 12,
                                 "spill_load_bytes": 16, "registers": 255},
    }


def test_gpu_test_files_are_the_ones_with_gpu_marks():
    files = {str(p.relative_to(REPO)) for p in gpu_check.gpu_test_files()}
    assert {"tests/kernels/test_gpu.py", "tests/model/test_gpu.py", "tests/eval/test_rerank_gpu.py",
            "tests/data/test_loader.py"} <= files
    assert "tests/test_gpu_check.py" not in files and "tests/engine/test_launch.py" not in files


def _wheel(folder: Path, name: str, version: str = "0.0.1") -> Path:
    """A minimal pure-Python wheel holding module `name` (what `pip download` would have brought)."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    records = [f"{file},," for file in files] + [f"{info}/RECORD,,"]
    with zipfile.ZipFile(path, "w") as archive:
        for file, text in files.items():
            archive.writestr(file, text)
        archive.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return path


def test_missing_wheels_go_to_a_throwaway_folder_and_present_ones_are_left(tmp_path):
    wheels, site, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    for folder in (wheels, site, work):
        folder.mkdir()
    _wheel(wheels, "xfd_probe_missing")
    _wheel(wheels, "pytest", "0.0.1")  # installed here: must not shadow the real one
    env, record = gpu_check.prepare_environment(wheels, site, work)
    assert record["installed"] == ["xfd_probe_missing-0.0.1-py3-none-any.whl"], record
    assert (site / "xfd_probe_missing" / "__init__.py").is_file() and not (site / "pytest").exists()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(site)
    probe = subprocess.run([sys.executable, "-c", "import xfd_probe_missing as m, xfd.kernels; print(m.VALUE)"],
                           env=env, cwd=work, capture_output=True, text=True)
    assert probe.stdout.strip() == "42", probe.stderr
    assert "this checkout" in record["xfd"]


def test_the_checkout_installs_into_a_folder_as_the_package_it_is(tmp_path):
    """What a bare GPU machine gets: xfd built from this checkout into a folder, kernels/ as xfd.kernels."""
    site, work = tmp_path / "site", tmp_path / "work"
    site.mkdir()
    work.mkdir()
    how = gpu_check.install_checkout(site)
    assert "built into" in how, how
    env = dict(os.environ, PYTHONPATH=str(site))
    probe = subprocess.run([sys.executable, "-c", "import xfd, xfd.kernels.cuda_source as c; "
                            "print(xfd.__file__); print(c.read_source('topk.cu')[:20])"],
                           env=env, cwd=work, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    location, source = probe.stdout.splitlines()[:2]
    assert Path(location).is_relative_to(site) and source.strip()


def test_cpu_run_writes_one_json_with_gpu_parts_skipped(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out", str(out), "--wheels",
                           str(tmp_path / "none")], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    parts = report["parts"]
    assert list(parts) == ["versions", "compile", "gpu_tests", "model_step", "rerank"]
    assert parts["versions"]["status"] == "ok" and parts["versions"]["torch"]
    sources = parts["compile"]["sources"]
    assert sorted(sources) == sorted(p.name for p in (REPO / "kernels").glob("*.cu"))
    for compilers in sources.values():
        for name, compiled in compilers.items():
            if compiled["status"] == "skipped":
                assert "not" in compiled["reason"]  # e.g. "nvcc is not on PATH"
            else:
                assert compiled["status"] == "ok", (name, compiled)
                assert all(k["registers"] > 0 and k["spill_store_bytes"] >= 0 for k in compiled["kernels"].values())
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the skipped-part checks are for CPU machines")
    for name in ("gpu_tests", "model_step", "rerank"):
        assert parts[name]["status"] == "skipped" and "no CUDA device" in parts[name]["reason"], parts[name]
    tests = parts["gpu_tests"]["tests"]
    assert tests and all(t["outcome"] == "skipped" for t in tests)
    assert any("test_knn_graph_gpu_equals_cpu" in t["test"] for t in tests)
    assert report["total_s"] < report["budget_s"]


def test_nvcc_absent_is_a_skip_with_a_reason(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = gpu_check.compile_with_nvcc(REPO / "kernels" / "topk.cu")
    assert result == {"status": "skipped", "reason": "nvcc is not on PATH"}
