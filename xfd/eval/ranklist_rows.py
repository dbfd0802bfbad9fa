"""What the rank-list picture shows: a seeded sample of queries spread over the protocols, their top-k gallery
tracklets caught from the evaluation's distance blocks, each tracklet's kind under the protocol's junk rule
(`GalleryLabels.matches_and_junk`, the rule the metrics use), and frames read back from the shards by key
(`ShardIndex`: a FeatureSet's keys are the shards' sample keys). Drawing: `xfd.eval.ranklist`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from xfd.data.index import ShardIndex
from xfd.data.sampling import evenly_spaced_indices
from xfd.eval.metrics import GalleryLabels
from xfd.eval.protocol import ProtocolData
from xfd.eval.ranklist import JUNK, MATCH, WRONG, RankListRow

QueryRef = tuple[str, int]  # (protocol name, query row)


def sample_queries(query_counts: dict[str, int], count: int, seed: int) -> list[QueryRef]:
    """`count` queries, shared out over the protocols in turn (protocols without queries get none), each
    protocol's chosen at random without repeats; ordered by protocol (as given), then row."""
    rng = np.random.default_rng(seed)
    names = [name for name, n in query_counts.items() if n > 0]
    shares = dict.fromkeys(names, 0)
    for i in range(min(count, sum(query_counts[n] for n in names))):
        open_names = [n for n in names if shares[n] < query_counts[n]]
        shares[open_names[i % len(open_names)]] += 1
    chosen = []
    for name in names:
        rows = np.sort(rng.choice(query_counts[name], size=shares[name], replace=False))
        chosen += [(name, int(row)) for row in rows]
    return chosen


class TopKCollector:
    """An `on_block(protocol, query indices, (b, G) distances)` callback keeping the first `k` gallery rows of
    the wanted queries' rankings, ordered as the metrics order them (distance, then lower gallery index)."""

    def __init__(self, wanted: list[QueryRef], k: int = 10):
        self.k = k
        self._wanted: dict[str, set[int]] = {}
        for name, row in wanted:
            self._wanted.setdefault(name, set()).add(row)
        self.ranked: dict[QueryRef, np.ndarray] = {}  # (protocol, query row) -> (≤ k,) gallery rows

    def __call__(self, name: str, indices: np.ndarray, block: np.ndarray) -> None:
        wanted = self._wanted.get(name)
        if not wanted:
            return
        for r, query in enumerate(np.asarray(indices).tolist()):
            if query in wanted:
                order = np.argsort(np.asarray(block[r]), kind="stable")  # (G,) ties to the lower gallery row
                self.ranked[(name, query)] = order[: self.k]


def gallery_kinds(labels: GalleryLabels, pid: int, camid: int, ranked: np.ndarray) -> list[str]:
    """MATCH / WRONG / JUNK for each ranked gallery row, by the metrics' own match and junk rule."""
    matches, junk = labels.matches_and_junk(pid, camid)
    matches, junk = set(matches.tolist()), set(junk.tolist())
    return [MATCH if g in matches else JUNK if g in junk else WRONG for g in np.asarray(ranked).tolist()]


def decode_frame(jpeg: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of one encoded frame."""
    with Image.open(io.BytesIO(jpeg)) as image:
        return np.asarray(image.convert("RGB"))


def tracklet_frames(index: ShardIndex, key: str, count: int) -> list[np.ndarray]:
    """`count` evenly spaced frames of a tracklet (fewer if it has fewer)."""
    n = index.num_frames(key)
    return [decode_frame(b) for b in index.frames(key, evenly_spaced_indices(n, min(count, n)))]


def middle_frame(index: ShardIndex, key: str) -> np.ndarray:
    return decode_frame(index.frames(key, [index.num_frames(key) // 2])[0])


def ranklist_rows(protocols: dict[str, ProtocolData], folders: dict[str, tuple[Path, Path]],
                  ranked: dict[QueryRef, np.ndarray], query_frames: int = 4) -> list[RankListRow]:
    """One row per ranked query (in `ranked`'s order). `folders`: protocol -> (query, gallery) shard-set
    folders; protocols need their tracklet names (the shards' sample keys)."""
    indexes: dict[Path, ShardIndex] = {}

    def index_of(folder: Path) -> ShardIndex:
        if folder not in indexes:
            indexes[folder] = ShardIndex.open(folder)
        return indexes[folder]

    labels = {name: GalleryLabels(p.g_pids, p.g_camids) for name, p in protocols.items()}
    rows = []
    try:
        for (name, q), gallery_rows in ranked.items():
            data = protocols[name]
            if not data.has_names:
                raise ValueError(f"protocol {name}: the rank list needs tracklet names (q_names, g_names)")
            query_folder, gallery_folder = folders[name]
            pid, camid = int(data.q_pids[q]), int(data.q_camids[q])
            gallery = index_of(gallery_folder)
            rows.append(RankListRow(
                title=f"{name}  query {data.q_names[q]}  pid {pid}  cam {camid}",
                query_frames=tracklet_frames(index_of(query_folder), str(data.q_names[q]), query_frames),
                gallery_frames=[middle_frame(gallery, str(data.g_names[g])) for g in gallery_rows],
                kinds=gallery_kinds(labels[name], pid, camid, gallery_rows),
                captions=[f"{int(data.g_pids[g])}/c{int(data.g_camids[g])}" for g in gallery_rows],
            ))
    finally:
        for index in indexes.values():
            index.close()
    return rows
