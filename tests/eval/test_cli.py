"""xfd-eval end to end on npz files written here: table, JSON, submission CSV, CMC plot, errors."""

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xfd.cli.eval import main
from xfd.eval.evaluate import EvalOptions, evaluate_protocol
from xfd.eval.protocol import load_npz
from xfd.eval.rerank import RerankParams
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


def test_three_protocols_table_json_csv_plot(protocol_files, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(_protocol_args(protocol_files) + ["--json", str(out / "report.json"), "--csv", str(out / "sub.csv"),
                                                  "--plot", str(out / "cmc.png"), "--no-progress"])
    assert code == 0
    table = capsys.readouterr().out
    assert all(name in table for name in PROTOCOLS) and "mean of 3" in table

    report = json.loads((out / "report.json").read_text())
    expected = {name: evaluate_protocol(load_npz(path, name)) for name, path in protocol_files.items()}
    for name, metrics in expected.items():
        got = report["protocols"][name]
        assert got["mAP"] == pytest.approx(metrics.mAP, abs=1e-12)
        assert got["rank1"] == pytest.approx(metrics.rank(1), abs=1e-12)
        assert got["mINP"] == pytest.approx(metrics.mINP, abs=1e-12)
        assert got["num_queries"] == 40 and len(got["cmc"]) == 50
    assert report["mean"]["mAP"] == pytest.approx(np.mean([m.mAP for m in expected.values()]), abs=1e-12)
    assert report["settings"]["rerank"] is None

    with open(out / "sub.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["row_id", "case", "query_tracklet", "ranked_gallery_tracklets"]
    assert len(rows) == 1 + 3 * 40
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(120)]
    # row of query 7 of G2A: the whole gallery, best (smallest cosine distance) first
    data = load_npz(protocol_files["G2A"], "G2A")
    row = rows[1 + 40 + 7]
    assert row[1] == "G2A" and row[2] == "q1_007"
    ranked = row[3].split(" ")
    expected_order = np.argsort(1 - data.g_feats @ data.q_feats[7], kind="stable")
    assert ranked[:5] == [f"g1_{i:03d}" for i in expected_order[:5]] and len(ranked) == 260

    assert (out / "cmc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["cmc.png", "report.json", "sub.csv"]  # no temporaries


def test_rerank_single_file_and_csv_top(protocol_files, tmp_path, capsys):
    report_path = tmp_path / "r.json"
    path = protocol_files["A2A"]
    code = main([str(path), "--rerank", "--k1", "15", "--k2", "4", "--lambda", "0.4", "--json", str(report_path),
                 "--csv", str(tmp_path / "s.csv"), "--csv-top", "7", "--no-progress"])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["settings"]["rerank"] == {"k1": 15, "k2": 4, "lambda": 0.4}
    assert (tmp_path / "r_cmc.png").read_bytes()[:4] == b"\x89PNG"  # plot beside the JSON by default
    metrics = evaluate_protocol(load_npz(path), EvalOptions(rerank=RerankParams(15, 4, 0.4)))
    assert report["protocols"]["a2a"]["mAP"] == pytest.approx(metrics.mAP, abs=1e-12)
    rows = list(csv.reader(open(tmp_path / "s.csv", newline="")))
    assert all(len(r[3].split(" ")) == 7 for r in rows[1:])


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    missing = tmp_path / "missing_key.npz"
    np.savez(missing, q_feats=np.eye(2))
    assert main([str(missing)]) == 2
    assert "missing key(s) g_feats" in capsys.readouterr().err

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
