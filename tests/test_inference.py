"""Feature extraction from real shards: labels, metadata columns and order, padding of the last batch, 1 rank ≡ 2
ranks (in one process and as two gloo processes), dense clips averaged, unlabelled splits, error cases (truncated
shards, non-integer pids), and held-out validation end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from xfd.config import load_config
from xfd.data.errors import DataError
from xfd.data.pipeline import FramePipeline
from xfd.data.shard import ShardOptions, shard_dataset
from xfd.data.stream import StreamOptions, tracklet_stream
from xfd.eval.heldout import validate
from xfd.inference import TRACKLET_COLUMNS, UNKNOWN, FeatureSet, extract_split, gather_feature_sets
from xfd.model import build_model

from dataset_builders import write_detreidx
from unlabelled_shards import unlabelled_shards

OVERRIDES = ["model.num_classes=2", "model.backbone.image_size=[32,16]"]
IMAGE_SIZE = (32, 16)
FRAMES = 4
VAL_IDS = 3


def _spec():
    """5 train identities, each seen by two ground cameras and from two aerial capture points."""
    spec, tid = [], 1000
    for pid in range(1, 6):
        views = [("ground", dict(camera=1)), ("ground", dict(camera=2)),
                 ("aerial", dict(capture=(30, 5.8, 10))), ("aerial", dict(capture=(60, 30, 20)))]
        for platform, extra in views:
            tid += 1
            spec.append(dict(split="train", pid=pid, tid=tid, platform=platform, frames=2 + tid % 5, **extra))
    return spec


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    """The held-out `val` shard set: 3 identities × 4 tracklets in shards of ≤ 5 (5, 5, 2)."""
    root = tmp_path_factory.mktemp("extract")
    write_detreidx(root / "src", _spec())
    shard_dataset(root / "src", root / "shards", ShardOptions(val_ids=VAL_IDS, shard_samples=5), progress=False)
    return root / "shards" / "val"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(load_config("tiny.yaml", OVERRIDES).model)


def _extract(model, folder, **kwargs):
    options = dict(num_frames=FRAMES, batch_size=5, image_size=IMAGE_SIZE, num_threads=1, progress=False)
    options.update(kwargs)
    return extract_split(model, folder, **options)


def _assert_same(a: FeatureSet, b: FeatureSet, atol=1e-5):
    assert a.keys == b.keys
    np.testing.assert_allclose(a.features, b.features, atol=atol, rtol=0)
    for name in ("pids", "camids", "platform"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_features_are_normalised_labelled_in_key_order_and_mode_is_restored(model, val_split):
    manifest = json.loads((val_split / "manifest.json").read_text())
    keys = [k for shard in manifest["shards"] for k in shard["keys"]]
    camids = [c for shard in manifest["shards"] for c in shard["camids"]]
    pids = [p for shard in manifest["shards"] for p in shard["pids"]]
    model.train()
    out = _extract(model, val_split)
    assert model.training  # the previous mode is given back
    assert out.keys == sorted(keys) and len(out) == 4 * VAL_IDS
    assert out.features.dtype == np.float32 and out.features.shape == (len(out), model.feature_dim)
    np.testing.assert_allclose(np.linalg.norm(out.features, axis=1), 1.0, atol=1e-5)
    by_key = dict(zip(keys, zip(pids, camids)))
    assert out.pids.tolist() == [by_key[k][0] for k in out.keys]
    assert out.camids.tolist() == [by_key[k][1] for k in out.keys]
    # capture-point camid rule: ground 0..9, aerial 10 + capture point
    assert out.platform.dtype == np.int8 and out.platform.tolist() == [int(c >= 10) for c in out.camids]
    assert sorted(np.bincount(out.platform).tolist()) == [2 * VAL_IDS, 2 * VAL_IDS]
    # the tracklets' metadata travels with the features
    assert set(out.meta) == set(TRACKLET_COLUMNS) and out.names == out.keys
    aerial, ground = out.platform == 1, out.platform == 0
    assert set(out.meta["height"][aerial].tolist()) == {5.8, 30.0} and np.isnan(out.meta["height"][ground]).all()
    assert set(out.meta["angle"][aerial].tolist()) == {30.0, 60.0} and (out.meta["angle_bin"][ground] == 3).all()
    assert (out.meta["session"] == 1).all() and (out.meta["folder_pid"] == out.pids).all()


def test_padded_last_batch_equals_batches_of_one(model, val_split):
    padded = _extract(model, val_split, batch_size=5)  # 12 tracklets: 5 + 5 + 2 padded to 5
    alone = _extract(model, val_split, batch_size=1, flip_tta=True)
    _assert_same(padded, alone)
    no_tta = _extract(model, val_split, batch_size=5, flip_tta=False)
    assert not np.allclose(no_tta.features, padded.features, atol=1e-4)  # flip TTA is applied


def test_two_ranks_concatenated_equal_one_rank(model, val_split):
    whole = _extract(model, val_split)
    parts = [_extract(model, val_split, batch_size=3, rank=r, world_size=2) for r in range(2)]
    assert [len(p) for p in parts] == [7, 5]  # shards 0 and 2 | shard 1
    assert not set(parts[0].keys) & set(parts[1].keys)
    _assert_same(FeatureSet.concatenate(parts[::-1]), whole)
    assert gather_feature_sets(whole, 1) is not whole and gather_feature_sets(whole, 1).keys == whole.keys


def test_dense_clips_average_every_clip_of_a_tracklet(model, val_split):
    """Clips of L = 2 over tracklets of 2-6 frames: 1-3 clips each, split across batches of 3 clips. Reference: each
    clip alone through the eval pipeline and the model, the mean L2-normalised."""
    dense = _extract(model, val_split, num_frames=2, batch_size=3, clips=True)
    pipe = FramePipeline(tracklets=1, frames=2, image_size=IMAGE_SIZE, augment=None, num_threads=1)
    expected, clip_counts = {}, {}
    model.eval()
    with torch.no_grad():
        for t in tracklet_stream(val_split, StreamOptions(num_frames=2, clips=True)):
            assert sorted(set(sum(t["clip_indices"], []))) == list(range(len(t["meta"]["frame_names"])))
            platform = torch.tensor([{"ground": 0, "aerial": 1}[t["meta"]["platform"]]])  # (1,)
            meta = torch.tensor([[t["meta"]["bins"][k] for k in ("altitude", "distance", "angle")]])  # (1, 3)
            clips = [model.extract(pipe.run([clip])[0], platform, meta, flip_tta=True)[0].numpy()
                     for clip in t["clips"]]  # each (D,)
            mean = np.mean(clips, axis=0)
            expected[t["key"]], clip_counts[t["key"]] = mean / np.linalg.norm(mean), len(clips)
    assert sorted(set(clip_counts.values())) == [1, 2, 3]
    np.testing.assert_allclose(dense.features, np.stack([expected[k] for k in dense.keys]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(dense.features, axis=1), 1.0, atol=1e-5)
    even = _extract(model, val_split, num_frames=2)
    assert even.keys == dense.keys
    for row, key in enumerate(dense.keys):  # one clip: the same frames as evenly spaced; more: another feature
        same = np.allclose(even.features[row], dense.features[row], atol=1e-5)
        assert same == (clip_counts[key] == 1), key


@pytest.mark.slow  # two gloo processes
def test_dense_clips_on_two_ranks_equal_one_rank(model, val_split):
    whole = _extract(model, val_split, num_frames=2, batch_size=5, clips=True)
    parts = [_extract(model, val_split, num_frames=2, batch_size=2, clips=True, rank=r, world_size=2) for r in range(2)]
    _assert_same(FeatureSet.concatenate(parts), whole)


def test_a_rank_without_shards_returns_an_empty_part(model, val_split):
    empty = _extract(model, val_split, rank=4, world_size=5)  # 3 shards for 5 ranks
    assert len(empty) == 0 and empty.features.shape == (0, model.feature_dim)


_RANK_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, torch, torch.distributed as dist
    from xfd.config import load_config
    from xfd.model import build_model
    from xfd.inference import extract_split, gather_feature_sets
    rank, world, folder, weights, init, out = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model = build_model(load_config("tiny.yaml", {overrides!r}).model)
    model.load_state_dict(torch.load(weights))
    part = extract_split(model, folder, num_frames={frames}, batch_size=3, image_size={size!r}, rank=rank,
                         world_size=world, num_threads=1, progress=False)
    full = gather_feature_sets(part, world)
    np.savez(out, keys=np.array(full.keys), features=full.features, pids=full.pids, camids=full.camids,
             platform=full.platform, part=len(part))
    dist.destroy_process_group()
""").format(overrides=OVERRIDES, frames=FRAMES, size=IMAGE_SIZE)


@pytest.mark.slow  # two gloo processes
def test_two_gloo_processes_gather_the_one_rank_result(model, val_split, tmp_path):
    weights = tmp_path / "model.pt"
    torch.save(model.state_dict(), weights)
    init = f"file://{tmp_path / 'rendezvous'}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(rank), "2", str(val_split), str(weights),
                               init, str(tmp_path / f"rank{rank}.npz")], env=env, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(errors)
    whole = _extract(model, val_split)
    for rank in range(2):
        with np.load(tmp_path / f"rank{rank}.npz") as got:
            assert int(got["part"]) == [7, 5][rank]
            gathered = FeatureSet(got["keys"].tolist(), got["features"], got["pids"], got["camids"], got["platform"])
        _assert_same(gathered, whole)


def test_gather_without_process_group_is_an_error(model):
    part = FeatureSet(["a"], np.ones((1, 2), np.float32) / np.sqrt(2), np.array([1]), np.array([0]),
                      np.array([0], np.int8))
    with pytest.raises(RuntimeError, match="not initialised"):
        gather_feature_sets(part, 2)


def test_duplicate_keys_across_parts_are_an_error():
    part = FeatureSet(["a"], np.ones((1, 2), np.float32), np.array([1]), np.array([0]), np.array([0], np.int8))
    with pytest.raises(ValueError, match="more than one part"):
        FeatureSet.concatenate([part, part])


def test_missing_split_is_an_error_naming_the_folder(model, tmp_path):
    with pytest.raises(DataError) as caught:
        _extract(model, tmp_path / "nowhere")
    assert "nowhere" in caught.value.item


class _NaNForAerial(nn.Module):
    """A stand-in model whose aerial features are NaN."""

    feature_dim = 2

    def extract(self, frames, platform, meta, flip_tta=False):
        out = torch.ones(frames.shape[0], 2) / 2**0.5  # (B, 2)
        out[platform == 1] = float("nan")
        return out


def test_nan_features_are_an_error_naming_the_tracklets(val_split):
    manifest = json.loads((val_split / "manifest.json").read_text())
    aerial = sorted(k for s in manifest["shards"] for k, c in zip(s["keys"], s["camids"]) if c >= 10)
    with pytest.raises(ValueError, match="NaN or inf features for 6 tracklet") as caught:
        _extract(_NaNForAerial(), val_split)
    assert str(caught.value).endswith(": " + ", ".join(aerial)) and str(val_split) in str(caught.value)


def test_heldout_validation_of_extracted_features(model, val_split):
    features = _extract(model, val_split)
    results = validate(features)
    assert results.warnings == []  # every protocol is evaluable
    assert sorted(results.scored) == ["A2A", "A2G", "G2A"] and results.mean.num_protocols == 3
    for name, outcome in results.protocols.items():
        assert outcome.metrics.num_queries == 2 * VAL_IDS and outcome.metrics.num_skipped == 0, name
        assert 0 < outcome.metrics.mAP <= 1


def test_empty_split_is_an_error_naming_the_folder(model, tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"complete": True, "shards": []}))
    with pytest.raises(DataError, match="empty") as caught:
        _extract(model, folder)
    assert str(folder) in caught.value.item


def _rewrite_sample(folder: Path, key: str, change) -> None:
    """Rewrite one sample's JSON in its shard (sizes may change: the manifest's byte count follows)."""
    import io
    import tarfile

    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(e for e in manifest["shards"] if key in e["keys"])
    path = folder / entry["name"]
    out = io.BytesIO()
    with tarfile.open(path) as src, tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as dst:
        for info in src:
            data = src.extractfile(info).read()
            if info.name == f"{key}.json":
                data = json.dumps(change(json.loads(data))).encode()
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    path.write_bytes(out.getvalue())
    entry["bytes"] = len(out.getvalue())
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("pid", ["7", 7.5, None, True])
def test_a_pid_that_is_not_an_integer_is_an_error_naming_shard_and_tracklet(model, val_split, tmp_path, pid):
    folder = tmp_path / "val"
    shutil.copytree(val_split, folder)
    key = json.loads((folder / "manifest.json").read_text())["shards"][1]["keys"][2]
    _rewrite_sample(folder, key, lambda meta: dict(meta, pid=pid))
    with pytest.raises(DataError, match=f"pid must be an integer, got {pid!r}") as caught:
        _extract(model, folder)
    assert caught.value.item.endswith(f"shard-000001.tar [{key}]")


def test_a_truncated_shard_is_an_error_naming_it(model, val_split, tmp_path):
    folder = tmp_path / "val"
    shutil.copytree(val_split, folder)
    shard = folder / "shard-000001.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated") as caught:
        _extract(model, folder)
    assert caught.value.item == str(shard)
    parts = [_extract(model, folder, rank=r, world_size=2) for r in (0,)]  # a rank without the shard is unaffected
    assert len(parts[0]) == 7


def test_an_unlabelled_split_gives_features_without_pids(model, tmp_path):
    source = write_detreidx(tmp_path / "src", [dict(entry, split="case9_aerial_to_ground/query") for entry in _spec()])
    shard_dataset(source, tmp_path / "shards", ShardOptions(), progress=False)
    anonymous, renamed = unlabelled_shards(source, tmp_path)  # scrambled folders, xfd-shard --unlabelled
    labelled = _extract(model, tmp_path / "shards" / "case9_aerial_to_ground" / "query")
    folder = anonymous / "case9_aerial_to_ground" / "query"
    unlabelled = _extract(model, folder)
    assert not unlabelled.labelled and unlabelled.pids is None and len(unlabelled) == len(labelled)
    assert unlabelled.names == sorted(renamed[k] for k in labelled.keys)
    assert (unlabelled.meta["folder_pid"] == UNKNOWN).all()
    order = [unlabelled.names.index(renamed[k]) for k in labelled.keys]
    np.testing.assert_allclose(unlabelled.features[order], labelled.features, atol=1e-6)
    np.testing.assert_array_equal(unlabelled.camids[order], labelled.camids)
    key = unlabelled.keys[3]
    _rewrite_sample(folder, key, lambda meta: dict(meta, pid=12))
    with pytest.raises(DataError, match="sample of an unlabelled split carries pid 12 \\/ label None \\(must be null\\)"):
        _extract(model, folder)
