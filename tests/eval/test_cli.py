"""xfd-eval end to end on npz files written here: tables, JSON (with intervals and per-query values), submission
CSV, per-query npz, CMC plot, errors; all through the one evaluation API."""

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xfd.cli.eval import main
from xfd.eval.protocol import load_npz
from xfd.eval.rerank import RerankParams
from xfd.eval.score import ScoreOptions, score
from xfd.eval.synthetic import reid_features

PROTOCOLS = {"A2G": 0, "G2A": 1, "A2A": 2}  # name -> seed


def _write_npz(path, seed, names=True, **override):
    data = reid_features(40, 260, dim=16, n_ids=30, seed=seed)
    if names:
        override = {"q_names": np.array([f"q{seed}_{i:03d}" for i in range(40)]),
                    "g_names": np.array([f"g{seed}_{i:03d}" for i in range(260)]), **override}
    dataclasses.replace(data, **override).save_npz(path)
    return path


@pytest.fixture
def protocol_files(tmp_path):
    return {name: _write_npz(tmp_path / f"{name.lower()}.npz", seed) for name, seed in PROTOCOLS.items()}


def _protocol_args(files):
    return [arg for name, path in files.items() for arg in ("--protocol", f"{name}={path}")]


def _metrics(path, name, options=ScoreOptions()):
    return score([load_npz(path, name)], options).protocols[name].metrics


def test_three_protocols_table_json_csv_plot(protocol_files, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(_protocol_args(protocol_files) + ["--json", str(out / "report.json"), "--csv", str(out / "sub.csv"),
                                                  "--plot", str(out / "cmc.png"), "--per-query", str(out / "q.npz"),
                                                  "--no-progress"])
    assert code == 0
    table = capsys.readouterr().out
    assert all(name in table for name in PROTOCOLS) and "mean of 3 protocols" in table
    assert "pooled over 120 queries" in table and "mAP (95% CI)" in table

    report = json.loads((out / "report.json").read_text())
    assert report["final"] == "plain" and report["reranked"] is None
    plain = report["plain"]
    expected = {name: _metrics(path, name) for name, path in protocol_files.items()}
    for name, metrics in expected.items():
        got = plain["protocols"][name]
        assert got["scored"] and got["reason"] is None
        assert got["mAP"] == pytest.approx(metrics.mAP, abs=1e-12)
        assert got["rank1"] == pytest.approx(metrics.rank(1), abs=1e-12)
        assert got["mINP"] == pytest.approx(metrics.mINP, abs=1e-12)
        assert got["num_queries"] == 40 and got["num_gallery"] == 260 and len(got["cmc"]) == 50
        low, high = got["ci"]["mAP"]
        assert low < got["mAP"] < high
        per_query = got["per_query"]
        assert per_query["query"][:2] == [f"q{PROTOCOLS[name]}_000", f"q{PROTOCOLS[name]}_001"]
        valid = [ap for ap in per_query["ap"] if ap is not None]
        assert len(valid) == got["num_valid"] and np.mean(valid) == pytest.approx(got["mAP"], abs=1e-12)
    assert plain["mean"]["label"] == "mean of 3 protocols"
    assert plain["mean"]["mAP"] == pytest.approx(np.mean([m.mAP for m in expected.values()]), abs=1e-12)
    assert plain["pooled"]["label"].startswith("pooled over") and plain["pooled"]["num_queries"] == sum(
        m.num_valid for m in expected.values())
    assert plain["scoring"]["rerank"] is None and plain["protocol_order"] == list(PROTOCOLS)

    with open(out / "sub.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["row_id", "query_tracklet", "gallery_tracklets"]
    assert len(rows) == 1 + 3 * 40
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(1, 121)]
    # case order A2G, G2A, A2A; within a case by (pid, name); 10 best gallery names, best first
    data = load_npz(protocol_files["G2A"], "G2A")
    order = sorted(range(40), key=lambda i: (int(data.q_pids[i]), str(data.q_names[i])))
    row = rows[1 + 40 + 7]
    query = order[7]
    assert row[1] == f"q1_{query:03d}"
    expected_order = np.argsort(1 - data.g_feats @ data.q_feats[query], kind="stable")
    assert row[2].split(" ") == [f"g1_{i:03d}" for i in expected_order[:10]]

    with np.load(out / "q.npz") as per_query:
        ap = per_query["plain/G2A/ap"]
        assert ap.shape == (40,) and np.nanmean(ap) == pytest.approx(expected["G2A"].mAP, abs=1e-12)
        assert per_query["plain/G2A/top"].shape == (40, 10)
    assert (out / "cmc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["cmc.png", "q.npz", "report.json", "sub.csv"]  # no temporaries


def test_rerank_single_file_and_csv_top(protocol_files, tmp_path, capsys):
    report_path = tmp_path / "r.json"
    path = protocol_files["A2A"]
    code = main([str(path), "--rerank", "--k1", "15", "--k2", "4", "--lambda", "0.4", "--json", str(report_path),
                 "--csv", str(tmp_path / "s.csv"), "--csv-top", "27", "--no-progress"])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["final"] == "reranked" and report["plain"] is None
    assert report["reranked"]["scoring"]["rerank"] == {"k1": 15, "k2": 4, "lambda": 0.4}
    assert "re-ranking (k1 15, k2 4, λ 0.4)" in capsys.readouterr().out
    assert (tmp_path / "r_cmc.png").read_bytes()[:4] == b"\x89PNG"  # plot beside the JSON by default
    metrics = _metrics(path, "a2a", ScoreOptions(rerank=RerankParams(15, 4, 0.4)))
    assert report["reranked"]["protocols"]["a2a"]["mAP"] == pytest.approx(metrics.mAP, abs=1e-12)
    rows = list(csv.reader(open(tmp_path / "s.csv", newline="")))
    assert all(len(r[2].split(" ")) == 27 for r in rows[1:])


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    missing = tmp_path / "missing_key.npz"
    np.savez(missing, q_feats=np.eye(2))
    assert main([str(missing)]) == 2
    assert "missing key(s) g_feats" in capsys.readouterr().err

    assert main([str(tmp_path / "missing_key.npz"), "--csv-top", "0"]) == 2

    no_names = _write_npz(tmp_path / "no_names.npz", 0, names=False)
    assert main([str(no_names), "--csv", str(tmp_path / "x.csv")]) == 2
    assert "--csv needs q_names and g_names" in capsys.readouterr().err

    assert main(["--protocol", "A2G"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err

    assert main([str(tmp_path / "nope.npz")]) == 2
    assert "not found" in capsys.readouterr().err

    scaled = _write_npz(tmp_path / "scaled.npz", 0, q_feats=3 * reid_features(40, 260, 16, 30).q_feats)
    assert main([str(scaled), "--no-progress"]) == 2
    assert "not L2-normalised" in capsys.readouterr().err
    assert main([str(scaled), "--normalize", "--no-progress"]) == 0


def test_failed_run_leaves_no_partial_submission(protocol_files, tmp_path):
    bad = reid_features(40, 260, 16, 30, seed=5).g_feats
    bad[10, 0] = np.nan
    broken = _write_npz(tmp_path / "broken.npz", 5, g_feats=bad)
    args = ["--protocol", f"A2G={protocol_files['A2G']}", "--protocol", f"B={broken}"]
    assert main(args + ["--csv", str(tmp_path / "sub.csv"), "--no-progress"]) == 2
    assert not (tmp_path / "sub.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("xfd-eval")
    assert script.exists(), "pyproject [project.scripts] xfd-eval not installed; re-run `make install`"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "--protocol" in result.stdout and "--rerank" in result.stdout
