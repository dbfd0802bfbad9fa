"""Validation on one labelled split (e.g. `val`: held-out train identities, both platforms) as the benchmark's
three protocols, so that training can report the same numbers as the test cases.

- A2G: queries = aerial tracklets, gallery = ground tracklets;
- G2A: queries = ground tracklets, gallery = aerial tracklets;
- A2A: queries = aerial tracklets, gallery = all aerial tracklets, the queries included: the junk rule (same pid
  AND same camid, docs/protocol.md) removes each query from its own ranking, with its same-camera twins.

Queries without any valid match are skipped and counted by the metrics (`num_skipped`), as docs/protocol.md says; a
protocol where no query has one (or whose query or gallery side is empty) is left out with a warning instead.
"""

from __future__ import annotations

import warnings

import numpy as np

from xfd.eval.evaluate import EvalOptions, evaluate_protocol, mean_of_protocols
from xfd.eval.extract import PLATFORM_CODES, FeatureSet
from xfd.eval.metrics import GalleryLabels, RankMetrics
from xfd.eval.protocol import ProtocolData

GROUND, AERIAL = PLATFORM_CODES["ground"], PLATFORM_CODES["aerial"]
PROTOCOL_PLATFORMS = {"A2G": (AERIAL, GROUND), "G2A": (GROUND, AERIAL), "A2A": (AERIAL, AERIAL)}


def queries_with_a_match(q_pids, q_camids, g_pids, g_camids) -> np.ndarray:
    """(q,) bool: the gallery holds the query's pid under another camid (a match the junk rule keeps)."""
    gallery = GalleryLabels(g_pids, g_camids)
    return np.array([gallery.matches_and_junk(pid, camid)[0].size > 0 for pid, camid in
                     zip(np.asarray(q_pids).tolist(), np.asarray(q_camids).tolist())], dtype=bool)


def heldout_protocols(features: FeatureSet) -> tuple[dict[str, ProtocolData], list[str]]:
    """({name: ProtocolData} for A2G, G2A, A2A, warnings): protocols that cannot be evaluated are left out,
    each with a warning saying why."""
    protocols, problems = {}, []
    for name, (query_platform, gallery_platform) in PROTOCOL_PLATFORMS.items():
        q = features.select(features.platform == query_platform)
        g = features.select(features.platform == gallery_platform)
        if not len(q) or not len(g):
            problems.append(f"{name}: left out, the split has no {'query' if not len(q) else 'gallery'} tracklets "
                            f"({len(q)} queries, {len(g)} gallery)")
            continue
        if not queries_with_a_match(q.pids, q.camids, g.pids, g.camids).any():
            problems.append(f"{name}: left out, none of its {len(q)} queries has a gallery match (same pid, "
                            "other camid)")
            continue
        protocols[name] = ProtocolData(
            name=name, q_feats=q.features, g_feats=g.features, q_pids=q.pids, g_pids=g.pids,
            q_camids=q.camids, g_camids=g.camids, q_names=np.array(q.keys), g_names=np.array(g.keys))
    return protocols, problems


def validate(features: FeatureSet, options: EvalOptions = EvalOptions()) -> tuple[dict[str, RankMetrics], dict]:
    """Metrics of every protocol the split supports and their unweighted mean.

    Left-out protocols are reported with `warnings.warn`; a split that supports none is a ValueError.
    """
    protocols, problems = heldout_protocols(features)
    for problem in problems:
        warnings.warn(f"held-out validation: {problem}", stacklevel=2)
    if not protocols:
        raise ValueError("held-out validation: no protocol can be evaluated on this split: " + "; ".join(problems))
    results = {name: evaluate_protocol(data, options) for name, data in protocols.items()}
    return results, mean_of_protocols(results)
