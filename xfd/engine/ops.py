"""DeepSpeed's C++ ops: compiled on first use, cached per installation, and announced before a build starts.

DeepSpeed compiles the C++ ops an installation lacks the first time they are loaded (torch's JIT extension
loader): on CPU ranks its shared-memory all-reduce (`deepspeed_shm_comm`, about a minute on 2 cores), with
optimizer offload on GPUs its CPU Adam. torch keeps the build in TORCH_EXTENSIONS_DIR/<op>/. One folder shared by
several installations (checkouts with their own venvs, other torch or DeepSpeed versions) makes each rebuild what
the last one wrote, for minutes and without a word. So, unless the user set TORCH_EXTENSIONS_DIR, xfd points it at
a folder of this installation's own outside the repository, named by the torch, DeepSpeed and Python versions and a
hash of the environment's path (`extensions_dir`), and says so before DeepSpeed starts a build (`announce_op_build`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sys
from pathlib import Path

import torch

EXTENSIONS_VARIABLE = "TORCH_EXTENSIONS_DIR"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def extensions_dir(prefix: str | None = None, torch_version: str | None = None, deepspeed_version: str | None = None,
                   cache_root: Path | None = None) -> Path:
    """This installation's build cache: CACHE/xfd/torch_extensions/torch<v>-deepspeed<v>-py<v>-<hash of prefix>.

    CACHE is $XDG_CACHE_HOME or ~/.cache; `prefix` (default sys.prefix, the venv) tells installations apart."""
    prefix = str(Path(prefix or sys.prefix).resolve())
    python = "{}.{}".format(*sys.version_info[:2])
    name = (f"torch{torch_version or torch.__version__}-deepspeed{deepspeed_version or _version('deepspeed')}"
            f"-py{python}-{hashlib.sha256(prefix.encode()).hexdigest()[:10]}")
    root = cache_root or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "xfd" / "torch_extensions" / name.replace("+", "_")


def use_installation_cache() -> Path:
    """TORCH_EXTENSIONS_DIR as the user set it, else this installation's folder (set in the environment, which the
    ranks' builds read); returns the folder in force."""
    if not os.environ.get(EXTENSIONS_VARIABLE):
        os.environ[EXTENSIONS_VARIABLE] = str(extensions_dir())
    return Path(os.environ[EXTENSIONS_VARIABLE])


def op_is_built(name: str) -> bool:
    """Whether torch's JIT loader finds the op `name` already built in the cache in force."""
    folder = Path(os.environ.get(EXTENSIONS_VARIABLE) or extensions_dir())
    return (folder / name / f"{name}.so").is_file()


def announce_op_build(builder_name: str, purpose: str, out=print) -> bool:
    """Say that DeepSpeed is about to compile the op of `builder_name` (e.g. "ShareMemCommBuilder") when this
    accelerator uses it and it is neither installed with DeepSpeed nor in the cache; True when it said so.

    Only the node's first rank speaks (the others wait for its build on torch's lock file)."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops

    builder = get_accelerator().create_op_builder(builder_name)
    if builder is None or installed_ops.get(builder.NAME, False) or op_is_built(builder.name):
        return False
    if not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):  # DeepSpeed will not build it here either
        return False
    if os.environ.get("LOCAL_RANK", "0") == "0":
        out(f"xfd: building DeepSpeed's {builder.NAME} op ({purpose}), first launch only: C++, about a minute on 2 "
            f"cores; cached for this installation in {os.environ.get(EXTENSIONS_VARIABLE)}", flush=True)
    return True
