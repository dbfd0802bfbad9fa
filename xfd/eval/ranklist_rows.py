"""What the rank-list picture shows: a seeded sample of queries spread over the protocols, their top-k gallery
tracklets as scoring kept them (`QueryScores.top`), each tracklet's kind under the protocol's junk rule
(`GalleryLabels.matches_and_junk`, the rule the metrics use; "unknown" on an unlabelled split), and frames read
back from the shards by key (`ShardIndex`; a protocol's keys are the shards' sample keys). Drawing:
`xfd.eval.ranklist`.
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
from xfd.eval.ranklist import JUNK, MATCH, UNKNOWN, WRONG, RankListRow
from xfd.eval.score import Results

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


def ranked_queries(results: Results, wanted: list[QueryRef], k: int) -> dict[QueryRef, np.ndarray]:
    """(protocol, query row) -> its first `k` gallery rows, best first, as scoring kept them (the metrics' order:
    distance, then lower gallery row); queries of protocols that were not ranked are left out."""
    ranked = {}
    for name, row in wanted:
        scores = results.protocols[name].queries
        if scores is not None:
            top = scores.top[row, :k]
            ranked[(name, row)] = top[top >= 0]
    return ranked


def gallery_kinds(labels: GalleryLabels | None, pid: int | None, camid: int, ranked: np.ndarray) -> list[str]:
    """MATCH / WRONG / JUNK for each ranked gallery row, by the metrics' own match and junk rule; UNKNOWN for all
    of them without labels (an unlabelled split)."""
    if labels is None or pid is None:
        return [UNKNOWN] * len(ranked)
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

    labels = {name: GalleryLabels(p.g_pids, p.g_camids) if p.labelled else None for name, p in protocols.items()}
    rows = []
    try:
        for (name, q), gallery_rows in ranked.items():
            data = protocols[name]
            if not data.has_names:
                raise ValueError(f"protocol {name}: the rank list needs tracklet names (q_names, g_names)")
            query_folder, gallery_folder = folders[name]
            q_keys, g_keys = data.keys("q"), data.keys("g")
            pid = int(data.q_pids[q]) if data.labelled else None
            camid = int(data.q_camids[q])
            gallery = index_of(gallery_folder)
            who = f"pid {pid}" if pid is not None else "pid unknown"
            rows.append(RankListRow(
                title=f"{name}  query {data.q_names[q]}  {who}  cam {camid}",
                query_frames=tracklet_frames(index_of(query_folder), str(q_keys[q]), query_frames),
                gallery_frames=[middle_frame(gallery, str(g_keys[g])) for g in gallery_rows],
                kinds=gallery_kinds(labels[name], pid, camid, gallery_rows),
                captions=[f"{int(data.g_pids[g])}/c{int(data.g_camids[g])}" if data.labelled
                          else str(data.g_names[g]) for g in gallery_rows],
            ))
    finally:
        for index in indexes.values():
            index.close()
    return rows
