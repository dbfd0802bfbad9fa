"""How a stage's global batch is spread over the ranks: the per-rank micro-batch and the gradient accumulation.

The experiment config gives global batches (paper 001: 48 tracklets in stage 1, 24 = P x K in stage 2); the world
size only decides who computes which part. Each optimizer step takes one global batch of G tracklets, cut into
`accumulation` consecutive micro-steps of G / accumulation tracklets, each of which the W ranks share in
consecutive slices of `micro` = G / (accumulation x W):

    global batch  [ micro-step 0: rank 0 | rank 1 | ... | rank W-1 ][ micro-step 1: ... ] ...

Accumulation is 1 unless `train.max_micro_batch` caps what a rank may run at once; then it is the smallest count
that meets the cap. In stage 2 a micro-step always holds whole identities (K consecutive tracklets), so that the
batch losses of a micro-step, computed on the features gathered from all ranks, see every positive. A world
size that cannot share the batch evenly is refused with the sizes that can.
"""

from __future__ import annotations

from dataclasses import dataclass

from xfd.config import TrainConfig


class BatchSizeError(ValueError):
    """The global batch cannot be shared by this world size (or under this micro-batch cap); names both."""


@dataclass(frozen=True)
class BatchPlan:
    """One stage's batch: `global_batch` tracklets an optimizer step = `micro` a rank x `accumulation` x `world`."""

    global_batch: int
    world_size: int
    micro: int
    accumulation: int
    group: int = 1  # tracklets that must stay in one micro-step (K in stage 2)

    @property
    def per_micro_step(self) -> int:
        """Tracklets of one micro-step over all ranks: what a batch loss sees."""
        return self.micro * self.world_size

    def as_record(self) -> dict:
        return {"global_batch": self.global_batch, "micro_batch": self.micro, "accumulation": self.accumulation,
                "world_size": self.world_size}


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _accumulations(global_batch: int, world_size: int, group: int) -> list[int]:
    """Accumulation counts that split the batch evenly: each micro-step whole groups, each rank an equal share."""
    groups = global_batch // group
    return [a for a in divisors(groups) if (global_batch // a) % world_size == 0]


def plan_batch(global_batch: int, world_size: int, max_micro: int = 0, group: int = 1,
               what: str = "the batch") -> BatchPlan:
    """The micro-batch and accumulation of `global_batch` over `world_size` ranks (see the module docstring)."""
    if global_batch % group:
        raise BatchSizeError(f"{what}: {global_batch} is not a multiple of its group size {group}")
    options = _accumulations(global_batch, world_size, group)
    if not options:
        working = divisors(global_batch)
        below = [w for w in working if w < world_size]
        above = [w for w in working if w > world_size]
        nearest = " or ".join(str(w) for w in ([below[-1]] if below else []) + ([above[0]] if above else []))
        raise BatchSizeError(
            f"{what}: a global batch of {global_batch} tracklets cannot be shared evenly by {world_size} ranks "
            f"({global_batch} / {world_size} = {global_batch / world_size:.2f} a rank). Nearest world sizes that work: "
            f"{nearest} (any divisor of {global_batch}: {', '.join(map(str, working))}); or choose another batch "
            "size, with the stage's lr_scaling for its LR")
    for accumulation in options:
        micro = global_batch // (accumulation * world_size)
        if not max_micro or micro <= max_micro:
            return BatchPlan(global_batch, world_size, micro, accumulation, group)
    caps = sorted({global_batch // (a * world_size) for a in options})
    raise BatchSizeError(
        f"{what}: train.max_micro_batch={max_micro} cannot be met with {world_size} ranks: a rank's share of the "
        f"{global_batch}-tracklet batch splits only into micro-batches of {', '.join(map(str, caps))}"
        + (f" (micro-steps must hold whole groups of {group})" if group > 1 else "")
        + f"; the nearest that works is {min(caps, key=lambda c: (abs(c - max_micro), c))}")


def stage_batch(train: TrainConfig, stage: int, world_size: int) -> BatchPlan:
    """The batch plan of stage 1 (cached features) or stage 2 (PK batches: whole identities per micro-step)."""
    if stage == 1:
        return plan_batch(train.stage1.batch_size, world_size, train.max_micro_batch,
                          what="stage 1 (train.stage1.batch_size)")
    return plan_batch(train.stage2.batch_size, world_size, train.max_micro_batch, group=train.instances,
                      what=f"stage 2 (train.stage2.batch_size = P {train.identities} x K {train.instances})")
