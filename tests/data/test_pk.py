"""PKSampler: disjoint identities across ranks, full coverage, K same-label keys, resampling, determinism."""

from __future__ import annotations

import itertools

import pytest

from xfd.data.pk import PKSampler


def _groups(counts: list[int]) -> dict[int, list[str]]:
    """label → keys `<label>_<j>`; the label is recoverable from the key."""
    return {label: [f"{label}_{j}" for j in range(count)] for label, count in enumerate(counts)}


def _label(key: str) -> int:
    return int(key.split("_")[0])


COUNTS = [1, 2, 3, 4, 5, 2, 6, 1, 3, 4, 2]  # 11 identities: not a multiple of P·world below


@pytest.mark.parametrize("identities, instances, world_size", [(2, 4, 2), (3, 2, 1), (1, 3, 3), (5, 2, 2)])
def test_plan_shape_coverage_and_disjoint_ranks(identities, instances, world_size):
    sampler = PKSampler(_groups(COUNTS), identities, instances, world_size, seed=3)
    plan = sampler.epoch_plan(0)
    per_step = identities * world_size
    assert len(plan) == sampler.steps_per_epoch() == -(-len(COUNTS) // per_step)
    seen = set()
    for step in plan:
        assert len(step) == world_size
        step_labels = []
        for batch in step:
            assert len(batch) == identities * instances
            blocks = [batch[i:i + instances] for i in range(0, len(batch), instances)]
            for block in blocks:  # K consecutive keys share a label
                assert len({_label(key) for key in block}) == 1
            step_labels += [_label(block[0]) for block in blocks]
        assert len(set(step_labels)) == per_step  # distinct identities across the ranks of a step
        seen |= set(step_labels)
    assert seen == set(range(len(COUNTS)))  # every identity at least once
    appearances = sorted(label for step in plan for batch in step for label in {_label(k) for k in batch})
    assert len(appearances) == len(plan) * per_step  # every step full; only the fill identities repeat


def test_instances_are_distinct_when_possible_and_resampled_otherwise():
    sampler = PKSampler(_groups(COUNTS), 2, 3, 1, seed=0)
    for epoch in range(3):
        for step in sampler.epoch_plan(epoch):
            batch = step[0]
            for block in (batch[i:i + 3] for i in range(0, len(batch), 3)):
                label, available = _label(block[0]), COUNTS[_label(block[0])]
                if available >= 3:
                    assert len(set(block)) == 3
                else:  # all of them, plus repeats
                    assert set(block) == {f"{label}_{j}" for j in range(available)}


def test_deterministic_per_seed_and_epoch_and_rank_independent():
    def sampler(seed):
        return PKSampler(_groups(COUNTS), 2, 2, 2, seed=seed)

    assert sampler(5).epoch_plan(1) == sampler(5).epoch_plan(1)
    assert sampler(5).epoch_plan(1) != sampler(5).epoch_plan(2)
    assert sampler(5).epoch_plan(1) != sampler(6).epoch_plan(1)
    plan = sampler(5).epoch_plan(4)
    for step, rank in itertools.product(range(len(plan)), range(2)):
        assert sampler(5).batch(4, step, rank) == plan[step][rank]


def test_one_rank_with_p_times_world_is_the_concatenation_of_ranks():
    wide = PKSampler(_groups(COUNTS), 6, 2, 1, seed=9).epoch_plan(3)
    split = PKSampler(_groups(COUNTS), 2, 2, 3, seed=9).epoch_plan(3)
    assert [[sum(step, [])] for step in split] == wide


def test_last_step_is_filled_from_the_start_of_the_permutation():
    sampler = PKSampler(_groups([2] * 5), 2, 2, 1, seed=1)
    plan = sampler.epoch_plan(0)
    order = [_label(step[0][i]) for step in plan for i in (0, 2)]  # identity order of the epoch
    assert len(plan) == 3 and order[4] not in order[:4] and order[5] == order[0]


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(ValueError, match="at least P·world_size"):
        PKSampler(_groups([2, 2, 2]), 2, 2, 2)
    with pytest.raises(ValueError, match="without tracklets"):
        PKSampler({0: ["a"], 1: []}, 1, 2)
    with pytest.raises(IndexError):
        PKSampler(_groups([2, 2]), 1, 2).batch(0, 2, 0)
