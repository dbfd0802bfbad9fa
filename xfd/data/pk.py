"""PK identity batching over the global batch: each optimizer step takes P identities × K tracklets, all ranks
together, and one epoch is one pass over the training tracklets.

The triplet loss needs positives (K tracklets of an identity) and negatives (P identities) inside each batch; the
batch is a property of the global step, not of a rank, so the recipe is the same on 1 GPU and on 64.

Epoch plan (a pure function of seed and epoch; the world size plays no part):
- every identity's tracklets are shuffled and cut into chunks of K; a last partial chunk is completed with other
  tracklets of the identity, and an identity with fewer than K tracklets repeats some of them;
- the epoch has ceil(chunks / P) steps: len(tracklets) / (P·K) when every identity's count is a multiple of K,
  more when partial chunks are completed (the demo's 6 tracklets an identity with K = 4 give 2 chunks each: 60
  steps where len(tracklets) / (P·K) is 45). Reference identity samplers (CLIP-ReID's RandomIdentitySampler)
  drop the partial chunk instead (30 steps there), leaving tracklets out of every epoch; here each one is seen;
- each step draws P distinct identities, each with probability proportional to its chunks not yet used, and takes
  the next chunk of each. When fewer than P identities have chunks left, the step is completed with fresh random
  chunks of other identities, so every step is full (a fixed batch shape for DALI and DeepSpeed); chunks still
  unused after the last step (only when one identity holds more chunks than the epoch has steps) wait for the
  next epoch's shuffle.
So every tracklet appears at least once per epoch unless its identity alone outnumbers the epoch's steps.

Ranks: a step's P·K keys, identity by identity (K consecutive keys share a label), are cut into `accumulation`
consecutive micro-steps, each shared by the ranks in consecutive slices of `batch_size` keys
(xfd/engine/batching.py). `batch(epoch, step, rank)` takes `step` as the micro-step index in the epoch, which is
what the loader iterates over.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PKSampler:
    """Which tracklet keys each (epoch, micro-step, rank) gets: a consecutive slice of the global P·K batch."""

    labels_to_keys: dict[int, list[str]]
    identities: int  # P per global batch
    instances: int  # K
    world_size: int = 1
    seed: int = 0
    accumulation: int = 1  # micro-steps per optimizer step
    _plans: dict = field(default_factory=dict, repr=False, compare=False)  # the last epoch's plan, cached

    def __post_init__(self):
        if min(self.identities, self.instances, self.world_size, self.accumulation) < 1:
            raise ValueError(f"P, K, world_size and accumulation must be >= 1, got P={self.identities}, "
                             f"K={self.instances}, world_size={self.world_size}, accumulation={self.accumulation}")
        if self.global_batch % (self.world_size * self.accumulation):
            raise ValueError(f"the global batch P·K = {self.global_batch} cannot be shared by {self.world_size} ranks "
                             f"x {self.accumulation} micro-steps")
        if self.identities % self.accumulation:
            raise ValueError(f"{self.accumulation} micro-steps cannot each hold whole identities of P = "
                             f"{self.identities}")
        empty = [label for label, keys in self.labels_to_keys.items() if not keys]
        if empty:
            raise ValueError(f"identities without tracklets: {empty[:5]}")
        if len(self.labels_to_keys) < self.identities:
            raise ValueError(f"PK sampling needs at least P = {self.identities} identities, the data has "
                             f"{len(self.labels_to_keys)}; lower the batch size (P = batch / K)")

    @property
    def global_batch(self) -> int:
        """Tracklets per optimizer step, all ranks together: P·K."""
        return self.identities * self.instances

    @property
    def batch_size(self) -> int:
        """Tracklets per rank per micro-step."""
        return self.global_batch // (self.world_size * self.accumulation)

    def optimizer_steps_per_epoch(self) -> int:
        chunks = sum(-(-max(len(keys), self.instances) // self.instances) for keys in self.labels_to_keys.values())
        return -(-chunks // self.identities)  # ceil

    def steps_per_epoch(self) -> int:
        """Micro-steps per epoch (what the loader iterates)."""
        return self.optimizer_steps_per_epoch() * self.accumulation

    # ------------------------------------------------------------------ the epoch plan

    def _chunks(self, label: int, rng: np.random.Generator) -> list[list[str]]:
        """The identity's tracklets shuffled into chunks of K, the last completed from the identity's others."""
        keys = sorted(self.labels_to_keys[label])
        k = self.instances
        order = [keys[i] for i in rng.permutation(len(keys))]
        if len(order) < k:
            return [order + [keys[i] for i in rng.integers(0, len(keys), k - len(order))]]
        chunks = [order[i:i + k] for i in range(0, len(order), k)]
        if len(chunks[-1]) < k:
            others = [key for key in order if key not in chunks[-1]]
            chunks[-1] += [others[i] for i in rng.choice(len(others), k - len(chunks[-1]), replace=False)]
        return chunks

    def _fresh_chunk(self, label: int, rng: np.random.Generator) -> list[str]:
        """K random tracklets of an identity whose chunks are used up (distinct when it has K)."""
        keys = sorted(self.labels_to_keys[label])
        if len(keys) >= self.instances:
            return [keys[i] for i in rng.choice(len(keys), self.instances, replace=False)]
        return keys + [keys[i] for i in rng.integers(0, len(keys), self.instances - len(keys))]

    def epoch_plan(self, epoch: int) -> list[list[str]]:
        """[optimizer step] → its P·K keys, identity by identity."""
        if epoch in self._plans:
            return self._plans[epoch]
        rng = np.random.default_rng([self.seed, epoch])
        labels = sorted(self.labels_to_keys)
        remaining = {label: deque(self._chunks(label, rng)) for label in labels}
        plan = []
        for _ in range(self.optimizer_steps_per_epoch()):
            available = [label for label in labels if remaining[label]]
            if len(available) >= self.identities:
                left = np.array([len(remaining[label]) for label in available], dtype=np.float64)
                picked = [available[i] for i in rng.choice(len(available), self.identities, replace=False,
                                                           p=left / left.sum())]
            else:
                spent = [label for label in labels if not remaining[label]]
                extra = rng.choice(len(spent), self.identities - len(available), replace=False)
                picked = [available[i] for i in rng.permutation(len(available))] + [spent[i] for i in extra]
            plan.append([key for label in picked for key in
                         (remaining[label].popleft() if remaining[label] else self._fresh_chunk(label, rng))])
        self._plans.clear()
        self._plans[epoch] = plan
        return plan

    def batch(self, epoch: int, step: int, rank: int) -> list[str]:
        """This rank's keys of micro-step `step` of `epoch`: a consecutive slice of the step's global batch."""
        if not 0 <= rank < self.world_size:
            raise IndexError(f"rank {rank} outside world of size {self.world_size}")
        if not 0 <= step < self.steps_per_epoch():
            raise IndexError(f"step {step} outside 0..{self.steps_per_epoch() - 1}")
        optimizer_step, micro_step = divmod(step, self.accumulation)
        start = (micro_step * self.world_size + rank) * self.batch_size
        return self.epoch_plan(epoch)[optimizer_step][start:start + self.batch_size]
