"""Synthetic ReID features with identities and cameras, for tests, benchmarks and demos of the evaluation code.

Each identity has a random unit centre; each camera adds a shared offset (the cross-view domain gap); each
tracklet adds its own noise; features are L2-normalised. Queries and gallery items draw identities from one pool
and cameras at random, so same-pid-same-camid junk and queries without a match both occur.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureSet:
    """One protocol's features and labels, in the layout of the `xfd-eval` npz file."""

    q_feats: np.ndarray  # (q, d)
    g_feats: np.ndarray  # (g, d)
    q_pids: np.ndarray  # (q,)
    g_pids: np.ndarray  # (g,)
    q_camids: np.ndarray  # (q,)
    g_camids: np.ndarray  # (g,)

    def as_dict(self) -> dict:
        return dict(q_feats=self.q_feats, g_feats=self.g_feats, q_pids=self.q_pids, g_pids=self.g_pids,
                    q_camids=self.q_camids, g_camids=self.g_camids)


def reid_features(n_query: int, n_gallery: int, dim: int, n_ids: int, n_cams: int = 3, camera_shift: float = 0.5,
                  noise: float = 1.8, dtype=np.float32, seed: int = 0) -> FeatureSet:
    """Clustered, L2-normalised features: unit identity centres + camera offset + noise (both scaled per
    dimension so their norms are about `camera_shift` and `noise`)."""
    rng = np.random.default_rng(seed)
    centres = _unit_rows(rng.standard_normal((n_ids, dim)))
    cameras = rng.standard_normal((n_cams, dim)) * (camera_shift / np.sqrt(dim))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pids = rng.integers(0, n_ids, n)
        camids = rng.integers(0, n_cams, n)
        x = centres[pids] + cameras[camids] + rng.standard_normal((n, dim)) * (noise / np.sqrt(dim))
        return _unit_rows(x).astype(dtype), pids, camids

    q_feats, q_pids, q_camids = draw(n_query)
    g_feats, g_pids, g_camids = draw(n_gallery)
    return FeatureSet(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)
