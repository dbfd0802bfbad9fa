"""Bootstrap intervals on hand-made cases (they cover the analytic mean, their width is the normal theory's and
shrinks as 1/√n), seeding, the stratified mean over protocols, and the paired comparison: a report compared with
itself gives Δ = 0 and p = 1 (library and `xfd-eval compare`), a constant shift is found exactly."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from xfd.cli.eval import main
from xfd.eval.bootstrap import BootstrapOptions, intervals, paired_difference, resampled_means
from xfd.eval.synthetic import reid_features

OPTIONS = BootstrapOptions(resamples=4000, seed=0)


def _hand_made(n: int) -> np.ndarray:
    """APs of n queries: the pattern 1, 1/2, 1/3, 1/4 (first match at rank 1..4, one match each)."""
    return np.resize(1.0 / np.arange(1, 5), n)


def _analytic() -> tuple[float, float]:
    """Mean and standard deviation of the pattern (a population of four equally likely values)."""
    values = 1.0 / np.arange(1, 5)
    return float(values.mean()), float(values.std())


@pytest.mark.parametrize("n", [40, 400, 4000])
def test_interval_covers_the_analytic_mean_with_the_normal_theorys_width(n):
    mean, sd = _analytic()
    (ci,) = intervals([_hand_made(n)[:, None]], OPTIONS)
    assert ci.low < mean < ci.high
    expected = 2 * 1.959964 * sd / np.sqrt(n)  # the 95 % normal interval's width
    assert ci.high - ci.low == pytest.approx(expected, rel=0.1)


def test_width_shrinks_as_one_over_root_n():
    widths = {}
    for n in (100, 400, 1600, 6400):
        (ci,) = intervals([_hand_made(n)[:, None]], OPTIONS)
        widths[n] = ci.high - ci.low
    for small, large in ((100, 400), (400, 1600), (1600, 6400)):
        assert widths[small] / widths[large] == pytest.approx(2.0, rel=0.12)  # 4x the queries, half the width


def test_seeded_vectorised_and_checked():
    values = np.random.default_rng(1).random((500, 2))
    a = resampled_means(values, 1000, np.random.default_rng(7))
    assert a.shape == (1000, 2) and np.array_equal(a, resampled_means(values, 1000, np.random.default_rng(7)))
    assert intervals([values], BootstrapOptions(seed=3)) == intervals([values], BootstrapOptions(seed=3))
    assert intervals([values], BootstrapOptions(seed=3)) != intervals([values], BootstrapOptions(seed=4))
    with pytest.raises(ValueError, match="resamples"):
        BootstrapOptions(resamples=0)
    with pytest.raises(ValueError, match="level"):
        BootstrapOptions(level=1.0)
    with pytest.raises(ValueError, match="empty"):
        resampled_means(np.zeros((0, 1)), 10, np.random.default_rng(0))


def test_mean_of_strata_resamples_each_stratum_on_its_own():
    low, high = np.zeros(300), np.ones(100)  # two protocols: all 0 and all 1
    (ci,) = intervals([low[:, None], high[:, None]], OPTIONS)
    assert ci.low == ci.high == 0.5  # no resample mixes the strata: the mean of the two means is always 0.5
    (pooled,) = intervals([np.concatenate([low, high])[:, None]], OPTIONS)
    assert pooled.low < 0.25 < pooled.high  # pooled: 100 of 400 queries, and it varies


def test_paired_difference_of_equal_and_shifted_values():
    rng = np.random.default_rng(2)
    a = [rng.random(200), rng.random(50)]
    same = paired_difference(a, a, OPTIONS)
    assert same.delta == 0.0 and same.p_value == 1.0 and same.interval.low == same.interval.high == 0.0
    shifted = paired_difference(a, [x + 0.1 for x in a], OPTIONS)
    assert shifted.delta == pytest.approx(0.1) and shifted.interval.low == pytest.approx(0.1)
    assert shifted.p_value == pytest.approx(1 / (OPTIONS.resamples + 1))  # every resample differs by exactly 0.1
    noisy = paired_difference(a, [x + rng.normal(0, 0.3, x.size) for x in a], OPTIONS)
    assert noisy.interval.low < 0 < noisy.interval.high and noisy.p_value > 0.05  # noise, no shift
    with pytest.raises(ValueError, match="same queries"):
        paired_difference(a, [a[0][:-1], a[1]], OPTIONS)


def _report(tmp_path, name: str, noise: float) -> str:
    paths = []
    for protocol, seed in (("A2G", 0), ("G2A", 1)):
        data = reid_features(60, 200, 16, 40, noise=noise, seed=seed)
        data = dataclasses.replace(data, q_names=np.array([f"q{seed}_{i}" for i in range(60)]),
                                   g_names=np.array([f"g{i}" for i in range(200)]))
        path = tmp_path / f"{name}_{protocol}.npz"
        data.save_npz(path)
        paths += ["--protocol", f"{protocol}={path}"]
    out = tmp_path / f"{name}.json"
    assert main(paths + ["--json", str(out), "--no-progress"]) == 0
    return str(out)


def test_compare_a_report_with_itself_and_with_another(tmp_path, capsys):
    a = _report(tmp_path, "a", noise=1.8)
    capsys.readouterr()
    assert main(["compare", a, a, "--json", str(tmp_path / "self.json")]) == 0
    out = capsys.readouterr().out
    assert "| A2G | " in out and "| mean of 2 protocols |" in out and "| pooled over " in out
    comparisons = json.loads((tmp_path / "self.json").read_text())["comparisons"]
    assert [c["name"] for c in comparisons][:2] == ["A2G", "G2A"] and len(comparisons) == 4
    for c in comparisons:
        for figure in ("mAP", "rank1"):
            assert c["diff"][figure]["delta"] == 0.0 and c["diff"][figure]["p_value"] == 1.0
            assert c["diff"][figure]["ci"] == [0.0, 0.0]

    b = _report(tmp_path, "b", noise=2.6)  # the same queries and labels, harder features
    capsys.readouterr()
    assert main(["compare", a, b, "--json", str(tmp_path / "ab.json")]) == 0
    mean = json.loads((tmp_path / "ab.json").read_text())["comparisons"][2]
    assert mean["name"] == "mean of 2 protocols"
    assert mean["diff"]["mAP"]["delta"] == pytest.approx(mean["b"]["mAP"] - mean["a"]["mAP"])
    assert mean["diff"]["mAP"]["delta"] < 0 and mean["diff"]["mAP"]["ci"][1] < 0  # clearly worse
    assert mean["diff"]["mAP"]["p_value"] < 0.05 and " *" in capsys.readouterr().out


def test_compare_refuses_reports_of_other_queries(tmp_path, capsys):
    a = _report(tmp_path, "a", noise=1.8)
    other = json.loads(open(a).read())
    other["plain"]["protocols"]["A2G"]["per_query"]["query"][0] = "someone else"
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["compare", a, str(tmp_path / "other.json")]) == 2
    assert "protocol A2G" in capsys.readouterr().err
    assert main(["compare", a, a, "--ranking", "reranked"]) == 2
    assert "no reranked results" in capsys.readouterr().err
