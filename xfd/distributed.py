"""Who this process is among the ranks of a launch, and how ranks exchange small Python objects.

Below both `xfd.engine` and `xfd.eval` (and `xfd.inference`, which both use), so that neither needs the other:
training's start-up (`xfd.engine.context.start_distributed`) and evaluation's (`xfd.cli.evaluate`) create the
process group; everything here only reads it. A process without a process group is a world of one.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched_as_ranks() -> bool:
    """True under `deepspeed` (or torchrun): the launcher set this process's rank and world size."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank_label() -> str:
    """" (rank R of W)" for the messages of a process launched as ranks (each rank prints its own errors); "" in
    a plain run."""
    if not launched_as_ranks():
        return ""
    return f" (rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']})"


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def rank_device(local_rank: int, cuda: bool) -> torch.device:
    """The device a rank computes and loads on: its node-local GPU `cuda:{local_rank}`, or the CPU."""
    if local_rank < 0:
        raise ValueError(f"local rank must be >= 0, got {local_rank}")
    return torch.device("cuda", local_rank) if cuda else torch.device("cpu")


def check_world(world_size: int, what: str) -> None:
    """A collective for `world_size` ranks needs an initialised process group of exactly that size."""
    if world_size == 1:
        return
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{what}: world_size is {world_size} but torch.distributed is not initialised")
    if dist.get_world_size() != world_size:
        raise RuntimeError(f"{what}: world_size is {world_size} but the process group has "
                           f"{dist.get_world_size()} ranks")


def gather_objects(item, world_size: int, what: str = "gather_objects") -> list:
    """`item` of every rank, in rank order, on every rank (collective when world_size > 1).

    Items travel pickled (`all_gather_object`); with NCCL each rank must have set its CUDA device first.
    """
    check_world(world_size, what)
    if world_size == 1:
        return [item]
    items: list = [None] * world_size
    dist.all_gather_object(items, item)
    return items
