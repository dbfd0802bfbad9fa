"""Evaluate a model on the test protocols of a shard root: features of every protocol's query and gallery sets
→ distances (optionally exact k-reciprocal re-ranking) → mAP / CMC / mINP per protocol and their mean.

Protocols are found in OUT/dataset.json: every split pair `<name>/query` + `<name>/gallery` (DetReIDX's
`case1_aerial_to_ground`, ...; MARS / G2A's top-level `query` + `gallery`; G2A v2's `a2g_query` + `a2g_gallery`).
DetReIDX case names get the benchmark's short labels (A2G, G2A, A2A).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfd.eval.evaluate import EvalOptions, evaluate_protocol, mean_of_protocols
from xfd.eval.extract import FeatureSet, extract_split
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
                        q_names=np.array(query.keys), g_names=np.array(gallery.keys))


def extract_protocols(model, root: str | Path, *, num_frames: int, batch_size: int, image_size: tuple[int, int],
                      device="cpu", flip_tta: bool = True, num_threads: int = 2,
                      progress: bool = True) -> dict[str, ProtocolData]:
    """Features of every protocol of ROOT, one process (issue 6 shards this across ranks)."""
    root = Path(root)
    data = {}
    for protocol in find_protocols(root):
        sides = [extract_split(model, root / split, num_frames=num_frames, batch_size=batch_size,
                               image_size=image_size, device=device, flip_tta=flip_tta, num_threads=num_threads,
                               progress=progress) for split in (protocol.query, protocol.gallery)]
        data[protocol.name] = protocol_data(protocol.name, *sides)
    return data


def evaluate_protocols(data: dict[str, ProtocolData],
                       options: EvalOptions = EvalOptions()) -> tuple[dict[str, RankMetrics], dict]:
    results = {name: evaluate_protocol(protocol, options) for name, protocol in data.items()}
    return results, mean_of_protocols(results)
