"""Who an evaluation process is: one rank of a `deepspeed` launch, or the only process of a plain `python` run.

Under the launcher (RANK / WORLD_SIZE in the environment) torch.distributed starts exactly as in training
(`xfd.engine.context.start_distributed`: NCCL on GPUs, gloo on CPU; no DeepSpeed engine, evaluation only needs
the process group for gathering features). A plain run is a world of one without a process group.

Both use the same CPU numerics as training's ranks, strict MKL conditional reproducibility and the plain (not
oneDNN) CPU kernels, because with them a tracklet's features do not depend on its batch neighbours, the thread
count or the rank that computed it: one process then gives bit-identical features to N ranks.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from xfd.engine.context import RunContext, launched_as_ranks, start_distributed, use_reproducible_cpu_numerics


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def evaluation_context(output: str | Path, device: str | None = None) -> Iterator[RunContext]:
    """This process's rank, world and device for the duration of an evaluation.

    `device` (plain runs only; a launch gives each rank its local GPU, or the CPU) defaults to CUDA when present.
    The process group of a launch is destroyed on exit; a plain run's CPU settings are put back.
    """
    if launched_as_ranks():
        if device is not None:
            raise ValueError(f"--device {device}: under the deepspeed launcher each rank uses its local GPU (or "
                             "the CPU with DS_ACCELERATOR=cpu); leave --device out")
        context = start_distributed(output)
        try:
            yield context
        finally:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        return
    chosen = torch.device(device) if device is not None else default_device()
    restore = use_reproducible_cpu_numerics(cpu=chosen.type == "cpu")
    try:
        yield RunContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=chosen, run_dir=Path(output))
    finally:
        restore()


def gather_objects(item, world_size: int) -> list:
    """`item` of every rank, in rank order (collective when world_size > 1)."""
    if world_size == 1:
        return [item]
    items: list = [None] * world_size
    torch.distributed.all_gather_object(items, item)
    return items
