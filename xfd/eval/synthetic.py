"""Synthetic ReID features with identities and cameras, for tests, benchmarks and demos of the evaluation code.

Each identity has a random unit centre; each camera adds a shared offset (the cross-view domain gap); each
tracklet adds its own noise; features are L2-normalised. Queries and gallery items draw identities from one pool
and cameras at random, so same-pid-same-camid junk and queries without a match both occur.
"""

from __future__ import annotations

import numpy as np

from xfd.eval.protocol import ProtocolData


def reid_features(n_query: int, n_gallery: int, dim: int, n_ids: int, n_cams: int = 3, camera_shift: float = 0.5,
                  noise: float = 1.8, dtype=np.float32, seed: int = 0, chunk_rows: int = 16384,
                  name: str = "synthetic") -> ProtocolData:
    """Clustered, L2-normalised features: unit identity centres + camera offset + noise (both scaled per
    dimension so their norms are about `camera_shift` and `noise`). Generated in row chunks, so memory stays
    close to the size of the result even for hundreds of thousands of rows."""
    rng = np.random.default_rng(seed)
    centres = _unit_rows(rng.standard_normal((n_ids, dim))).astype(dtype)
    cameras = (rng.standard_normal((n_cams, dim)) * (camera_shift / np.sqrt(dim))).astype(dtype)
    noise_scale = np.dtype(dtype).type(noise / np.sqrt(dim))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pids = rng.integers(0, n_ids, n)
        camids = rng.integers(0, n_cams, n)
        x = np.empty((n, dim), dtype=dtype)
        for start in range(0, n, chunk_rows):
            rows = slice(start, min(start + chunk_rows, n))
            chunk = rng.standard_normal((rows.stop - rows.start, dim), dtype=np.float32).astype(dtype)
            chunk *= noise_scale
            chunk += centres[pids[rows]]
            chunk += cameras[camids[rows]]
            x[rows] = _unit_rows(chunk)
        return x, pids, camids

    q_feats, q_pids, q_camids = draw(n_query)
    g_feats, g_pids, g_camids = draw(n_gallery)
    return ProtocolData(name, q_feats, g_feats, q_pids, g_pids, q_camids, g_camids)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)
