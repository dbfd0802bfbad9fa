"""Evaluating a model file on a shard root: protocol discovery from dataset.json (a split listed but missing, or
present but not listed, is an error naming it), the evaluate CLI's report files, strict loading of model files,
and the demo's comparison table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from xfd.cli import evaluate as evaluate_cli
from xfd.cli.demo import compare
from xfd.config import dump_config, load_config
from xfd.engine.checkpoint import load_trained_model, save_model_file
from xfd.data.errors import DataError
from xfd.eval.shard_protocols import find_protocols
from xfd.model import build_model

from dataset_builders import sharded_detreidx

OVERRIDES = ["model.num_classes=6", "model.backbone.image_size=[32,16]", "data.num_frames=4", "eval.batch_size=4",
             "data.dali_threads=1"]


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory):
    return sharded_detreidx(tmp_path_factory.mktemp("model_eval"), train_ids=6, test_ids=3)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    cfg = load_config("tiny.yaml", OVERRIDES)
    torch.manual_seed(3)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model_file(path, model.state_dict(), {"format": "xfd-model-1", "config": dump_config(cfg)})
    return path, model


def test_protocols_are_found_in_dataset_json(shard_root):
    found = find_protocols(shard_root)
    assert [(p.name, p.query, p.gallery) for p in found] == [
        ("A2G", "case1_aerial_to_ground/query", "case1_aerial_to_ground/gallery"),
        ("G2A", "case2_ground_to_aerial/query", "case2_ground_to_aerial/gallery"),
        ("A2A", "case3_aerial_to_aerial/query", "case3_aerial_to_aerial/gallery")]


def test_mars_style_and_g2a2_pairs_are_found(tmp_path):
    splits = ("train", "query", "gallery", "a2g_query", "a2g_gallery")
    (tmp_path / "dataset.json").write_text(json.dumps({"splits": {s: {} for s in splits}}))
    for split in splits[1:]:
        (tmp_path / split).mkdir()
        (tmp_path / split / "manifest.json").write_text("{}")
    assert [(p.name, p.query, p.gallery) for p in find_protocols(tmp_path)] == [
        ("a2g", "a2g_query", "a2g_gallery"), ("query/gallery", "query", "gallery")]


def _listing(root) -> dict:
    return json.loads((root / "dataset.json").read_text())


def test_a_split_listed_but_missing_is_an_error_naming_it(shard_root, tmp_path):
    root = tmp_path / "shards"
    shutil.copytree(shard_root, root)
    shutil.rmtree(root / "case2_ground_to_aerial" / "gallery")
    with pytest.raises(DataError, match="split case2_ground_to_aerial/gallery is listed in dataset.json but is not "
                                        "on disk"):
        find_protocols(root)


def test_a_split_listed_without_its_other_side_is_an_error(shard_root, tmp_path):
    root = tmp_path / "shards"
    shutil.copytree(shard_root, root)
    shutil.rmtree(root / "case3_aerial_to_aerial" / "query")
    listing = _listing(root)
    del listing["splits"]["case3_aerial_to_aerial/query"]
    (root / "dataset.json").write_text(json.dumps(listing))
    with pytest.raises(DataError, match="split case3_aerial_to_aerial/gallery is listed without its "
                                        "case3_aerial_to_aerial/query"):
        find_protocols(root)


def test_a_split_present_but_not_listed_is_an_error_naming_it(shard_root, tmp_path):
    root = tmp_path / "shards"
    shutil.copytree(shard_root, root)
    listing = _listing(root)
    for side in ("query", "gallery"):  # today's behaviour would drop the protocol silently
        del listing["splits"][f"case1_aerial_to_ground/{side}"]
    (root / "dataset.json").write_text(json.dumps(listing))
    with pytest.raises(DataError, match="case1_aerial_to_ground/gallery, case1_aerial_to_ground/query on disk but "
                                        "not listed") as caught:
        find_protocols(root)
    assert caught.value.item == str(root / "case1_aerial_to_ground" / "gallery")


def test_model_files_round_trip_strictly(model_file):
    path, model = model_file
    loaded, cfg, metadata = load_trained_model(path)
    assert cfg.model.num_classes == 6 and metadata["format"] == "xfd-model-1"
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_model_file_that_does_not_fit_its_config_names_the_keys(model_file, tmp_path):
    path, model = model_file
    state = dict(model.state_dict())
    state.pop("classifier_cls.weight")
    cfg = load_config("tiny.yaml", OVERRIDES)
    bad = tmp_path / "bad.safetensors"
    save_model_file(bad, state, {"config": dump_config(cfg)})
    with pytest.raises(ValueError, match="classifier_cls.weight"):
        load_trained_model(bad)


@pytest.mark.slow  # the whole evaluation CLI
def test_evaluate_cli_writes_the_report(model_file, shard_root, tmp_path, capsys):
    path, _ = model_file
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--checkpoint", str(path), "--data", str(shard_root), "--output", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["plain"]["protocols"]) == {"A2G", "G2A", "A2A"} and report["final"] == "plain"
    for metrics in report["plain"]["protocols"].values():
        assert metrics["num_queries"] == 3 and 0.0 < metrics["mAP"] <= 1.0
    assert (out / "cmc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "A2G" in (out / "table.md").read_text() and "mean of 3 protocols" in capsys.readouterr().out


def test_demo_comparison_requires_a_gain_on_every_protocol():
    before = {"protocols": {"A2G": {"mAP": 0.2}, "G2A": {"mAP": 0.3}}, "mean": {"mAP": 0.25}}
    after = {"protocols": {"A2G": {"mAP": 0.5}, "G2A": {"mAP": 0.29}}, "mean": {"mAP": 0.395}}
    table, better = compare(before, after)
    assert not better and "+30.00" in table and "-1.00" in table
    after["protocols"]["G2A"]["mAP"] = 0.31
    assert compare(before, after)[1]
    assert "+14.50" in compare(before, after)[0].splitlines()[-1]  # the mean row: 39.50 against 25.00
