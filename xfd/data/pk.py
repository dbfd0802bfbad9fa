"""PK identity batching: each micro-batch holds P identities × K tracklets, on every rank.

The triplet loss needs positives (K tracklets of an identity) and negatives (P identities) inside each batch.
One epoch is one pass over the identities: they are shuffled by `np.random.default_rng([seed, epoch])`, and
step s takes the next P·world_size of them; rank r gets the contiguous block r·P … (r+1)·P − 1, so the ranks of
a step see disjoint identities (no identity is a positive on two ranks at once).

Last step: when the identity count is not a multiple of P·world, the last step is filled up with identities
from the start of the epoch's permutation (those are in earlier steps, never already in the last one). Every
identity is thus seen at least once per epoch, a few twice, and every step is full — a fixed batch shape for
DALI and DeepSpeed.

Tracklets: an identity with ≥ K tracklets gives K distinct ones drawn at random; one with fewer gives all of
them plus repeats drawn at random up to K. The draw is seeded by (seed, epoch, step, label), so the plan is a
pure function of (seed, epoch) whatever the rank that asks, and — because draws do not depend on the rank —
the plan for (P·W identities, 1 rank) is the concatenation over ranks of the plan for (P, W ranks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PKSampler:
    """Which tracklet keys go into each (epoch, step, rank) micro-batch: P·K keys, identity by identity."""

    labels_to_keys: dict[int, list[str]]
    identities: int  # P per rank per micro-batch
    instances: int  # K
    world_size: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.identities < 1 or self.instances < 1 or self.world_size < 1:
            raise ValueError(f"P, K and world_size must be >= 1, got P={self.identities}, K={self.instances}, "
                             f"world_size={self.world_size}")
        empty = [label for label, keys in self.labels_to_keys.items() if not keys]
        if empty:
            raise ValueError(f"identities without tracklets: {empty[:5]}")
        if len(self.labels_to_keys) < self.per_step:
            raise ValueError(f"PK sampling needs at least P·world_size = {self.identities}·{self.world_size} = "
                             f"{self.per_step} identities, the data has {len(self.labels_to_keys)}; lower P "
                             f"(identities per rank) or the number of ranks")

    @property
    def per_step(self) -> int:
        """Distinct identities in one step across all ranks."""
        return self.identities * self.world_size

    @property
    def batch_size(self) -> int:
        """Tracklets per rank per micro-batch: P·K."""
        return self.identities * self.instances

    def steps_per_epoch(self) -> int:
        return -(-len(self.labels_to_keys) // self.per_step)  # ceil

    def _permutation(self, epoch: int) -> list[int]:
        labels = sorted(self.labels_to_keys)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(labels))
        return [labels[i] for i in order]

    def _step_identities(self, permutation: list[int], step: int) -> list[int]:
        """The P·world identities of a step; the last is completed from the permutation's start."""
        if not 0 <= step < self.steps_per_epoch():
            raise IndexError(f"step {step} outside 0..{self.steps_per_epoch() - 1}")
        chosen = permutation[step * self.per_step:(step + 1) * self.per_step]
        fill = [label for label in permutation if label not in chosen][:self.per_step - len(chosen)]
        return chosen + fill

    def _instances(self, label: int, epoch: int, step: int) -> list[str]:
        """K keys of one identity: distinct when it has K or more, else all plus random repeats."""
        keys = sorted(self.labels_to_keys[label])
        rng = np.random.default_rng([self.seed, epoch, step, label])
        k = self.instances
        if len(keys) >= k:
            return [keys[i] for i in rng.choice(len(keys), k, replace=False)]
        return keys + [keys[i] for i in rng.integers(0, len(keys), k - len(keys))]

    def _rank_batch(self, identities: list[int], epoch: int, step: int, rank: int) -> list[str]:
        block = identities[rank * self.identities:(rank + 1) * self.identities]
        return [key for label in block for key in self._instances(label, epoch, step)]

    def batch(self, epoch: int, step: int, rank: int) -> list[str]:
        """The P·K keys of one rank's micro-batch; K consecutive keys share a label."""
        if not 0 <= rank < self.world_size:
            raise IndexError(f"rank {rank} outside world of size {self.world_size}")
        identities = self._step_identities(self._permutation(epoch), step)
        return self._rank_batch(identities, epoch, step, rank)

    def epoch_plan(self, epoch: int) -> list[list[list[str]]]:
        """[step][rank] → P·K keys, for the whole epoch."""
        permutation = self._permutation(epoch)
        plan = []
        for step in range(self.steps_per_epoch()):
            identities = self._step_identities(permutation, step)
            plan.append([self._rank_batch(identities, epoch, step, rank) for rank in range(self.world_size)])
        return plan
