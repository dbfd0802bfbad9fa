"""xfd-eval launched as ranks, as a user runs it: `torchrun --nproc_per_node 2 --no-python xfd-eval ... --rerank`
(gloo on the CPU) gives the tables, report, per-query values and submission of one process, written and printed by
rank 0 only; ranks given different features files are refused with a message from every rank. Two launches of
~10 s each (start-up mostly)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xfd.cli.demo import free_port
from xfd.cli.eval import main
from xfd.eval.synthetic import reid_features

BIN = Path(sys.executable).parent
RERANK = ["--rerank", "--k1", "10", "--k2", "3", "--no-progress"]


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> dict[str, Path]:
    """Two protocols' features files, and a third file that differs from A2G's in one value."""
    folder = tmp_path_factory.mktemp("eval-ranks")
    paths = {}
    for name, seed in (("A2G", 0), ("G2A", 1)):
        data = reid_features(40, 260, dim=16, n_ids=30, seed=seed)
        data = dataclasses.replace(data, q_names=np.array([f"q{seed}_{i:03d}" for i in range(40)]),
                                   g_names=np.array([f"g{seed}_{i:03d}" for i in range(260)]))
        paths[name] = folder / f"{name.lower()}.npz"
        data.save_npz(paths[name])
        if name == "A2G":
            g_feats = data.g_feats.copy()
            g_feats[7] = g_feats[8]  # still unit rows, another gallery
            dataclasses.replace(data, g_feats=g_feats).save_npz(folder / "a2g_other.npz")
    paths["other"] = folder / "a2g_other.npz"
    return paths


def _outputs(folder: Path) -> list[str]:
    return ["--json", str(folder / "report.json"), "--csv", str(folder / "sub.csv"), "--per-query",
            str(folder / "q.npz")]


def _torchrun(program: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DS_ACCELERATOR="cpu", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), "--no-python",
               *program]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_two_ranks_give_the_report_and_submission_of_one_process(features, tmp_path, capsys):
    protocols = ["--protocol", f"A2G={features['A2G']}", "--protocol", f"G2A={features['G2A']}"]
    (tmp_path / "one").mkdir()
    assert main(protocols + RERANK + _outputs(tmp_path / "one")) == 0
    printed = capsys.readouterr().out
    (tmp_path / "two").mkdir()
    two = _torchrun(["xfd-eval", *protocols, *RERANK, *_outputs(tmp_path / "two")], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]

    one_report = json.loads((tmp_path / "one" / "report.json").read_text())
    two_report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert one_report == two_report and two_report["final"] == "reranked"  # metrics, intervals, per query
    assert 0 < two_report["reranked"]["mean"]["mAP"] < 1
    for name in ("sub.csv", "q.npz"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert printed in two.stdout and two.stdout.count("# xfd-eval") == 1  # rank 0 alone printed the tables
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["q.npz", "report.json", "report_cmc.png", "sub.csv"]


def test_ranks_given_different_features_are_refused(features, tmp_path):
    # rank 1 reads another gallery for A2G: what a node with a stale copy of the file would do
    script = (f'[ "$RANK" = 0 ] && f={features["A2G"]} || f={features["other"]}; '
              f'exec xfd-eval --protocol "A2G=$f" {" ".join(RERANK)} --json {tmp_path / "report.json"}')
    run = _torchrun(["sh", "-c", script], tmp_path)
    assert run.returncode != 0 and "exitcode  : 2" in run.stderr  # torchrun's summary of the ranks' status
    for rank in (0, 1):
        assert (f"xfd-eval: error (rank {rank} of 2): distributed evaluation: the ranks were given different "
                "features, dtypes or parameters (rank 0 holds one version; rank 1 holds another)") in run.stderr
    assert not (tmp_path / "report.json").exists()
