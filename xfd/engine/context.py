"""Who this process is in the run (rank, world, device) and the run folder's identity files.

Nothing assumes one node: ranks and world come from the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK and
the ranks on this node: LOCAL_SIZE from `deepspeed`, LOCAL_WORLD_SIZE from `torchrun`), the device is the local
rank's GPU, and only global rank 0 writes shared files in the run folder (which must therefore be on a filesystem
every node sees, or be read only from the first node).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from xfd.atomic import write_bytes_atomic, write_json_atomic
from xfd.config import ExperimentConfig, dump_config
from xfd.distributed import launched_as_ranks, rank_device
from xfd.engine.ops import announce_op_build, use_installation_cache


MKL_REPRODUCIBLE = "AUTO,STRICT"  # MKL_CBWR: strict conditional numerical reproducibility


@dataclass(frozen=True)
class RunContext:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    run_dir: Path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if torch.distributed.is_initialized() and self.world_size > 1:
            torch.distributed.barrier()


# Environment variables an MPI launcher (mpirun) sets; DeepSpeed then finds ranks and world through mpi4py.
_MPI_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")


def start_single_process_group(backend: str) -> None:
    """A world of one for a plain `python launcher/train.py`: the variables a launcher would set (RANK, WORLD_SIZE,
    LOCAL_RANK) and a process group over an in-memory store, so that DeepSpeed neither looks for MPI (it would
    end in an mpi4py import error) nor needs a port."""
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(name, value)
    torch.distributed.init_process_group(backend, store=torch.distributed.HashStore(), rank=0, world_size=1)


def start_distributed(run_dir: str | Path) -> RunContext:
    """Initialise torch.distributed through DeepSpeed (NCCL on GPUs, gloo on CPU) and describe this process.

    Without a launcher (no RANK / WORLD_SIZE, no MPI) the process is a world of one. DeepSpeed's C++ ops build in
    this installation's cache (xfd/engine/ops.py), and a first build is announced before it starts."""
    import deepspeed

    use_installation_cache()
    cuda = torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR", "cuda") != "cpu"
    use_reproducible_cpu_numerics(cpu=not cuda)  # for the process's life
    backend = "nccl" if cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not launched_as_ranks() and not any(name in os.environ for name in _MPI_VARIABLES):
        print("xfd: no launcher environment (RANK / WORLD_SIZE): running as a single process", flush=True)
        start_single_process_group(backend)
    announce_op_build("ShareMemCommBuilder", "the shared-memory all-reduce of CPU ranks")
    deepspeed.init_distributed(dist_backend=backend)
    world = torch.distributed.get_world_size()
    local_world = ranks_on_this_node(world)
    if not cuda:
        unlink_shared_memory_segment(torch.distributed.get_rank(), world, local_world)
        if "OMP_NUM_THREADS" not in os.environ:  # ranks of one CPU node share its cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return RunContext(rank=torch.distributed.get_rank(), world_size=world, local_rank=local_rank,
                      local_world_size=local_world, device=rank_device(local_rank, cuda), run_dir=Path(run_dir))


def use_reproducible_cpu_numerics(cpu: bool) -> Callable[[], None]:
    """Strict MKL conditional numerical reproducibility and, for a CPU device, the plain (not oneDNN) kernels;
    returns a function that puts the previous settings back.

    MKL's CPU matmuls otherwise round differently depending on how their inputs happen to be aligned in memory,
    and oneDNN's CPU convolutions (the patch embedding) pick kernels by layout and alignment: a resumed run (other
    allocations) would drift from the uninterrupted one by an ulp within a few steps, and a tracklet's features
    would depend on its batch and rank. MKL reads MKL_CBWR at its first call, so this must come before any matmul;
    neither costs anything measurable here."""
    had_cbwr, onednn = "MKL_CBWR" in os.environ, torch.backends.mkldnn.enabled
    os.environ.setdefault("MKL_CBWR", MKL_REPRODUCIBLE)
    if cpu:
        torch.backends.mkldnn.enabled = False

    def restore() -> None:
        torch.backends.mkldnn.enabled = onednn
        if not had_cbwr:
            os.environ.pop("MKL_CBWR", None)

    return restore


def shared_memory_segment(rank: int) -> Path:
    """The /dev/shm file DeepSpeed's CPU all-reduce creates for `rank` when every rank is on this node (its name is
    built from the uid, MASTER_ADDR, MASTER_PORT and the rank)."""
    address, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return Path("/dev/shm") / f"deepspeed_allreduce_buffer_{os.getuid()}_{address}_{port}_{rank}"


def unlink_shared_memory_segment(rank: int, world_size: int, local_world_size: int) -> None:
    """Remove this rank's name for DeepSpeed's CPU all-reduce segment once every rank has mapped every segment.

    DeepSpeed never unlinks these (69 MB a rank, a new name for every master port), so each CPU launch, finished
    or killed, would leave them in /dev/shm, which is RAM: a few dozen test sessions fill it. The mappings stay
    valid after the unlink, and the kernel frees the memory when the last rank exits, however it exits. The
    barrier first: a rank still opening the others' segments would otherwise wait for a name that is gone."""
    if world_size != local_world_size:  # DeepSpeed only creates them when all ranks share this node
        return
    torch.distributed.barrier()
    shared_memory_segment(rank).unlink(missing_ok=True)


def ranks_on_this_node(world_size: int) -> int:
    """How many ranks share this node's cores: `deepspeed` says LOCAL_SIZE, `torchrun` LOCAL_WORLD_SIZE; a plain
    process is a world of its own."""
    for name in ("LOCAL_SIZE", "LOCAL_WORLD_SIZE"):
        if os.environ.get(name):
            return int(os.environ[name])
    return world_size


def git_revision(path: Path) -> str | None:
    """The commit of the code that runs (None outside a git checkout), with `-dirty` for uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def write_run_identity(ctx: RunContext, cfg: ExperimentConfig, engine_json: dict, ds_config_path: str,
                       resumed_from: str | None, batches: dict | None = None) -> None:
    """config.yaml (the resolved experiment config) and run.json (command, git revision, world, each stage's
    engine JSON and batch: global batch, micro-batch, accumulation, LR). A resumed run must use the same config: a
    different one is refused (it would not reproduce the run)."""
    if not ctx.is_main:
        return
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    text = dump_config(cfg)
    config_path = ctx.run_dir / "config.yaml"
    if resumed_from is not None and config_path.is_file() and config_path.read_text() != text:
        raise ValueError(f"{config_path}: the run was started with a different config; resume it with the same "
                         "--config and overrides (or start a new --output folder)")
    write_bytes_atomic(config_path, text.encode())
    history = ctx.run_dir / "run.json"
    import json

    launches = json.loads(history.read_text())["launches"] if history.is_file() else []
    threads = torch.get_num_threads()
    if resumed_from is not None and launches and launches[-1].get("threads", threads) != threads:
        warnings.warn(f"{ctx.run_dir}: resuming with {threads} CPU threads a rank where the last launch had "
                      f"{launches[-1]['threads']}; float sums round differently, so the losses will not repeat the "
                      "uninterrupted run's bit for bit (set OMP_NUM_THREADS to match)")
    launches.append({
        "command": [sys.executable, *sys.argv],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_revision(Path(__file__).resolve().parent),
        "world_size": ctx.world_size,
        "threads": threads,  # CPU threads a rank: part of what makes a resumed run's floats repeat exactly
        "device": str(ctx.device),
        "deepspeed_config": ds_config_path,
        "deepspeed_config_resolved": engine_json,
        "batches": batches,
        "resumed_from": resumed_from,
        "versions": _versions(),
    })
    write_json_atomic(history, {"launches": launches})


def _versions() -> dict:
    import deepspeed
    import open_clip

    import xfd

    return {"xfd": xfd.__version__, "torch": torch.__version__, "deepspeed": deepspeed.__version__,
            "open_clip": open_clip.__version__, "python": sys.version.split()[0]}
