"""Damaged or contradictory shard sets meet every reader — the stream (evaluation), ShardIndex (training) and
`xfd-shard --verify` — and each names the file, shard and key; nothing is read short or accepted silently."""

from __future__ import annotations

import json
import shutil

import pytest

from xfd.cli.shard import main as shard_main
from xfd.data.errors import DataError
from xfd.data.index import ShardIndex
from xfd.data.shard import ShardOptions, shard_dataset
from xfd.data.stream import StreamOptions, tracklet_stream
from xfd.data.verify import verify_dataset

from dataset_builders import edit_manifest, member_offset, rewrite_sample_json


@pytest.fixture(scope="module")
def pristine(detreidx_root_module, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "shards"
    shard_dataset(detreidx_root_module, out, ShardOptions(shard_samples=3), progress=False)
    return out


@pytest.fixture
def shards(pristine, tmp_path):
    """A private copy of the shard set, for one test to damage."""
    return shutil.copytree(pristine, tmp_path / "shards")


def _stream(folder):
    return list(tracklet_stream(folder, StreamOptions(num_frames=2)))


def _problems(root) -> list[str]:
    return [problem for report in verify_dataset(root, progress=False) for problem in report.problems]


def _every_reader_refuses(folder, *parts) -> None:
    """The stream and ShardIndex raise a DataError whose text has every one of `parts`; --verify reports it."""
    for read in (_stream, ShardIndex.open):
        with pytest.raises(DataError) as caught:
            read(folder)
        assert all(part in str(caught.value) for part in parts), (read, str(caught.value))
    root = folder.parent if (folder.parent / "dataset.json").is_file() else folder.parent.parent
    assert any(all(part in problem for part in parts) for problem in _problems(root)), _problems(root)


def _first_sample(folder) -> tuple[str, str]:
    entry = json.loads((folder / "manifest.json").read_text())["shards"][0]
    return entry["name"], entry["keys"][0]


def test_sample_pid_that_disagrees_with_its_key(shards):
    folder = shards / "train"
    shard, key = _first_sample(folder)
    rewrite_sample_json(folder / shard, key, pid=99)
    _every_reader_refuses(folder, shard, key, "pid 99 disagrees with the sample key")


def test_manifest_pid_that_disagrees_with_the_sample(shards):
    folder = shards / "train"
    shard, key = _first_sample(folder)

    def edit(manifest):
        manifest["shards"][0]["pids"][0] = 99

    edit_manifest(folder, edit)
    _every_reader_refuses(folder, shard, key, "manifest, which lists pid 99")


def test_bins_out_of_range_name_the_shard_and_key(shards):
    folder = shards / "case2_ground_to_aerial" / "gallery"
    shard, key = _first_sample(folder)
    rewrite_sample_json(folder / shard, key, bins={"altitude": 25, "distance": 0, "angle": 2})
    _every_reader_refuses(folder, shard, key, "bins.altitude = 25 is outside 0..18")


@pytest.mark.parametrize("name", ["/elsewhere/x.tar", "../train/shard-000000.tar", "sub/shard-000000.tar"])
def test_manifest_shard_names_must_be_plain_names_in_the_folder(shards, name):
    folder = shards / "train"

    def edit(manifest):
        manifest["shards"][0]["name"] = name

    edit_manifest(folder, edit)
    _every_reader_refuses(folder, "manifest.json", repr(name), "not a plain file name")


@pytest.mark.parametrize("broken", ["dataset.json", "train/manifest.json"])
def test_broken_json_names_the_file(shards, broken, capsys):
    path = shards / broken
    path.write_text(path.read_text()[:40])
    if broken.endswith("manifest.json"):
        for read in (_stream, ShardIndex.open):
            with pytest.raises(DataError, match="manifest.json: shard-set manifest is not valid JSON"):
                read(shards / "train")
    assert shard_main(["--verify", str(shards), "--no-progress"]) == 1
    assert f"{path}: " in capsys.readouterr().err


def test_verify_fails_when_a_listed_split_lost_its_manifest(shards, capsys):
    (shards / "case1_aerial_to_ground" / "query" / "manifest.json").unlink()
    assert shard_main(["--verify", str(shards), "--no-progress"]) == 1
    assert "lists split 'case1_aerial_to_ground/query' but" in capsys.readouterr().err


def test_verify_fails_on_a_split_that_dataset_json_does_not_list(shards, capsys):
    def unlist(index):
        del index["splits"]["case3_aerial_to_aerial/gallery"]

    path = shards / "dataset.json"
    index = json.loads(path.read_text())
    unlist(index)
    path.write_text(json.dumps(index))
    assert shard_main(["--verify", str(shards), "--no-progress"]) == 1
    assert "case3_aerial_to_aerial/gallery: shard set found on disk but" in capsys.readouterr().err


def test_stream_over_a_shard_cut_at_a_sample_boundary_raises_naming_it(shards):
    folder = shards / "train"
    entry = json.loads((folder / "manifest.json").read_text())["shards"][1]
    shard = folder / entry["name"]
    cut = member_offset(shard, f"{entry['keys'][1]}.json")  # the first sample survives whole
    shard.write_bytes(shard.read_bytes()[:cut])
    with pytest.raises(DataError) as caught:
        _stream(folder)
    assert caught.value.item == str(shard) and f"shard has {cut} bytes, its manifest entry" in caught.value.rule
    manifest = json.loads((folder / "manifest.json").read_text())  # a manifest without sizes: counted as read
    del manifest["shards"][1]["bytes"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError) as caught:
        _stream(folder)
    assert caught.value.item == str(shard) and "1 samples read where the manifest lists 3" in caught.value.rule


def test_stream_over_a_shard_cut_inside_a_member_raises_naming_it(shards):
    folder = shards / "train"
    shard, key = _first_sample(folder)
    shard = folder / shard
    cut = member_offset(shard, f"{key}.0001.jpg") + 512 + 10  # inside the second frame's bytes
    shard.write_bytes(shard.read_bytes()[:cut])
    with pytest.raises(DataError) as caught:
        _stream(folder)
    assert caught.value.item == str(shard) and "truncated" in caught.value.rule
