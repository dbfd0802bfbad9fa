"""The report's pictures a reader understands: units on both axes, "re-ranked" in the title when it is, a CMC
that stops at the gallery size, legends outside the axes, per-condition points with their intervals."""

from __future__ import annotations

import dataclasses

import numpy as np

from xfd.eval.figures import cmc_figure, conditions_figure, plot_cmc
from xfd.eval.rerank import RerankParams
from xfd.eval.score import ScoreOptions, score
from xfd.eval.synthetic import reid_features


def _readable(fig) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        assert ax.get_ylabel().endswith(")") and ax.get_xlabel().endswith(")"), ax.get_title()
    legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None).get_window_extent(renderer)
    assert all(legend.x0 >= ax.get_window_extent(renderer).x1 for ax in fig.axes)  # covers no curve
    assert legend.x1 <= fig.bbox.x1 and legend.y0 >= 0  # and is not cut off
    for ax in fig.axes:  # nor are the axis labels
        for label in (ax.xaxis.label, ax.yaxis.label, ax.title):
            box = label.get_window_extent(renderer)
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, label


def test_cmc_stops_at_the_gallery_and_says_re_ranked(tmp_path):
    small = reid_features(20, 8, 16, 6, seed=0, name="A2G")  # a gallery of 8, a CMC of 50 ranks
    large = reid_features(20, 80, 16, 6, seed=1, name="G2A")
    plain = score([small], ScoreOptions(device="cpu"))
    reranked = score([small], ScoreOptions(rerank=RerankParams(4, 2, 0.3), device="cpu"))
    fig = cmc_figure([plain])
    (ax,) = fig.axes
    assert ax.get_title() == "CMC" and ax.get_xlim()[1] <= 8.5 and len(ax.lines[0].get_xdata()) == 8
    _readable(fig)
    assert cmc_figure([reranked]).axes[0].get_title() == "CMC (re-ranked)"
    both = cmc_figure([plain, reranked]).axes[0]
    assert both.get_title() == "CMC: plain (solid) and re-ranked (dashed)"
    assert [line.get_linestyle() for line in both.lines] == ["-", "--"]
    mixed = cmc_figure([score([small, large], ScoreOptions(device="cpu"))]).axes[0]
    assert mixed.get_xlim()[1] <= 50.5 and len(mixed.lines[0].get_xdata()) == 8  # each curve to its gallery
    assert plot_cmc(tmp_path / "c.png", [plain]) and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_conditions_figure_has_intervals_and_says_re_ranked():
    data = reid_features(30, 90, 16, 8, seed=2, name="A2G")
    heights = np.resize([10.0, 40.0, 120.0], 30)
    meta = {"altitude_bin": np.resize([4, 11, 17], 30), "height": heights, "distance_bin": np.resize([1, 5, 17], 30),
            "distance": np.resize([10.0, 40.0, 120.0], 30)}
    data = dataclasses.replace(data, q_meta=meta)
    fig = conditions_figure(score([data], ScoreOptions(rerank=RerankParams(5, 2, 0.3), device="cpu")))
    assert [ax.get_title() for ax in fig.axes] == ["mAP by query distance (re-ranked)",
                                                   "mAP by query altitude (re-ranked)"]
    assert fig.axes[1].get_xlabel() == "query altitude (m)" and fig.axes[0].get_ylabel() == "mAP with its 95% CI (%)"
    assert len(fig.axes[0].collections) >= 2  # error bars and markers
    _readable(fig)
    assert conditions_figure(score([reid_features(5, 9, 4, 3)], ScoreOptions(device="cpu"))) is None
