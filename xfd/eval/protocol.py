"""One protocol's evaluation data, built in one place: from extracted feature sets (a shard root's query and gallery
splits, or a held-out split cut by platform) or from a features file.

Features file (.npz, `numpy.savez`; README "Features file"):
- q_feats (q, d), g_feats (g, d): L2-normalised features;
- q_pids, g_pids, q_camids, g_camids (q,)/(g,) integers: identities and cameras (junk rule);
- optional q_names, g_names: tracklet folder names (the submission's names); q_keys, g_keys: shard sample keys
  where they differ from the names (the rank list reads frames by key);
- optional q_meta_<column>, g_meta_<column>: per-tracklet metadata (`xfd.inference.TRACKLET_COLUMNS`: session,
  capture point and bins, identity folder) for per-condition analysis and the submission's order;
- an unlabelled protocol (anonymised test split) has `labelled` = False and no pids (camids optional).
Files without the optional keys (older xfd) still load. A file that is empty, not an .npz, holds pickled objects,
lacks a key or has labels that are not integers is a ValueError naming the file and the key.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from xfd.atomic import atomic_output
from xfd.data.encoding import AERIAL, GROUND, UNKNOWN
from xfd.eval.validate import check_labels

REQUIRED_KEYS = ("q_feats", "g_feats", "q_pids", "g_pids", "q_camids", "g_camids")
OPTIONAL_KEYS = ("q_names", "g_names", "q_keys", "g_keys")
LABELLED_KEY = "labelled"
META_PREFIX = {"q": "q_meta_", "g": "g_meta_"}
# Held-out validation's protocols: (query platform, gallery platform)
PROTOCOL_PLATFORMS = {"A2G": (AERIAL, GROUND), "G2A": (GROUND, AERIAL), "A2A": (AERIAL, AERIAL)}


def check_integer_labels(name: str, values, n: int | None = None) -> np.ndarray:
    """(n,) int64 labels: integer arrays pass, floats only when every value is a whole number; anything else
    (strings, fractions, NaN, booleans, objects) is a ValueError naming the array and its first bad entry."""
    arr = check_labels(name, values, n)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if not bad.size:
            return arr.astype(np.int64)
        raise ValueError(f"{name} must be integers: entry {int(bad[0])} is {arr[bad[0]]!r}")
    first = f"; entry 0 is {arr[0]!r}" if arr.size else ""
    raise ValueError(f"{name} must be integers, got dtype {arr.dtype}{first}")


def _check_meta(where: str, columns: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    checked = {}
    for column, values in columns.items():
        arr = check_labels(f"{where} metadata column {column!r}", values, n)
        if arr.dtype.kind not in "iufU":
            raise ValueError(f"{where} metadata column {column!r} must be numbers or strings, got dtype {arr.dtype}")
        checked[column] = arr
    return checked


@dataclass(frozen=True)
class ProtocolData:
    """One protocol's features and labels. Pids are None for an unlabelled protocol (identities unknown);
    names, keys and metadata columns are optional."""

    name: str
    q_feats: np.ndarray  # (q, d)
    g_feats: np.ndarray  # (g, d)
    q_pids: np.ndarray | None  # (q,) int64
    g_pids: np.ndarray | None  # (g,) int64
    q_camids: np.ndarray | None = None  # (q,) int64; None only when unlabelled (then all UNKNOWN)
    g_camids: np.ndarray | None = None  # (g,)
    q_names: np.ndarray | None = None  # (q,) str: tracklet folder names
    g_names: np.ndarray | None = None  # (g,) str
    q_keys: np.ndarray | None = None  # (q,) str: shard sample keys where they differ from the names
    g_keys: np.ndarray | None = None  # (g,) str
    q_meta: dict = field(default_factory=dict)  # column -> (q,)
    g_meta: dict = field(default_factory=dict)  # column -> (g,)

    def __post_init__(self):
        q, g = np.shape(self.q_feats)[0], np.shape(self.g_feats)[0]
        if (self.q_pids is None) != (self.g_pids is None):
            raise ValueError(f"{self.name}: give both q_pids and g_pids (labelled) or neither (unlabelled)")
        for side, n in (("q", q), ("g", g)):
            if getattr(self, f"{side}_pids") is not None:
                object.__setattr__(self, f"{side}_pids",
                                   check_integer_labels(f"{self.name}: {side}_pids", getattr(self, f"{side}_pids"), n))
                if getattr(self, f"{side}_camids") is None:
                    raise ValueError(f"{self.name}: a labelled protocol needs {side}_camids (the junk rule)")
            camids = getattr(self, f"{side}_camids")
            object.__setattr__(self, f"{side}_camids", np.full(n, UNKNOWN, np.int64) if camids is None else
                               check_integer_labels(f"{self.name}: {side}_camids", camids, n))
            for key in (f"{side}_names", f"{side}_keys"):
                if getattr(self, key) is not None:
                    object.__setattr__(self, key, check_labels(f"{self.name}: {key}", getattr(self, key), n))
            meta = _check_meta(f"{self.name}: {side}", getattr(self, f"{side}_meta"), n)
            object.__setattr__(self, f"{side}_meta", meta)

    @property
    def labelled(self) -> bool:
        return self.q_pids is not None

    @property
    def num_queries(self) -> int:
        return int(np.shape(self.q_feats)[0])

    @property
    def num_gallery(self) -> int:
        return int(np.shape(self.g_feats)[0])

    @property
    def has_names(self) -> bool:
        return self.q_names is not None and self.g_names is not None

    def keys(self, side: str) -> np.ndarray | None:
        """Shard sample keys of side "q" or "g" (the names where no separate keys were stored)."""
        keys = getattr(self, f"{side}_keys")
        return keys if keys is not None else getattr(self, f"{side}_names")

    def arrays(self) -> dict:
        """The npz content: every key of the features-file format that this protocol has."""
        out = {key: getattr(self, key) for key in REQUIRED_KEYS + OPTIONAL_KEYS if getattr(self, key) is not None}
        if not self.labelled:
            out[LABELLED_KEY] = np.array(False)
            if (self.q_camids == UNKNOWN).all() and (self.g_camids == UNKNOWN).all():
                del out["q_camids"], out["g_camids"]
        for side, prefix in META_PREFIX.items():
            out.update({prefix + column: values for column, values in getattr(self, f"{side}_meta").items()})
        return out

    def save_npz(self, path: str | Path) -> None:
        """Write the features file (atomically)."""
        with atomic_output(path, "wb") as handle:
            np.savez(handle, **self.arrays())


def load_npz(path: str | Path, name: str | None = None) -> ProtocolData:
    """Read a features file (module docstring); every problem is an error naming the file (and the key)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not a features file (.npz)")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            npy = handle.read(6) == b"\x93NUMPY"
        raise ValueError(f"{path}: not a features file (.npz): "
                         + ("a single-array .npy file" if npy else "not a zip archive of arrays (numpy.savez)"))
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
            labelled = _labelled_flag(path, npz) if LABELLED_KEY in files else True
            needed = REQUIRED_KEYS if labelled else ("q_feats", "g_feats")
            missing = [key for key in needed if key not in files]
            if missing:
                raise ValueError(f"{path}: missing key(s) {', '.join(missing)}; a features file holds "
                                 f"{', '.join(REQUIRED_KEYS)} (+ optional {', '.join(OPTIONAL_KEYS)})")
            if not labelled and {"q_pids", "g_pids"} & files:
                raise ValueError(f"{path}: holds pids but says {LABELLED_KEY} = False")
            arrays = {key: _read(path, npz, key) for key in REQUIRED_KEYS + OPTIONAL_KEYS if key in files}
            meta = {side: {key[len(prefix):]: _read(path, npz, key) for key in sorted(files) if key.startswith(prefix)}
                    for side, prefix in META_PREFIX.items()}
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise ValueError(f"{path}: damaged features file (.npz): {error}") from None
    arrays.setdefault("q_pids", None)
    arrays.setdefault("g_pids", None)
    try:
        return ProtocolData(name=name or path.stem, q_meta=meta["q"], g_meta=meta["g"], **arrays)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _read(path: Path, npz, key: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as error:  # an object array: loading it would unpickle
        raise ValueError(f"{path}: key {key} cannot be read without unpickling ({error}); store plain arrays") from None


def _labelled_flag(path: Path, npz) -> bool:
    flag = _read(path, npz, LABELLED_KEY)
    if flag.shape != () or flag.dtype != bool:
        raise ValueError(f"{path}: key {LABELLED_KEY} must be a single boolean, got {flag.dtype} {flag.shape}")
    return bool(flag)


def from_feature_sets(name: str, query, gallery) -> ProtocolData:
    """A protocol from the query and gallery `xfd.inference.FeatureSet`s (features, labels, names, metadata)."""
    if query.labelled != gallery.labelled:
        raise ValueError(f"{name}: the query side is {'' if query.labelled else 'un'}labelled but the gallery "
                         f"side is {'' if gallery.labelled else 'un'}labelled")
    sides = {}
    for side, features in (("q", query), ("g", gallery)):
        names = np.array(features.names, dtype=str)
        keys = np.array(features.keys, dtype=str)
        sides.update({f"{side}_feats": features.features, f"{side}_pids": features.pids,
                      f"{side}_camids": features.camids, f"{side}_names": names,
                      f"{side}_keys": None if np.array_equal(names, keys) else keys,
                      f"{side}_meta": {"platform": features.platform, **{k: v for k, v in features.meta.items()
                                                                          if k != "name"}}})
    return ProtocolData(name=name, **sides)


def platform_protocols(features) -> dict[str, ProtocolData]:
    """Held-out validation's A2G, G2A and A2A from one labelled split (`xfd.inference.FeatureSet`) by platform:
    aerial queries against the ground tracklets, ground against aerial, aerial against all aerial ones (the
    queries included: the junk rule, same pid AND same camid, removes each query from its own ranking, with its
    same-camera twins). A side may be empty; `xfd.eval.score` then says the protocol cannot be scored."""
    return {name: from_feature_sets(name, features.select(features.platform == query),
                                    features.select(features.platform == gallery))
            for name, (query, gallery) in PROTOCOL_PLATFORMS.items()}
