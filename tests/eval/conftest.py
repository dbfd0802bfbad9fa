"""Shared test data for evaluation: clustered, L2-normalised features without near-ties in the initial ranking."""

import numpy as np
import pytest

from xfd.eval.reference import dense_normalised_distances


def clustered_features(n, dim, n_clusters, dtype, seed, spread=0.35):
    """n unit vectors around n_clusters random unit centres (identities)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    labels = rng.integers(0, n_clusters, n)
    x = centres[labels] / np.sqrt(dim) + spread * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def min_rank_gap(features, k):
    """Smallest gap between consecutive sorted values among each row's first k + 1 normalised distances: the
    tests compare top-k lists exactly, which needs gaps well above rounding (docs/reranking.md step 2: tests
    avoid ties)."""
    dist = np.sort(dense_normalised_distances(features.astype(np.float64)), axis=1)[:, : k + 2]
    return float(np.diff(dist, axis=1).min())


@pytest.fixture
def make_features():
    return clustered_features


@pytest.fixture
def rank_gap():
    return min_rank_gap
