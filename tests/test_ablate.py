"""xfd-ablate: Table 6's rows are cumulative, one change each; the table reads plain or re-ranked results, carries
the mean's interval and marks rows whose change against the row above is significant (paired bootstrap); the
table across seeds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xfd.cli.ablate import ablation_table, change_to_above, row_metrics, row_section, seeds_table, variants
from xfd.config import load_config
from xfd.eval.report import Evaluation, report_payload
from xfd.eval.score import ScoreOptions, score
from xfd.eval.synthetic import reid_features


def _as_dict(overrides) -> dict[str, str]:
    return dict(item.split("=", 1) for item in overrides)


def test_rows_are_cumulative_and_each_adds_one_component():
    rows = variants()
    assert [r.name for r in rows][:3] == ["baseline", "+ optimisation", "+ re-ranking"] and rows[-1].name == "full"
    for above, row in zip(rows, rows[1:]):
        assert row.overrides[: len(above.overrides)] == above.overrides  # everything of the row above
        if row.run == above.run:  # an evaluation-only row: same model, re-ranked
            assert row.overrides == above.overrides and row.reranked and not above.reranked
        else:
            assert len(row.overrides) > len(above.overrides)
    assert len({r.run for r in rows}) == len(rows) - 1  # one training fewer than rows


def test_every_row_is_a_valid_config_and_full_is_the_config_itself():
    base = load_config("tiny.yaml")
    for row in variants():
        load_config("tiny.yaml", list(row.overrides))  # raises on a bad key or value
    full = load_config("tiny.yaml", list(variants()[-1].overrides))
    assert full.model == base.model and full.train == base.train
    baseline = load_config("tiny.yaml", list(variants()[0].overrides)).model
    assert baseline.temporal.pooling == "mean" and not baseline.metadata.enabled and baseline.prompts.length == 1


def _section(noise: float, seed: int = 0) -> dict:
    """The plain results of a report.json: two protocols of the same 80 queries, features of the given noise."""
    protocols = {}
    for name, offset in (("A2G", 0), ("G2A", 1)):
        data = reid_features(80, 240, 16, 40, noise=noise, seed=seed + offset, name=name)
        protocols[name] = dataclasses.replace(data, q_names=np.array([f"{name}{i}" for i in range(80)]))
    results = score(protocols, ScoreOptions(device="cpu"))
    return report_payload(Evaluation(protocols, {"plain": results}), [], {})["plain"]


def test_row_metrics_and_the_change_against_the_row_above():
    base, same, better = _section(2.6), _section(2.6), _section(1.2)
    row = row_metrics(base)
    assert set(row) == {"A2G", "G2A", "mean", "mean_ci"} and row["mean_ci"][0] < row["mean"] < row["mean_ci"][1]
    assert row["mean"] == 100 * base["mean"]["mAP"]
    assert row_section({"plain": base, "reranked": better}, reranked=True) is better
    unchanged = change_to_above(base, same)
    assert unchanged == {"delta": 0.0, "ci": [0.0, 0.0], "p_value": 1.0, "significant": False}
    gain = change_to_above(base, better)
    assert gain["delta"] == pytest.approx(row_metrics(better)["mean"] - row["mean"]) and gain["significant"]
    assert gain["ci"][0] > 0


def test_table_marks_significant_rows():
    sections = [_section(2.6), _section(2.6), _section(1.2)]
    rows = [{"variant": name, "mAP": row_metrics(s), "above": change_to_above(sections[i - 1], s) if i else None}
            for i, (name, s) in enumerate(zip(["baseline", "+ nothing", "+ better features"], sections))]
    lines = ablation_table(rows).splitlines()
    assert lines[0] == ("| variant | A2G mAP | G2A mAP | mean mAP (95% CI) | Δ vs baseline | Δ vs row above (95% CI) "
                        "| p |")
    assert lines[2].endswith("| +0.00 | – | – |")
    assert lines[3].endswith("| +0.00 | +0.00 (+0.00, +0.00) | 1.000 |")  # no change, not marked
    assert " *" in lines[4] and lines[4].startswith("| + better features |")
    assert "significant (p < 0.05" in lines[-1]

    across = seeds_table([rows, rows]).splitlines()
    assert across[0] == ("| variant | mean mAP (mean ± sd, 2 seeds) | Δ vs row above (mean ± sd) | significant Δ "
                         "(seeds) |")
    assert across[2].endswith("| – | – |") and across[4].endswith("| 2/2 |") and across[3].endswith("| 0/2 |")
    assert f"{rows[2]['above']['delta']:+.2f} ± 0.00" in across[4]


def test_seeds_option():
    from xfd.cli.ablate import build_parser, main

    assert build_parser().parse_args(["--seeds", "3"]).seeds == 3 and build_parser().parse_args([]).seeds == 1
    with pytest.raises(SystemExit, match="--seeds must be >= 1"):
        main(["--seeds", "0"])
