"""One protocol's evaluation data and its file format.

A features file is an .npz with q_feats (q, d), g_feats (g, d), q_pids (q,), g_pids (g,), q_camids (q,),
g_camids (g,) and optionally q_names (q,) and g_names (g,) (strings: tracklet names for the submission CSV).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfd.atomic import atomic_output
from xfd.eval.validate import check_labels

REQUIRED_KEYS = ("q_feats", "g_feats", "q_pids", "g_pids", "q_camids", "g_camids")
OPTIONAL_KEYS = ("q_names", "g_names")


@dataclass(frozen=True)
class ProtocolData:
    """One protocol's features and labels; names are optional (needed for the submission CSV)."""

    name: str
    q_feats: np.ndarray  # (q, d)
    g_feats: np.ndarray  # (g, d)
    q_pids: np.ndarray  # (q,)
    g_pids: np.ndarray  # (g,)
    q_camids: np.ndarray  # (q,)
    g_camids: np.ndarray  # (g,)
    q_names: np.ndarray | None = None  # (q,) str
    g_names: np.ndarray | None = None  # (g,) str

    def __post_init__(self):
        q, g = np.shape(self.q_feats)[0], np.shape(self.g_feats)[0]
        for key, n in (("q_pids", q), ("q_camids", q), ("q_names", q), ("g_pids", g), ("g_camids", g),
                       ("g_names", g)):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, check_labels(f"{self.name}: {key}", value, n))

    @property
    def has_names(self) -> bool:
        return self.q_names is not None and self.g_names is not None

    def arrays(self) -> dict:
        """The npz content: every key of the features-file format that this protocol has."""
        return {key: getattr(self, key) for key in REQUIRED_KEYS + OPTIONAL_KEYS if getattr(self, key) is not None}

    def save_npz(self, path: str | Path) -> None:
        """Write the features file (atomically)."""
        with atomic_output(path, "wb") as handle:
            np.savez(handle, **self.arrays())


def load_npz(path: str | Path, name: str | None = None) -> ProtocolData:
    """Read a features file (keys: q_feats g_feats q_pids g_pids q_camids g_camids [q_names g_names])."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {path}")
    with np.load(path, allow_pickle=False) as npz:
        missing = [key for key in REQUIRED_KEYS if key not in npz.files]
        if missing:
            raise ValueError(f"{path}: missing key(s) {', '.join(missing)}; a features file holds "
                             f"{', '.join(REQUIRED_KEYS)} (+ optional {', '.join(OPTIONAL_KEYS)})")
        arrays = {key: npz[key] for key in REQUIRED_KEYS + OPTIONAL_KEYS if key in npz.files}
    return ProtocolData(name=name or path.stem, **arrays)
