"""Evaluate a model on the test protocols of a shard root: features of every protocol's query and gallery sets
→ distances (optionally exact k-reciprocal re-ranking) → mAP / CMC / mINP per protocol and their mean.

Protocols are found in OUT/dataset.json: every split pair `<name>/query` + `<name>/gallery` (DetReIDX's
`case1_aerial_to_ground`, ...; MARS / G2A's top-level `query` + `gallery`; G2A v2's `a2g_query` + `a2g_gallery`).
DetReIDX case names get the benchmark's short labels (A2G, G2A, A2A).

Extraction runs on every rank of a process group (each rank reads its own shards, `xfd.eval.extract`) and the
parts are gathered, so every rank ends with the same features whatever the world size. A split whose manifest
lists no tracklets gives an empty side; such a protocol is reported as empty (all-NaN metrics, a warning), not
evaluated, and left out of the mean.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from xfd.data.shard import MANIFEST_NAME
from xfd.eval.evaluate import EvalOptions, EvalTimes, evaluate_protocol, mean_of_protocols
from xfd.eval.extract import FeatureSet, extract_split, gather_feature_sets
from xfd.eval.metrics import RankMetrics
from xfd.eval.protocol import ProtocolData

_SHORT = {"aerial_to_ground": "A2G", "ground_to_aerial": "G2A", "aerial_to_aerial": "A2A",
          "ground_to_ground": "G2G"}


@dataclass(frozen=True)
class ProtocolSplits:
    name: str  # the label in tables (A2G, ...)
    query: str  # split paths relative to the shard root
    gallery: str


def find_protocols(root: str | Path) -> list[ProtocolSplits]:
    """The query/gallery split pairs listed in ROOT/dataset.json, in a stable order."""
    root = Path(root)
    index = root / "dataset.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: not an xfd-shard output folder")
    splits = set(json.loads(index.read_text())["splits"])
    found = []
    for split in sorted(splits):
        match = re.match(r"^(?:(?P<folder>.+)/)?(?P<prefix>(?:[a-z0-9]+_)?)query$", split)
        if not match:
            continue
        gallery = split[: -len("query")] + "gallery"
        if gallery not in splits:
            continue
        base = match["folder"] or match["prefix"].rstrip("_") or "query/gallery"
        short = next((label for words, label in _SHORT.items() if words in base), None)
        found.append(ProtocolSplits(short or base, split, gallery))
    if not found:
        raise ValueError(f"{root}: no query/gallery split pairs in dataset.json ({sorted(splits)})")
    return found


def protocol_data(name: str, query: FeatureSet, gallery: FeatureSet) -> ProtocolData:
    return ProtocolData(name=name, q_feats=query.features, g_feats=gallery.features, q_pids=query.pids,
                        g_pids=gallery.pids, q_camids=query.camids, g_camids=gallery.camids,
                        q_names=np.array(query.keys, dtype=str), g_names=np.array(gallery.keys, dtype=str))


def split_size(folder: str | Path) -> int:
    """Tracklets the shard set in `folder` holds, from its manifest (no shard is opened)."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a shard set (no {MANIFEST_NAME}); run xfd-shard first")
    return sum(int(entry["samples"]) for entry in json.loads(path.read_text())["shards"])


def empty_feature_set(dim: int) -> FeatureSet:
    return FeatureSet([], np.zeros((0, dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                      np.zeros(0, np.int8))


@dataclass(frozen=True)
class Extraction:
    """Every protocol's gathered features (the same on every rank) and this rank's own share of the work."""

    protocols: dict[str, ProtocolData]
    rank_tracklets: int  # tracklets this rank ran through the model (query + gallery sides, all protocols)
    rank_seconds: float  # this rank's time in extract_split (reading, decoding, the model), gathers excluded


def extract_protocols(model, root: str | Path, *, num_frames: int, batch_size: int, image_size: tuple[int, int],
                      device="cpu", flip_tta: bool = True, num_threads: int = 2, rank: int = 0, world_size: int = 1,
                      progress: bool = True, clips: bool = False) -> Extraction:
    """Features of every protocol of ROOT: this rank extracts its shards of each split, the parts are gathered
    (collective: with world_size > 1 every rank must call this with the same arguments)."""
    root = Path(root)
    data, own, busy = {}, 0, 0.0
    for protocol in find_protocols(root):
        sides = []
        for split in (protocol.query, protocol.gallery):
            if split_size(root / split) == 0:  # every rank reads the same manifest: all skip it together
                sides.append(empty_feature_set(int(model.feature_dim)))
                continue
            start = time.perf_counter()
            part = extract_split(model, root / split, num_frames=num_frames, batch_size=batch_size,
                                 image_size=image_size, device=device, flip_tta=flip_tta, num_threads=num_threads,
                                 rank=rank, world_size=world_size, progress=progress, clips=clips)
            busy += time.perf_counter() - start
            own += len(part)
            sides.append(gather_feature_sets(part, world_size))
        data[protocol.name] = protocol_data(protocol.name, *sides)
    return Extraction(data, own, busy)


def is_empty(data: ProtocolData) -> bool:
    return data.q_feats.shape[0] == 0 or data.g_feats.shape[0] == 0


def empty_metrics(data: ProtocolData, options: EvalOptions) -> RankMetrics:
    """What an empty protocol reports: its queries (if any) all counted as skipped, every metric NaN."""
    queries = int(data.q_feats.shape[0])
    return RankMetrics(mAP=float("nan"), mINP=float("nan"), cmc=np.full(options.max_rank, np.nan),
                       num_queries=queries, num_valid=0, num_skipped=queries, ap_mode=options.ap_mode)


@dataclass(frozen=True)
class ProtocolResults:
    """Metrics of every protocol (empty ones all-NaN), their mean over the evaluated ones, and the empty ones."""

    metrics: dict[str, RankMetrics]
    mean: dict | None  # None when no protocol could be evaluated
    empty: dict[str, dict]  # name -> {"query": q, "gallery": g} tracklet counts

    def warnings(self) -> list[str]:
        return [f"protocol {name} is empty ({sizes['query']} query, {sizes['gallery']} gallery tracklets): "
                "not evaluated, left out of the mean" for name, sizes in self.empty.items()]


ProtocolBlockCallback = Callable[[str, np.ndarray, np.ndarray], None]  # (protocol, query indices, (b, G) block)


def evaluate_protocols(data: dict[str, ProtocolData], options: EvalOptions = EvalOptions(),
                       on_block: ProtocolBlockCallback | None = None,
                       times: EvalTimes | None = None) -> ProtocolResults:
    """Metrics of every protocol; `on_block` sees every distance block with its protocol's name, `times` adds up
    ranking / metrics / callback seconds (xfd.eval.evaluate)."""
    metrics, empty = {}, {}
    for name, protocol in data.items():
        if is_empty(protocol):
            metrics[name] = empty_metrics(protocol, options)
            empty[name] = {"query": int(protocol.q_feats.shape[0]), "gallery": int(protocol.g_feats.shape[0])}
            continue
        callback = None if on_block is None else (lambda indices, block, name=name: on_block(name, indices, block))
        metrics[name] = evaluate_protocol(protocol, options, callback, times)
    evaluated = {name: m for name, m in metrics.items() if name not in empty}
    return ProtocolResults(metrics, mean_of_protocols(evaluated) if evaluated else None, empty)
