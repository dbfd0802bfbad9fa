"""Which frames of a tracklet to use (docs/model.md).

A tracklet of n frames is split into L equal chunks. Training takes one random frame from each chunk
(restricted random sampling); evaluation takes the first frame of each chunk (evenly spaced), or, densely, every
frame in consecutive clips of L. A tracklet (or last clip) shorter than L repeats its last frame. The shard tool
uses the evenly spaced form to cap very long tracklets.
"""

from __future__ import annotations

import numpy as np


def _chunk_starts(n: int, count: int) -> np.ndarray:
    return (np.arange(count + 1) * n) // count  # (count + 1,) chunk boundaries


def _padded(n: int, count: int) -> list[int]:
    return list(range(n)) + [n - 1] * (count - n)


def evenly_spaced_indices(n: int, count: int) -> list[int]:
    """First frame of each of `count` equal chunks of `range(n)`; all frames (padded with the last) if n <= count."""
    if n <= 0 or count <= 0:
        raise ValueError(f"need a non-empty tracklet and a positive frame count, got n={n}, count={count}")
    if n <= count:
        return _padded(n, count)
    return _chunk_starts(n, count)[:-1].tolist()


def restricted_random_indices(n: int, count: int, rng: np.random.Generator) -> list[int]:
    """One uniformly random frame from each of `count` equal chunks; padded with the last frame if n < count."""
    if n <= 0 or count <= 0:
        raise ValueError(f"need a non-empty tracklet and a positive frame count, got n={n}, count={count}")
    if n < count:
        return _padded(n, count)
    bounds = _chunk_starts(n, count)
    return rng.integers(bounds[:-1], bounds[1:]).tolist()


def clip_indices(n: int, count: int) -> list[list[int]]:
    """Every frame of `range(n)` in consecutive clips of `count`; the last clip is padded with its last frame."""
    if n <= 0 or count <= 0:
        raise ValueError(f"need a non-empty tracklet and a positive frame count, got n={n}, count={count}")
    clips = [list(range(start, min(start + count, n))) for start in range(0, n, count)]
    clips[-1] += [clips[-1][-1]] * (count - len(clips[-1]))
    return clips
