"""The three entry points — xfd-eval, launcher/evaluate.py and held-out validation — all score through the one
evaluation API (a spy on `xfd.eval.score` sees each of them), and an unlabelled test split end to end: scrambled
tracklet folder names and no identities evaluate into features, rankings and a valid submission with metrics said
to be unavailable, and give the same rankings as the same data with its identities."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import xfd.eval.score as score_module
from xfd.cli import eval as eval_cli
from xfd.cli import evaluate as evaluate_cli
from xfd.eval.heldout import validate
from xfd.eval.protocol import load_npz
from xfd.inference import FeatureSet

from dataset_builders import sharded_detreidx
from unlabelled_shards import unlabelled_shards

OVERRIDES = ["model.backbone.image_size=[32,16]", "data.num_frames=4", "eval.batch_size=4", "data.dali_threads=1"]
TEST_IDS = 4


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("entry_points")
    labelled = sharded_detreidx(base, train_ids=2, test_ids=TEST_IDS)
    anonymous, renamed = unlabelled_shards(base / "src", base, seed=5)  # xfd-shard --unlabelled, scrambled names
    return labelled, anonymous, renamed


@pytest.fixture
def spy(monkeypatch):
    """The protocols each call of the API scored."""
    calls = []
    inner = score_module._score_protocol

    def recorded(data, options, *args):
        calls.append((data.name, options.ranking))
        return inner(data, options, *args)

    monkeypatch.setattr(score_module, "_score_protocol", recorded)
    return calls


def _evaluate(root, out):
    return evaluate_cli.main(["--untrained", "--config", "tiny.yaml", "--data", str(root), "--output", str(out),
                              "--rerank", "--k1", "3", "--k2", "2", *OVERRIDES])


def test_all_three_entry_points_score_through_the_one_api(roots, tmp_path, spy, capsys):
    labelled, _, _ = roots
    assert _evaluate(labelled, tmp_path / "launcher") == 0
    both = [(p, r) for r in ("plain", "reranked") for p in ("A2G", "G2A", "A2A")]
    assert spy == both
    spy.clear()
    features = tmp_path / "launcher" / "features" / "A2G.npz"
    assert eval_cli.main([str(features), "--rerank", "--k1", "3", "--k2", "2", "--no-progress"]) == 0
    assert spy == [("A2G", "reranked")]
    spy.clear()
    data = load_npz(features)
    keys = [f"q{i}" for i in range(data.num_queries)] + [f"g{i}" for i in range(data.num_gallery)]
    split = FeatureSet(keys, np.concatenate([data.q_feats, data.g_feats]), np.concatenate([data.q_pids, data.g_pids]),
                       np.concatenate([data.q_camids, data.g_camids]),
                       np.array([1] * data.num_queries + [0] * data.num_gallery, np.int8))
    validate(split)
    assert spy == [("A2G", "plain"), ("G2A", "plain"), ("A2A", "plain")]
    capsys.readouterr()


def _rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_an_unlabelled_split_evaluates_into_a_valid_submission_with_the_same_rankings(roots, tmp_path, capsys):
    labelled, anonymous, renamed = roots
    assert _evaluate(labelled, tmp_path / "labelled") == 0
    assert _evaluate(anonymous, tmp_path / "unlabelled") == 0
    captured = capsys.readouterr()
    assert "metrics unavailable" in captured.err and "Traceback" not in captured.err

    out = tmp_path / "unlabelled"
    text = (out / "report.json").read_text()
    assert "NaN" not in text
    report = json.loads(text)
    for ranking in ("plain", "reranked"):
        section = report[ranking]
        assert section["mean"] is None and section["pooled"] is None
        assert section["conditions"] == ([] if ranking == "reranked" else None)  # computed for the final ranking
        for entry in section["protocols"].values():
            assert not entry["scored"] and not entry["labelled"] and "unlabelled split" in entry["reason"]
            assert entry["num_queries"] == TEST_IDS == entry["num_gallery"]
    table = (out / "table.md").read_text()
    reason = "unlabelled split (identities unknown): metrics unavailable; rankings and submission written"
    assert table.count(f"| {TEST_IDS} | {TEST_IDS} | not scored: {reason} |") == 6
    assert table.count(f"> warning: protocol A2G not scored: {reason}\n") == 1
    assert "no protocol could be scored" in table and "nan" not in table.lower()
    assert (out / "ranklist.png").is_file() and not (out / "cmc.png").exists()
    with np.load(out / "features" / "A2G.npz") as a2g:
        assert not bool(a2g["labelled"]) and "q_pids" not in a2g.files
        assert set(a2g["q_names"].tolist()) <= set(renamed.values())
    with np.load(out / "per_query.npz") as per_query:
        assert per_query["reranked/A2A/top"].shape == (TEST_IDS, 10)

    # a valid submission, checked against the shards alone (no features), and ordered by the scrambled names
    assert eval_cli.main(["--check-submission", str(out / "submission.csv"), "--data", str(anonymous)]) == 0
    assert eval_cli.main(["--check-submission", str(tmp_path / "labelled" / "submission.csv"), "--data",
                          str(labelled)]) == 0
    assert eval_cli.main(["--check-submission", str(out / "submission.csv"), "--data", str(labelled)]) == 1
    capsys.readouterr()
    unlabelled_rows, labelled_rows = _rows(out / "submission.csv"), _rows(tmp_path / "labelled" / "submission.csv")
    assert len(unlabelled_rows) == len(labelled_rows) == 3 * TEST_IDS
    for case in range(3):
        block = unlabelled_rows[case * TEST_IDS:(case + 1) * TEST_IDS]
        assert [r["query_tracklet"] for r in block] == sorted(r["query_tracklet"] for r in block)
    # the same rankings: every labelled row, its names scrambled, is a row of the unlabelled submission
    by_query = {r["query_tracklet"]: r["gallery_tracklets"] for r in unlabelled_rows}
    for row in labelled_rows:
        assert by_query[renamed[row["query_tracklet"]]] == " ".join(
            renamed[g] for g in row["gallery_tracklets"].split(" ")), row["query_tracklet"]
