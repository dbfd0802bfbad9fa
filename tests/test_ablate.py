"""xfd-ablate: Table 6's rows are cumulative, one change each; the table reads plain or re-ranked metrics."""

from __future__ import annotations

from xfd.cli.ablate import ablation_table, row_metrics, variants
from xfd.config import load_config


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


def test_row_metrics_and_table_deltas():
    plain = {"protocols": {"A2G": {"mAP": 0.2}, "G2A": {"mAP": 0.3}}, "mean": {"mAP": 0.25}}
    report = {**plain, "reranked": {"protocols": {"A2G": {"mAP": 0.4}, "G2A": {"mAP": 0.5}}, "mean": {"mAP": 0.45}}}
    assert row_metrics(report, reranked=False) == {"A2G": 20.0, "G2A": 30.0, "mean": 25.0}
    assert row_metrics(report, reranked=True) == {"A2G": 40.0, "G2A": 50.0, "mean": 45.0}
    table = ablation_table([{"variant": "baseline", "mAP": row_metrics(report, False)},
                            {"variant": "+ re-ranking", "mAP": row_metrics(report, True)}])
    lines = table.splitlines()
    assert lines[0] == "| variant | A2G mAP | G2A mAP | mean mAP | Δ |"
    assert lines[2].endswith("| 25.00 | +0.00 |") and lines[3] == "| + re-ranking | 40.00 | 50.00 | 45.00 | +20.00 |"
