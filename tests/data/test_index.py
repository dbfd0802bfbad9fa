"""ShardIndex: random access to a shard set's tracklets — same bytes as tarfile, grouping checks, named errors."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import threading

import pytest

from xfd.cli.shard import main as shard_main
from xfd.data.errors import DataError
from xfd.data.index import ShardIndex

from dataset_builders import standard_detreidx_spec, write_detreidx

TRACKLETS_PER_ID = [1, 2, 3, 4, 2, 1, 3]


def _spec() -> list[dict]:
    """7 train identities with 1..4 tracklets of 3..7 frames, plus a couple of test identities."""
    spec, tid = [], 5000
    for pid, count in enumerate(TRACKLETS_PER_ID, start=1):
        for j in range(count):
            tid += 1
            spec.append(dict(split="train", pid=pid, tid=tid, platform=("ground", "aerial")[j % 2],
                             frames=3 + (pid + j) % 5, session=1 + j % 2))
    return spec + standard_detreidx_spec(train_ids=0, test_ids=2)


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("index")
    source = write_detreidx(base / "src", _spec())
    assert shard_main([str(source), str(base / "shards"), "--shard-samples", "4", "--no-progress",
                       "--workers", "1"]) == 0
    return base / "shards"


@pytest.fixture
def train_copy(shard_root, tmp_path):
    """A private copy of the train set, for tests that damage it."""
    return shutil.copytree(shard_root / "train", tmp_path / "train")


def _tar_members(folder) -> dict[str, bytes]:
    out = {}
    for path in sorted(folder.glob("shard-*.tar")):
        with tarfile.open(path) as tar:
            for info in tar:
                out[info.name] = tar.extractfile(info).read()
    return out


def test_keys_meta_and_frame_counts_follow_the_manifest(shard_root):
    folder = shard_root / "train"
    manifest = json.loads((folder / "manifest.json").read_text())
    index = ShardIndex.open(folder)
    assert index.folder == folder
    assert index.keys == [key for entry in manifest["shards"] for key in entry["keys"]]
    counts = [n for entry in manifest["shards"] for n in entry["frame_counts"]]
    assert [index.num_frames(key) for key in index.keys] == counts
    members = _tar_members(folder)
    for key in index.keys:
        assert index.meta(key) == json.loads(members[f"{key}.json"])


def test_frames_are_the_bytes_tarfile_reads(shard_root):
    index = ShardIndex.open(shard_root / "train")
    members = _tar_members(shard_root / "train")
    for key in index.keys:
        n = index.num_frames(key)
        chosen = [n - 1, 0, n // 2, n // 2]  # any order, repeats allowed
        assert index.frames(key, chosen) == [members[f"{key}.{i:04d}.jpg"] for i in chosen]
    with pytest.raises(IndexError):
        index.frames(index.keys[0], [index.num_frames(index.keys[0])])


def test_reads_from_a_background_thread_while_the_main_thread_reads(shard_root):
    index = ShardIndex.open(shard_root / "train")
    expected = {key: index.frames(key, list(range(index.num_frames(key)))) for key in index.keys}
    index.close()
    seen = []

    def read_all():
        for _ in range(20):
            seen.append(all(index.frames(k, list(range(index.num_frames(k)))) == v for k, v in expected.items()))

    thread = threading.Thread(target=read_all)
    thread.start()
    read_all()
    thread.join()
    assert len(seen) == 40 and all(seen)


def test_labels_to_keys_groups_the_train_split(shard_root):
    index = ShardIndex.open(shard_root / "train")
    groups = index.labels_to_keys()
    assert sorted(groups) == list(range(len(TRACKLETS_PER_ID)))
    assert [len(groups[label]) for label in sorted(groups)] == TRACKLETS_PER_ID
    for label, keys in groups.items():
        assert all(index.meta(key)["label"] == label for key in keys)


def test_unlabelled_split_has_no_label_groups(shard_root):
    index = ShardIndex.open(shard_root / "case1_aerial_to_ground" / "query")
    with pytest.raises(DataError, match="no label"):
        index.labels_to_keys()


def test_truncated_tar_is_named(train_copy):
    victim = train_copy / "shard-000001.tar"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(DataError) as caught:
        ShardIndex.open(train_copy)
    assert "shard-000001.tar" in caught.value.item


def test_shard_truncated_after_open_is_named_on_read(train_copy):
    index = ShardIndex.open(train_copy)
    last = index.keys[-1]
    victim = index.shard_of(last)
    victim.write_bytes(victim.read_bytes()[:1024])
    with pytest.raises(DataError) as caught:
        index.frames(last, [index.num_frames(last) - 1])
    assert victim.name in caught.value.item and last in caught.value.item


def test_incomplete_or_unknown_version_sets_are_refused(train_copy):
    path = train_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(DataError, match="incomplete"):
        ShardIndex.open(train_copy)
    path.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(DataError, match="version 99"):
        ShardIndex.open(train_copy)


def test_badly_grouped_members_are_named(train_copy):
    """A sample whose frames skip a number: shard and key in the error."""
    victim = train_copy / "shard-000000.tar"
    with tarfile.open(victim) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar]
    key = members[0][0].name.split(".")[0]
    with tarfile.open(victim, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            if info.name == f"{key}.0001.jpg":
                info.name = f"{key}.0009.jpg"
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError) as caught:
        ShardIndex.open(train_copy)
    assert "shard-000000.tar" in caught.value.item and key in caught.value.item
    assert "numbered" in caught.value.rule
