"""PKSampler: global P·K batches, epochs that pass over the tracklets, ranks holding consecutive slices of one
global batch (the same global batches whatever the world size), determinism."""

from __future__ import annotations

import itertools
import math

import pytest

from xfd.data.pk import PKSampler


def _groups(counts: list[int]) -> dict[int, list[str]]:
    """label → keys `<label>_<j>`; the label is recoverable from the key."""
    return {label: [f"{label}_{j}" for j in range(count)] for label, count in enumerate(counts)}


def _label(key: str) -> int:
    return int(key.split("_")[0])


COUNTS = [1, 2, 3, 4, 5, 2, 6, 1, 3, 4, 2, 9]  # 12 identities, 42 tracklets; K = 2 → 24 chunks


@pytest.mark.parametrize("identities, instances", [(2, 2), (3, 2), (4, 3), (6, 2)])
def test_steps_are_full_pk_batches_of_distinct_identities(identities, instances):
    sampler = PKSampler(_groups(COUNTS), identities, instances, seed=3)
    chunks = sum(math.ceil(max(n, instances) / instances) for n in COUNTS)
    plan = sampler.epoch_plan(0)
    assert len(plan) == sampler.optimizer_steps_per_epoch() == math.ceil(chunks / identities)
    for batch in plan:
        assert len(batch) == identities * instances
        blocks = [batch[i:i + instances] for i in range(0, len(batch), instances)]
        assert all(len({_label(key) for key in block}) == 1 for block in blocks)  # K consecutive share a label
        assert len({_label(block[0]) for block in blocks}) == identities  # P distinct identities
        for block in blocks:  # distinct tracklets whenever the identity has K of them
            if COUNTS[_label(block[0])] >= instances:
                assert len(set(block)) == instances


def test_an_epoch_passes_over_every_tracklet():
    counts = [4, 8, 4, 12, 4, 8, 4, 4]  # 48 tracklets, whole chunks of K = 4: 12 chunks, P = 3 → 4 steps
    sampler = PKSampler(_groups(counts), identities=3, instances=4, seed=1)
    assert sampler.optimizer_steps_per_epoch() == 48 // 12  # len(tracklets) / (P·K)
    for epoch in range(3):
        seen = [key for batch in sampler.epoch_plan(epoch) for key in batch]
        assert sorted(seen) == sorted(k for keys in _groups(counts).values() for k in keys)  # each exactly once
    uneven = PKSampler(_groups(COUNTS), identities=3, instances=2, seed=2)
    seen = {key for batch in uneven.epoch_plan(0) for key in batch}
    assert seen == {k for keys in _groups(COUNTS).values() for k in keys}  # all, some twice (chunk fill)


def test_the_epoch_counts_tracklets_not_identities():
    few_ids_many_tracklets = PKSampler(_groups([40] * 6), identities=2, instances=4)
    assert few_ids_many_tracklets.optimizer_steps_per_epoch() == 240 // 8  # 30 steps, not 6 / 2 = 3


@pytest.mark.parametrize("world_size, accumulation", [(1, 1), (2, 1), (4, 1), (2, 2), (1, 3)])
def test_ranks_and_micro_steps_hold_consecutive_slices_of_one_global_batch(world_size, accumulation):
    """Whatever the world size and accumulation, the ranks' micro-batches joined in (micro-step, rank) order are
    the global batches of the one-process plan."""
    one = PKSampler(_groups(COUNTS), 6, 2, seed=9)
    many = PKSampler(_groups(COUNTS), 6, 2, world_size=world_size, seed=9, accumulation=accumulation)
    assert many.batch_size * world_size * accumulation == 12
    assert many.steps_per_epoch() == one.steps_per_epoch() * accumulation
    for epoch in (0, 3):
        joined = []
        for step in range(many.steps_per_epoch()):
            micro_step = [key for rank in range(world_size) for key in many.batch(epoch, step, rank)]
            labels = [_label(key) for key in micro_step]
            assert all(labels.count(label) % 2 == 0 for label in labels)  # whole identities per micro-step
            joined += micro_step
        assert joined == [key for batch in one.epoch_plan(epoch) for key in batch]


def test_deterministic_per_seed_and_epoch():
    def sampler(seed):
        return PKSampler(_groups(COUNTS), 3, 2, world_size=3, seed=seed)

    assert sampler(5).epoch_plan(1) == sampler(5).epoch_plan(1)
    assert sampler(5).epoch_plan(1) != sampler(5).epoch_plan(2)
    assert sampler(5).epoch_plan(1) != sampler(6).epoch_plan(1)
    fresh, used = sampler(5), sampler(5)
    used.epoch_plan(7)  # a cached plan of another epoch changes nothing
    for step, rank in itertools.product(range(fresh.steps_per_epoch()), range(3)):
        assert fresh.batch(1, step, rank) == used.batch(1, step, rank)


def test_an_identity_larger_than_the_epoch_is_drawn_every_step():
    counts = [2, 2, 2, 40]  # identity 3 has 20 chunks of K = 2; 23 chunks / P = 2 → 12 steps
    sampler = PKSampler(_groups(counts), 2, 2, seed=0)
    plan = sampler.epoch_plan(0)
    assert len(plan) == 12
    # drawn in proportion to its chunks left, then every step once the others are used up; P stays distinct
    assert all(3 in {_label(key) for key in batch} for batch in plan)
    assert all(len({_label(key) for key in batch}) == 2 for batch in plan)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="at least P = 4 identities"):
        PKSampler(_groups([2, 2, 2]), 4, 2)
    with pytest.raises(ValueError, match="without tracklets"):
        PKSampler({0: ["a"], 1: []}, 1, 2)
    with pytest.raises(ValueError, match="cannot be shared by 3 ranks"):
        PKSampler(_groups(COUNTS), 2, 2, world_size=3)
    with pytest.raises(ValueError, match="whole identities"):
        PKSampler(_groups(COUNTS), 3, 2, accumulation=2)
    sampler = PKSampler(_groups([2, 2]), 1, 2)
    with pytest.raises(IndexError):
        sampler.batch(0, sampler.steps_per_epoch(), 0)
    with pytest.raises(IndexError):
        sampler.batch(0, 0, 1)
