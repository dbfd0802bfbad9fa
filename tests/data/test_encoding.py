"""The one data encoding: shard metadata → the model's platform / meta tensors, checked, and the one collate."""

from __future__ import annotations

import pytest
import torch

from xfd.data.encoding import (AERIAL, BIN_FIELDS, BIN_LIMITS, GROUND, PLATFORMS, Batch, collate,
                               encode_tracklet)
from xfd.data.errors import DataError
from xfd.data.metadata import capture_bins, no_metadata_bins
from xfd.model.prompts import NUM_PLATFORMS


def _meta(platform="aerial", bins=None, pid=7, label=3, camid=12) -> dict:
    bins = bins if bins is not None else capture_bins(platform, 30.0, 20.0, 60.0)
    return {"platform": platform, "bins": bins, "pid": pid, "label": label, "camid": camid}


def test_codes_follow_the_shard_format():
    assert (GROUND, AERIAL) == (0, 1) and len(PLATFORMS) == NUM_PLATFORMS  # the prompts' rows
    assert BIN_FIELDS == ("altitude", "distance", "angle") and BIN_LIMITS == (18, 18, 3)
    aerial = encode_tracklet(_meta(), "s.tar [k]")
    expected = capture_bins("aerial", 30.0, 20.0, 60.0)
    assert aerial.platform == 1 and aerial.bins == tuple(expected[f] for f in BIN_FIELDS)
    assert (aerial.pid, aerial.label, aerial.camid) == (7, 3, 12)
    ground = encode_tracklet(_meta("ground", no_metadata_bins(), label=None), "s.tar [g]")
    assert ground.platform == 0 and ground.bins == (18, 18, 3) and ground.label is None
    assert encode_tracklet(_meta(pid=None, label=None), "s.tar [u]").pid is None  # an unlabelled split


@pytest.mark.parametrize("change, rule", [
    (dict(platform="drone"), "unknown platform 'drone'"),
    (dict(bins=[1, 2, 0]), "metadata 'bins' must be an object"),
    (dict(bins={"altitude": 1, "distance": 2}), "bins.angle = None is outside 0..3"),
    (dict(bins={"altitude": 19, "distance": 2, "angle": 0}), "bins.altitude = 19 is outside 0..18"),
    (dict(bins={"altitude": 1, "distance": -1, "angle": 0}), "bins.distance = -1 is outside 0..18"),
    (dict(bins={"altitude": 1, "distance": 2, "angle": 4}), "bins.angle = 4 is outside 0..3"),
    (dict(bins={"altitude": 1.5, "distance": 2, "angle": 0}), "bins.altitude = 1.5 is outside 0..18"),
    (dict(camid="3"), "camid must be an integer, got '3'"),
    (dict(pid=True), "pid must be an integer or null"),
    (dict(label=-2), "label must be >= 0"),
])
def test_bad_metadata_is_an_error_naming_shard_and_key(change, rule):
    with pytest.raises(DataError) as caught:
        encode_tracklet({**_meta(), **change}, "data/train/shard-000003.tar [0004_0012]")
    assert caught.value.item == "data/train/shard-000003.tar [0004_0012]" and rule in caught.value.rule


def test_collate_builds_the_batch_training_and_extraction_share():
    frames = torch.randn(3, 2, 3, 8, 4)  # (B, L, 3, H, W)
    metas = [_meta(), _meta("ground", no_metadata_bins(), pid=9, label=5, camid=0), _meta(pid=4, label=0)]
    batch = collate(frames, ["a", "b", "c"], metas, ["s0.tar", "s0.tar", "s1.tar"], with_labels=True)
    assert batch.frames is frames and batch.keys == ["a", "b", "c"] and batch.pids == [7, 9, 4]
    assert batch.platform.tolist() == [1, 0, 1] and batch.labels.tolist() == [3, 5, 0]
    assert batch.camids.tolist() == [12, 0, 12]
    assert batch.meta.shape == (3, 3) and batch.meta[1].tolist() == [18, 18, 3]
    assert all(t.dtype == torch.long for t in (batch.platform, batch.meta, batch.camids, batch.labels))
    extraction = collate(frames, ["a", "b", "c"], metas, ["s0.tar", "s0.tar", "s1.tar"], with_labels=False)
    assert extraction.labels is None and torch.equal(extraction.meta, batch.meta)


def test_collate_without_a_label_or_with_mismatched_lengths_is_refused():
    frames = torch.zeros(2, 1, 3, 4, 2)
    with pytest.raises(DataError, match=r"s1.tar \[b\]: no training label"):
        collate(frames, ["a", "b"], [_meta(), _meta(label=None)], ["s0.tar", "s1.tar"], with_labels=True)
    with pytest.raises(ValueError, match="2 clips of frames for 3 keys"):
        collate(frames, ["a", "b", "c"], [_meta()] * 3, ["s"] * 3, with_labels=False)


def test_batch_to_the_cpu_keeps_the_tensors_and_lists_them():
    batch = collate(torch.zeros(1, 1, 3, 4, 2), ["a"], [_meta()], ["s"], with_labels=False)
    assert isinstance(batch.to("cpu"), Batch) and batch.to("cpu").frames is batch.frames
    assert len(batch.tensors()) == 4  # frames, platform, meta, camids (no labels)
