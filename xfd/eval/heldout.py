"""Validation on one labelled split (e.g. `val`: held-out train identities, both platforms) as the benchmark's
three protocols, so that training reports the same numbers as the test cases: A2G (aerial queries, ground
gallery), G2A, and A2A (aerial queries against all aerial tracklets, each query removed from its own ranking by
the junk rule). The protocols come from `xfd.eval.protocol.platform_protocols`, the scores from `xfd.eval.score`
under its one rule: a protocol the split cannot support (an empty side, no query with a match) is reported as not
scored, with its reason, and left out of the mean.
"""

from __future__ import annotations

from xfd.eval.protocol import platform_protocols
from xfd.eval.score import Results, ScoreOptions, score


def validate(features, options: ScoreOptions = ScoreOptions()) -> Results:
    """Scores of A2G, G2A and A2A on one labelled split (`xfd.inference.FeatureSet`); a split that supports none
    of them is a ValueError saying why."""
    if not features.labelled:
        raise ValueError("held-out validation needs a labelled split (its pids are unknown)")
    results = score(platform_protocols(features), options)
    if not results.scored:
        raise ValueError("held-out validation: no protocol can be evaluated on this split: "
                         + "; ".join(f"{name}: {p.reason}" for name, p in results.protocols.items()))
    return results
