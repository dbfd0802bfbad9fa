"""What every training step shares: rank-averaged scalars, the non-finite-loss policy, RNG state files and the
checkpoint position a step leaves behind."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from xfd.atomic import write_bytes_atomic


class NonFiniteLoss(RuntimeError):
    """A NaN/inf loss under `train.on_nonfinite: raise`: names stage, epoch, step and the batch."""


def reduced_scalars(loss: torch.Tensor, parts: dict[str, torch.Tensor], world_size: int) -> dict[str, float]:
    """Loss and its parts averaged over ranks (one all-reduce); every rank gets the same numbers, so every rank
    takes the same decision on a non-finite loss."""
    names = ["loss", *parts]
    values = torch.stack([loss.detach().float().reshape(())] + [p.detach().float().reshape(()) for p in
                                                                parts.values()]).cpu()  # (1 + parts,)
    if world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.all_reduce(values)
        values /= world_size
    return dict(zip(names, values.tolist()))


def nonfinite(scalars: dict[str, float]) -> bool:
    return not all(map(lambda v: v == v and abs(v) != float("inf"), scalars.values()))


def nonfinite_message(stage: int, epoch: int, step: int, keys: list[str], scalars: dict[str, float]) -> str:
    shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
    return (f"non-finite loss in stage {stage}, epoch {epoch}, step {step} ({scalars}); this rank's batch: "
            f"[{shown}]. Set train.on_nonfinite=skip to drop such batches instead.")


@dataclass
class Position:
    """Where a run stands: stage, epoch, the next micro-step inside the epoch, optimizer and micro steps done."""

    stage: int = 1
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    micro_steps: int = 0
    skipped_nonfinite: int = 0
    best_map: float = -1.0  # best mean validation mAP so far (the best.safetensors it belongs to)
    stage_start: int = 0  # global_step when the current stage began (its progress bar counts from there)

    def as_state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "Position":
        defaults = asdict(cls())
        return cls(**{k: type(v)(state[k]) for k, v in defaults.items() if k in state})


def rng_file(checkpoint_dir: Path, rank: int) -> Path:
    return checkpoint_dir / f"rng_rank{rank:05d}.safetensors"


def save_rng(checkpoint_dir: Path, rank: int) -> None:
    """This rank's torch RNG states (CPU and, if any, CUDA) beside the DeepSpeed files of a checkpoint."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    write_bytes_atomic(rng_file(checkpoint_dir, rank), save(state))


def restore_rng(checkpoint_dir: Path, rank: int) -> None:
    path = rng_file(checkpoint_dir, rank)
    if not path.is_file():  # a checkpoint written by a different world size: draws restart from the seed
        return
    state = load_file(str(path))
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
