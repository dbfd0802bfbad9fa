"""Frame sampling: restricted random for training; evenly spaced, or every frame in clips, for evaluation
(docs/model.md)."""

import numpy as np
import pytest

from xfd.data.sampling import clip_indices, evenly_spaced_indices, restricted_random_indices


def test_evenly_spaced_takes_first_frame_of_each_chunk():
    assert evenly_spaced_indices(10, 4) == [0, 2, 5, 7]
    assert evenly_spaced_indices(16, 16) == list(range(16))


def test_short_tracklets_repeat_the_last_frame():
    assert evenly_spaced_indices(3, 6) == [0, 1, 2, 2, 2, 2]
    assert restricted_random_indices(3, 5, np.random.default_rng(0)) == [0, 1, 2, 2, 2]


def test_restricted_random_draws_one_frame_inside_each_chunk():
    rng = np.random.default_rng(1)
    n, count = 50, 8
    bounds = (np.arange(count + 1) * n) // count
    seen = set()
    for _ in range(200):
        indices = restricted_random_indices(n, count, rng)
        assert all(bounds[i] <= index < bounds[i + 1] for i, index in enumerate(indices))
        seen.add(tuple(indices))
    assert len(seen) > 150  # random, not a fixed pattern


def test_bad_counts_are_errors():
    with pytest.raises(ValueError):
        evenly_spaced_indices(0, 4)
    with pytest.raises(ValueError):
        restricted_random_indices(5, 0, np.random.default_rng(0))


def test_clips_cover_every_frame_once_and_pad_the_last():
    assert clip_indices(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]]
    assert clip_indices(8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert clip_indices(2, 4) == [[0, 1, 1, 1]]
    for n in range(1, 30):
        clips = clip_indices(n, 6)
        assert all(len(c) == 6 for c in clips) and sorted(set(sum(clips, []))) == list(range(n))
    with pytest.raises(ValueError):
        clip_indices(0, 4)
