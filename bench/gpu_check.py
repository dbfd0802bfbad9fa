"""`make gpu-check`: one prepared run for a bare GPU machine that writes one JSON of results.

    python3 bench/gpu_check.py [--out runs/gpu_check.json] [--budget 480] [--wheels .gpu_wheels]
    python bench/gpu_check.py --download-wheels .gpu_wheels        # `make gpu-wheels`, on a machine with an index

The GPU machine needs Python with torch and CuPy (and nvcc for one of the compilers); the pure-Python packages it
lacks (open_clip and its small dependencies, webdataset, pytest, tqdm) come from the wheel folder that
`make gpu-wheels` fills, and are installed, with xfd itself, into a throwaway folder: nothing is installed into the
machine's environment and nothing is fetched. Each part runs in its own process under its own time limit, all
inside the overall budget (8 minutes by default), and the JSON is rewritten after every part:

1. `versions`: Python, torch (+ its CUDA), CuPy, NumPy, open_clip, xfd (git revision), the GPU and its driver,
   nvcc, NVRTC, and whether DALI and DeepSpeed are importable.
2. `compile`: every kernels/*.cu for sm_90 with nvcc and with NVRTC (the compiler CuPy uses when the kernels
   run): ptxas's registers, spill stores/loads, stack frame and shared memory per kernel. An absent compiler is
   recorded as skipped, with the reason.
3. `gpu_tests`: every test marked `gpu` (pytest -m gpu) in the files that hold them, with each test's outcome;
   tests that need DALI or DeepSpeed skip where those are absent.
4. `model_step`: a ViT-L/14 training step at 256x128, 16 frames, bf16 (bench/model.py's `measure_gpu`):
   tracklets/s, peak memory and MFU against a bf16 matmul peak measured in the same run, with and without
   activation checkpointing.
5. `rerank`: exact k-reciprocal re-ranking, q = 10k x g = 1M, d = 1024, k1 28, k2 6, lambda 0.28
   (`xfd.eval.rerank.k_reciprocal_stream`, blocks left on the GPU): seconds (index and blocks) and peak device
   memory (CuPy's pool high-water mark; used bytes and whole-device use sampled every 5 ms; torch's peak).

On a machine without a CUDA device parts 3-5 are recorded as skipped with the reason (part 3 still runs pytest,
which skips every GPU test and says why) and parts 1-2 run, so the script's CPU path is testable anywhere.
This file needs only the standard library until a part starts.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUDGET_S = 480
# (part, the most seconds it may take); the overall budget cuts the later ones if the earlier ones ran long
PARTS = (("versions", 60), ("compile", 60), ("gpu_tests", 150), ("model_step", 150), ("rerank", 240))
# pure-Python distributions the parts may need beyond torch, CuPy, NumPy, PyYAML, Pillow, regex (`make gpu-wheels`)
WHEELS = ("open_clip_torch", "ftfy", "wcwidth", "webdataset", "braceexpand", "pytest", "pluggy", "iniconfig",
          "packaging", "pygments", "tqdm")
RERANK = {"q": 10_000, "g": 1_000_000, "dim": 1024, "k1": 28, "k2": 6, "lam": 0.28, "noise": 2.7, "seed": 0}
SM = "sm_90"  # Hopper (H100 / H200)


# ---------------------------------------------------------------------------------------------- the parent side


def write_json(path: Path, data: dict) -> None:
    """Atomic: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        json.dump(data, stream, indent=2, sort_keys=False)
        stream.write("\n")
    os.replace(temporary, path)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def download_wheels(folder: Path) -> int:
    """`make gpu-wheels`: the WHEELS at the versions this environment has, pure-Python wheels only."""
    folder.mkdir(parents=True, exist_ok=True)
    pins = []
    for name in WHEELS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    python = "{}.{}".format(*sys.version_info[:2])  # pure wheels: the same file for any Python 3
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               python, "--implementation", "py", "--abi", "none", "--platform", "any", "-d", str(folder), *pins]
    print(" ".join(command), flush=True)
    status = subprocess.run(command).returncode
    if status == 0:
        print(f"{len(list(folder.glob('*.whl')))} wheels in {folder}; copy the folder with the tree (git ignores it)")
    return status


def _xfd_here(env: dict, cwd: Path) -> str | None:
    """Where `import xfd.kernels` resolves from `cwd` under `env` (None: not importable)."""
    probe = subprocess.run([sys.executable, "-c", "import xfd, xfd.kernels; print(xfd.__file__)"], env=env, cwd=cwd,
                           capture_output=True, text=True)
    return probe.stdout.strip() if probe.returncode == 0 else None


def prepare_environment(wheels: Path, site: Path, work: Path) -> tuple[dict, dict]:
    """(environment for the parts, what was done): the wheels' distributions this Python lacks and, unless this
    checkout's xfd is importable already, xfd itself, installed into `site` (put first on PYTHONPATH)."""
    record: dict = {"python": sys.executable, "site": str(site), "installed": [], "notes": []}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    files = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    missing = [f for f in files if not _installed(_normalise(f.name.split("-")[0]))]
    if not files:
        record["notes"].append(f"no wheel folder at {wheels} (make gpu-wheels); using the packages installed here")
    if missing:
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
                                 "--no-cache-dir", "--target", str(site), *map(str, missing)],
                                capture_output=True, text=True)
        if result.returncode:
            record["notes"].append("wheel install failed: " + result.stderr[-2000:])
        else:
            record["installed"] += [f.name for f in missing]
    found = _xfd_here(env, work)
    if found and Path(found).resolve().parent == REPO / "xfd":
        record["xfd"] = f"this checkout, importable as installed ({found})"
    else:
        record["xfd"] = install_checkout(site)
    return env, record


def install_checkout(site: Path) -> str:
    """Build this checkout into `site` with pip (no index: the machine's setuptools); where it cannot, lay the
    package out by hand as setup.py maps it (kernels/ is xfd.kernels). Returns what was done."""
    with tempfile.TemporaryDirectory(prefix="xfd-build-") as scratch:  # pip builds in the tree: build a copy
        source = Path(scratch) / "xfd-checkout"
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
            ".git", ".venv", ".gpu_wheels", "build", "dist", "runs", "demo_out", "data_shards", "weights",
            "*.egg-info", "__pycache__", ".pytest_cache"))
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
                                 "--no-build-isolation", "--no-cache-dir", "--target", str(site), str(source)],
                                capture_output=True, text=True)
    if result.returncode == 0:
        return f"this checkout, built into {site} with pip"
    shutil.copytree(REPO / "xfd", site / "xfd", dirs_exist_ok=True)
    shutil.copytree(REPO / "kernels", site / "xfd" / "kernels", dirs_exist_ok=True)
    return f"this checkout, copied into {site} (pip could not build it: {result.stderr[-500:]})"


def run_part(name: str, seconds: float, env: dict, work: Path) -> dict:
    """One part in its own process; its result file holds what it got to if it is stopped at `seconds`."""
    result_file = work / f"{name}.json"
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--part", name, "--result",
                               str(result_file)], env=env, cwd=work, capture_output=True, text=True,
                              timeout=seconds)
        output, timed_out, status = done.stdout + done.stderr, False, done.returncode
    except subprocess.TimeoutExpired as stopped:
        output = (stopped.stdout or b"").decode(errors="replace") + (stopped.stderr or b"").decode(errors="replace")
        timed_out, status = True, None
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if timed_out:
        result.update(status="timed out", reason=f"stopped after its limit of {seconds:.0f} s")
    elif status != 0 or "status" not in result:
        result.update(status="failed", reason=f"exit status {status}", output_tail=output[-3000:])
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def check(out: Path, budget: float, wheels: Path) -> dict:
    started = time.monotonic()
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": budget, "repo": str(REPO),
                    "parts": {}}
    with tempfile.TemporaryDirectory(prefix="xfd-gpu-check-") as scratch:
        work, site = Path(scratch) / "work", Path(scratch) / "site"
        work.mkdir()
        site.mkdir()
        env, report["environment"] = prepare_environment(wheels, site, work)
        write_json(out, report)
        for name, limit in PARTS:
            left = budget - (time.monotonic() - started)
            if left < 10:
                report["parts"][name] = {"status": "skipped", "reason": f"the {budget:.0f} s budget is spent"}
            else:
                print(f"gpu-check: {name} (at most {min(limit, left):.0f} s)", flush=True)
                report["parts"][name] = run_part(name, min(limit, left), env, work)
                print(f"gpu-check: {name}: {report['parts'][name]['status']}", flush=True)
            report["total_s"] = round(time.monotonic() - started, 1)
            write_json(out, report)
    return report


# ---------------------------------------------------------------------------------------------- the parts


def _cuda_or_skip() -> str | None:
    """None where torch sees a CUDA device, else why a GPU part is skipped."""
    import torch

    return None if torch.cuda.is_available() else "no CUDA device (torch.cuda.is_available() is False)"


def part_versions(result: dict) -> None:
    import platform

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    import torch

    result["python"] = platform.python_version()
    result["torch"], result["torch_cuda"] = torch.__version__, torch.version.cuda
    result["packages"] = {name: version(name) for name in (
        "numpy", "cupy-cuda13x", "cupy-cuda12x", "open_clip_torch", "webdataset", "pytest", "tqdm", "pyyaml",
        "pillow", "regex", "ftfy", "torchvision", "scipy", "deepspeed", "nvidia-dali-cuda120",
        "nvidia-dali-cuda130")}
    import xfd

    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    result["xfd"] = {"version": xfd.__version__, "git": git.stdout.strip() or None, "from": xfd.__file__}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        result["gpu"] = {"name": properties.name, "memory_gib": round(properties.total_memory / 2**30, 1),
                         "multiprocessors": properties.multi_processor_count,
                         "capability": f"{properties.major}.{properties.minor}"}
    smi = shutil.which("nvidia-smi")
    if smi:
        query = subprocess.run([smi, "--query-gpu=driver_version,name", "--format=csv,noheader"],
                               capture_output=True, text=True)
        result["nvidia_smi"] = query.stdout.strip() or query.stderr.strip()
    nvcc = shutil.which("nvcc")
    result["nvcc"] = (subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip()
                      .splitlines()[-1] if nvcc else None)
    try:
        from cupy.cuda import nvrtc

        result["nvrtc"] = ".".join(map(str, nvrtc.getVersion()))
    except Exception as error:  # CuPy absent, or its NVRTC library missing
        result["nvrtc"] = None
        result["nvrtc_error"] = repr(error)
    result["status"] = "ok"


_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>\w+)'")
_FRAME = re.compile(r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, "
                    r"(?P<loads>\d+) bytes spill loads")
_USED = re.compile(r"Used (?P<registers>\d+) registers(?:.*?(?P<smem>\d+) bytes smem)?")


def parse_ptxas(log: str) -> dict[str, dict]:
    """Per kernel: registers, spill stores / loads (bytes), stack frame and shared memory (bytes), from ptxas -v."""
    kernels: dict[str, dict] = {}
    current = None
    for line in log.splitlines():
        if match := _ENTRY.search(line):
            current = kernels.setdefault(match["name"], {"arch": match["arch"]})
        elif current is not None and (match := _FRAME.search(line)):
            current.update(stack_bytes=int(match["stack"]), spill_store_bytes=int(match["stores"]),
                           spill_load_bytes=int(match["loads"]))
        elif current is not None and (match := _USED.search(line)):
            current["registers"] = int(match["registers"])
            if match["smem"] is not None:
                current["smem_bytes"] = int(match["smem"])
    return kernels


def compile_with_nvcc(source: Path) -> dict:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return {"status": "skipped", "reason": "nvcc is not on PATH"}
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run([nvcc, f"-arch={SM}", "-cubin", "-std=c++17", "-Xptxas", "-v", "-o",
                               str(Path(scratch) / "out.cubin"), str(source)], capture_output=True, text=True)
    if done.returncode:
        return {"status": "failed", "reason": "nvcc failed", "log": (done.stdout + done.stderr)[-3000:]}
    return {"status": "ok", "kernels": parse_ptxas(done.stdout + done.stderr)}


def compile_with_nvrtc(source: Path) -> dict:
    try:
        from cupy.cuda import nvrtc

        from xfd.kernels.cuda_source import NVRTC_OPTIONS

        nvrtc.getVersion()
    except Exception as error:
        return {"status": "skipped", "reason": f"NVRTC is not available through CuPy ({error!r})"}
    program = nvrtc.createProgram(source.read_text(), source.name, (), ())
    try:
        options = (*NVRTC_OPTIONS, f"-arch={SM}", "-Xptxas=-v")
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError:
            return {"status": "failed", "reason": "NVRTC failed", "log": nvrtc.getProgramLog(program)[-3000:]}
        return {"status": "ok", "options": list(options), "kernels": parse_ptxas(nvrtc.getProgramLog(program))}
    finally:
        nvrtc.destroyProgram(program)


def part_compile(result: dict) -> None:
    sources = sorted((REPO / "kernels").glob("*.cu"))
    result["sources"] = {source.name: {"nvcc": compile_with_nvcc(source), "nvrtc": compile_with_nvrtc(source)}
                         for source in sources}
    outcomes = {one["status"] for both in result["sources"].values() for one in both.values()}
    result["status"] = "failed" if "failed" in outcomes else "ok" if "ok" in outcomes else "skipped"
    if result["status"] == "skipped":
        result["reason"] = "neither nvcc nor NVRTC is available"
    if not sources:
        result.update(status="failed", reason="no .cu files in kernels/")


def gpu_test_files() -> list[Path]:
    """The test files that hold `gpu`-marked tests."""
    marked = re.compile(r"pytest\.mark\.gpu\b")
    return sorted(p for p in (REPO / "tests").rglob("test_*.py") if marked.search(p.read_text()))


def parse_junit(path: Path) -> list[dict]:
    import xml.etree.ElementTree as ET

    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                message = (element.get("message") or element.text or "")[:1000]
                break
        tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": round(float(case.get("time") or 0), 2), **({"message": message} if message else {})})
    return tests


def part_gpu_tests(result: dict) -> None:
    files = gpu_test_files()
    result["files"] = [str(f.relative_to(REPO)) for f in files]
    junit = Path.cwd() / "gpu_tests.xml"
    done = subprocess.run([sys.executable, "-m", "pytest", *map(str, files), "-m", "gpu", "-q", "-rA",
                           "-p", "no:cacheprovider", "--continue-on-collection-errors", "-c", str(REPO / "pyproject.toml"),
                           "--rootdir", str(REPO), f"--junitxml={junit}"], capture_output=True, text=True)
    result["exit_status"] = done.returncode
    result["summary"] = (done.stdout.strip().splitlines() or [""])[-1]
    result["tests"] = parse_junit(junit) if junit.is_file() else []
    counts: dict[str, int] = {}
    for test in result["tests"]:
        counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
    result["counts"] = counts
    if done.returncode not in (0, 5) or counts.get("failed") or counts.get("error"):
        result.update(status="failed", output_tail=(done.stdout + done.stderr)[-3000:])
    elif not counts.get("passed"):
        result.update(status="skipped", reason=_cuda_or_skip() or "every gpu test skipped (see tests)")
    else:
        result["status"] = "ok"


def part_model_step(result: dict) -> None:
    if (reason := _cuda_or_skip()) is not None:
        result.update(status="skipped", reason=reason)
        return
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_model", REPO / "bench" / "model.py")
    bench_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_model)
    result.update(bench_model.measure_gpu(batch=24, frames=16, steps=10))
    result["status"] = "ok"  # a configuration that runs out of memory is a result, recorded in its run


def part_rerank(result: dict, result_file: Path) -> None:
    if (reason := _cuda_or_skip()) is not None:
        result.update(status="skipped", reason=reason)
        return
    import threading

    import cupy
    import torch

    from xfd.eval.rerank import k_reciprocal_stream
    from xfd.eval.synthetic import reid_features

    p = RERANK
    result["settings"] = dict(p, dtype="float32", features="xfd.eval.synthetic.reid_features (as bench/rerank.py)")
    started = time.perf_counter()
    data = reid_features(p["q"], p["g"], p["dim"], (p["q"] + p["g"]) // 20, noise=p["noise"], seed=p["seed"])
    result["features_s"] = round(time.perf_counter() - started, 1)
    result["stage"] = "building the index"
    write_json(result_file, result)  # what a stop at the time limit leaves

    pool, peaks, stop = cupy.get_default_memory_pool(), {"pool_used": 0, "device_used": 0}, threading.Event()

    def sample() -> None:
        while not stop.is_set():
            free, total = cupy.cuda.runtime.memGetInfo()
            peaks["pool_used"] = max(peaks["pool_used"], pool.used_bytes())
            peaks["device_used"] = max(peaks["device_used"], total - free)
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    blocks = k_reciprocal_stream(data.q_feats, data.g_feats, p["k1"], p["k2"], p["lam"], device="cuda",
                                 to_host=False)
    result["index_s"] = round(time.perf_counter() - started, 2)
    result["stage"] = "re-ranking query blocks"
    write_json(result_file, result)
    last = None
    for _, last in blocks:
        pass
    float(last[-1, -1])  # waits for the device
    result["total_s"] = round(time.perf_counter() - started, 2)
    result["blocks_s"] = round(result["total_s"] - result["index_s"], 2)
    stop.set()
    sampler.join()
    gib = 2**30
    result["peak_device_memory"] = {
        "cupy_pool_high_water_gib": round(pool.total_bytes() / gib, 2),
        "cupy_pool_used_sampled_gib": round(peaks["pool_used"] / gib, 2),
        "device_used_sampled_gib": round(peaks["device_used"] / gib, 2),
        "torch_max_allocated_gib": round(torch.cuda.max_memory_allocated() / gib, 2),
        "method": "pool high-water = CuPy's pool size at the end (it keeps freed blocks); used bytes and whole-device "
                  "use (cudaMemGetInfo, context included) sampled every 5 ms"}
    result.pop("stage")
    result["status"] = "ok"


def run_one_part(name: str, result_file: Path) -> int:
    """The child side: run part `name`, writing its result to `result_file` (also on failure)."""
    result: dict = {}
    try:
        if name == "rerank":
            part_rerank(result, result_file)
        else:
            {"versions": part_versions, "compile": part_compile, "gpu_tests": part_gpu_tests,
             "model_step": part_model_step}[name](result)
    except Exception as error:
        import traceback

        result.update(status="failed", reason=repr(error), traceback=traceback.format_exc()[-3000:])
    write_json(result_file, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gpu_check.json", help="the JSON of results")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all parts")
    parser.add_argument("--wheels", type=Path, default=REPO / ".gpu_wheels", help="folder of wheels to bring")
    parser.add_argument("--download-wheels", type=Path, metavar="DIR", help="fill DIR with the wheels and stop")
    parser.add_argument("--part", choices=[name for name, _ in PARTS], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.download_wheels:
        return download_wheels(args.download_wheels)
    if args.part:
        return run_one_part(args.part, args.result)
    report = check(args.out.resolve(), args.budget, args.wheels)
    print(f"gpu-check: {args.out} written in {report['total_s']} s: " +
          ", ".join(f"{name} {part['status']}" for name, part in report["parts"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
