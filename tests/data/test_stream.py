"""The tracklet stream: one ordered pass split by rank and worker, evenly spaced frames, unsafe members."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch.utils.data

from xfd.data.errors import DataError
from xfd.data.shard import ShardOptions, shard_dataset
from xfd.data.stream import StreamOptions, tracklet_stream


@pytest.fixture
def shards(detreidx_root, tmp_path):
    out = tmp_path / "shards"
    shard_dataset(detreidx_root, out, ShardOptions(shard_samples=1), progress=False)
    return out


def _keys(folder, options, workers):
    loader = torch.utils.data.DataLoader(tracklet_stream(folder, options), batch_size=None, num_workers=workers)
    return [t["key"] for t in loader]


@pytest.mark.parametrize("world_size, workers", [(1, 0), (1, 2), (2, 0), (3, 2)])
def test_split_by_rank_and_worker_covers_every_sample_once(shards, world_size, workers):
    expected = json.loads((shards / "train" / "manifest.json").read_text())
    expected_keys = sorted(k for e in expected["shards"] for k in e["keys"])
    keys = []
    for rank in range(world_size):
        keys += _keys(shards / "train", StreamOptions(num_frames=4, rank=rank, world_size=world_size), workers)
    assert sorted(keys) == expected_keys


def test_eval_mode_yields_evenly_spaced_frames_in_shard_order(shards):
    tracklets = list(tracklet_stream(shards / "train", StreamOptions(num_frames=4)))
    assert [t["key"] for t in tracklets] == sorted(t["key"] for t in tracklets)
    for t in tracklets:
        stored = len(t["meta"]["frame_names"])
        expected = [(i * stored) // 4 for i in range(4)] if stored >= 4 else list(range(stored)) + [stored - 1] * (4 - stored)
        assert t["frame_indices"] == expected and len(t["frames"]) == 4
        assert all(frame[:2] == b"\xff\xd8" for frame in t["frames"])


def test_unsafe_member_names_are_rejected_naming_the_shard(shards):
    folder = shards / "train"
    victim = folder / "shard-000000.tar"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("../evil.json", b"{}"), ("../evil.0000.jpg", b"\xff\xd8\xff\xd9")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    victim.write_bytes(buffer.getvalue())
    manifest = json.loads((folder / "manifest.json").read_text())  # the size agrees: the names themselves fail
    manifest["shards"][0]["bytes"] = len(buffer.getvalue())
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError) as caught:
        list(tracklet_stream(folder, StreamOptions(num_frames=2)))
    assert "shard-000000.tar" in caught.value.item and "unsafe" in caught.value.rule


def test_incomplete_shard_set_is_refused(shards):
    manifest_path = shards / "train" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["complete"] = False
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="--resume"):
        tracklet_stream(shards / "train")
