"""launcher/evaluate.py's bad input and state, in one process: a protocol with an empty split is reported (table,
JSON, warning) as not scored and left out of the mean instead of crashing the run; a truncated query or gallery
shard is a clean error naming it; a model file whose weights do not fit its config is a clear error naming the
keys; a plain run gives back the CPU settings it changed; --frames clips averages every frame's clips and the
report says so."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch

from xfd.cli import evaluate as evaluate_cli
from xfd.config import dump_config, load_config
from xfd.engine.checkpoint import save_model_file
from xfd.model import build_model

from dataset_builders import sharded_detreidx

OVERRIDES = ["model.backbone.image_size=[32,16]", "data.num_frames=4", "eval.batch_size=4", "data.dali_threads=1"]
EMPTIED = "case3_aerial_to_aerial/gallery"  # the A2A protocol's gallery


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory):
    """3 test identities a protocol; A2A's gallery is a shard set that lists no tracklets."""
    shards = sharded_detreidx(tmp_path_factory.mktemp("evaluate_cli"), train_ids=2, test_ids=3)
    folder = shards / EMPTIED
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["shards"]:
        (folder / entry["name"]).unlink()
    manifest["shards"] = []
    manifest["totals"].update(shards=0, samples=0, frames=0, bytes=0, identities=0)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return shards


def test_an_empty_protocol_is_reported_not_crashed_on(shard_root, tmp_path, capsys):
    onednn, cbwr = torch.backends.mkldnn.enabled, os.environ.get("MKL_CBWR")
    out = tmp_path / "eval"
    argv = ["--untrained", "--config", "tiny.yaml", "--data", str(shard_root), "--output", str(out), "--rerank",
            "--k1", "2", "--k2", "2", *OVERRIDES]
    assert evaluate_cli.main(argv) == 0
    captured = capsys.readouterr()
    reason = "empty gallery side (3 query, 0 gallery tracklets)"
    assert f"warning: protocol A2A not scored: {reason}; left out of the mean" in captured.err

    report = json.loads((out / "report.json").read_text())  # strict JSON: no NaN
    for section in (report["plain"], report["reranked"]):
        a2a = section["protocols"]["A2A"]
        assert a2a == {"scored": False, "reason": reason, "labelled": True, "num_queries": 3, "num_gallery": 0}
        assert section["protocols"]["A2G"]["scored"] and section["protocols"]["A2G"]["num_gallery"] == 3
        assert section["mean"]["num_protocols"] == 2 and section["mean"]["label"] == "mean of 2 protocols"
        evaluated = [section["protocols"][p]["mAP"] for p in ("A2G", "G2A")]
        assert section["mean"]["mAP"] == pytest.approx(np.mean(evaluated))
        assert section["pooled"]["num_queries"] == 6
    assert len(report["warnings"]) == 2 and all("A2A" in w for w in report["warnings"])
    assert "not a complete submission" in report["warnings"][1]

    table = (out / "table.md").read_text()
    assert table.count(f"| A2A | 3 | 0 | not scored: {reason} |") == 2 and table.count("**mean of 2 protocols**") == 2
    assert "> warning: protocol A2A not scored" in table
    with open(out / "submission.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and [r["row_id"] for r in rows] == [str(i) for i in range(1, 7)]
    with np.load(out / "features" / "A2A.npz") as a2a:
        assert a2a["q_feats"].shape[0] == 3 and a2a["g_feats"].shape == (0, a2a["q_feats"].shape[1])
    assert (out / "ranklist.png").is_file() and (out / "cmc.png").is_file()
    # a plain run puts back what it changed for reproducible CPU features
    assert torch.backends.mkldnn.enabled == onednn and os.environ.get("MKL_CBWR") == cbwr


def test_a_protocol_without_any_tracklet_anywhere_still_gives_a_report(shard_root, tmp_path):
    root = tmp_path / "shards"
    shutil.copytree(shard_root, root)
    for case in ("case1_aerial_to_ground", "case2_ground_to_aerial", "case3_aerial_to_aerial"):
        for side in ("query", "gallery"):
            folder = root / case / side
            manifest = json.loads((folder / "manifest.json").read_text())
            for entry in manifest["shards"]:
                (folder / entry["name"]).unlink()
            manifest["shards"] = []
            (folder / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--untrained", "--config", "tiny.yaml", "--data", str(root), "--output", str(out),
                              *OVERRIDES]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["plain"]["mean"] is None and not any(p["scored"] for p in report["plain"]["protocols"].values())
    assert any("no rank list" in w for w in report["warnings"]) and not (out / "ranklist.png").exists()
    assert not (out / "cmc.png").exists() and "no protocol could be scored" in (out / "table.md").read_text()
    assert (out / "submission.csv").read_bytes() == b"row_id,query_tracklet,gallery_tracklets\r\n"


@pytest.mark.parametrize("side", ["query", "gallery"])
def test_a_truncated_shard_is_a_clean_error_naming_it(shard_root, tmp_path, capsys, side):
    root = tmp_path / "shards"
    shutil.copytree(shard_root, root)
    shard = root / "case2_ground_to_aerial" / side / "shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--untrained", "--config", "tiny.yaml", "--data", str(root), "--output", str(out),
                              *OVERRIDES]) == 2
    err = capsys.readouterr().err
    assert f"launcher/evaluate.py: error: {shard}: shard has 3000 bytes" in err and "Traceback" not in err
    assert not (out / "report.json").exists()


@pytest.mark.slow  # every frame of every tracklet through the model
def test_frames_clips_averages_every_frame_and_says_so(shard_root, tmp_path):
    runs = {}
    for frames in ("even", "clips"):
        out = tmp_path / frames
        assert evaluate_cli.main(["--untrained", "--config", "tiny.yaml", "--data", str(shard_root), "--output",
                                  str(out), "--frames", frames, *OVERRIDES, "data.num_frames=2"]) == 0
        with np.load(out / "features" / "A2G.npz") as a2g:
            runs[frames] = (json.loads((out / "report.json").read_text()), a2g["q_feats"], a2g["g_feats"])
    assert runs["even"][0]["settings"]["frame_sampling"] == "evenly spaced"
    assert runs["clips"][0]["settings"]["frame_sampling"] == "every frame in clips of L, averaged"
    assert "every frame in clips of L = 2, averaged" in (tmp_path / "clips" / "table.md").read_text()
    for side in (1, 2):  # tracklets longer than 2 frames get other features, still unit length
        assert runs["even"][side].shape == runs["clips"][side].shape
        assert not np.allclose(runs["even"][side], runs["clips"][side], atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(runs["clips"][side], axis=1), 1.0, atol=1e-5)


def test_an_unknown_eval_frames_setting_is_refused():
    with pytest.raises(ValueError, match="frames"):
        load_config("tiny.yaml", ["eval.frames=all"])


@pytest.fixture(scope="module")
def model_state():
    cfg = load_config("tiny.yaml", ["model.num_classes=4", *OVERRIDES])
    torch.manual_seed(0)
    return cfg, dict(build_model(cfg).state_dict())


def test_a_model_file_with_wrong_shapes_is_an_error_naming_file_and_key(model_state, shard_root, tmp_path, capsys):
    cfg, state = model_state
    state = dict(state, **{"classifier_cls.weight": torch.zeros(5, state["classifier_cls.weight"].shape[1])})
    bad = tmp_path / "model.safetensors"
    save_model_file(bad, state, {"format": "xfd-model-1", "config": dump_config(cfg)})
    argv = ["--checkpoint", str(tmp_path), "--data", str(shard_root), "--output", str(tmp_path / "eval")]
    assert evaluate_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "size mismatch for classifier_cls.weight" in err
    assert not (tmp_path / "eval" / "report.json").exists()


def test_a_model_file_with_missing_and_unexpected_keys_is_an_error_naming_them(model_state, shard_root, tmp_path,
                                                                              capsys):
    cfg, state = model_state
    state = dict(state)
    state["surplus.weight"] = state.pop("classifier_proj.weight")
    bad = tmp_path / "bad.safetensors"
    save_model_file(bad, state, {"format": "xfd-model-1", "config": dump_config(cfg)})
    argv = ["--checkpoint", str(bad), "--data", str(shard_root), "--output", str(tmp_path / "eval")]
    assert evaluate_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "surplus.weight" in err and "missing ['classifier_proj.weight']" in err


def test_the_launchers_local_rank_is_accepted_and_bad_options_refused(capsys):
    args = evaluate_cli.build_parser().parse_args(["--local_rank=1", "--untrained", "--data", "d", "--output", "o"])
    assert args.local_rank == 1 and args.untrained
    assert evaluate_cli.main(["--checkpoint", "m", "--data", "d", "--output", "o", "x=1"]) == 2
    assert evaluate_cli.main(["--untrained", "--data", "d", "--output", "o", "--csv-top", "0"]) == 2
    assert "--csv-top" in capsys.readouterr().err
