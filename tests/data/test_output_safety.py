"""xfd-shard never destroys what it did not write: OUT may not be, contain or lie inside the source, and
--overwrite / --resume act only on an earlier xfd-shard output, deleting only its files. Links out of the
dataset are refused unless asked for, and a full disk is a clear error after which --resume finishes the run."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from xfd.cli.shard import main as shard_main
from xfd.data.errors import DataError
from xfd.data.shard import ShardOptions, shard_dataset

from dataset_builders import write_detreidx


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def source(tmp_path) -> Path:
    spec = [dict(split="train", pid=pid, tid=pid, platform="ground", frames=3) for pid in (1, 2, 3)]
    return write_detreidx(tmp_path / "data" / "src", spec)


@pytest.mark.parametrize("where", ["the source itself", "its parent", "its grandparent", "a folder inside it",
                                   "a link to the source"])
@pytest.mark.parametrize("mode", [[], ["--overwrite"], ["--resume"]])
def test_out_that_is_contains_or_lies_in_the_source_is_refused_and_the_source_survives(source, where, mode,
                                                                                      capsys):
    out = {"the source itself": source, "its parent": source.parent, "its grandparent": source.parent.parent,
           "a folder inside it": source / "train" / "shards", "a link to the source": source.parent / "link"}[where]
    if where == "a link to the source":
        out.symlink_to(source)
    before = _tree(source)
    assert shard_main([str(source), str(out), "--no-progress", *mode]) == 2
    assert "source dataset" in capsys.readouterr().err
    assert _tree(source) == before
    assert not (source / "train" / "shards").exists()


@pytest.mark.parametrize("mode", ["--overwrite", "--resume"])
def test_a_folder_xfd_shard_did_not_write_is_never_replaced(source, tmp_path, mode, capsys):
    foreign = tmp_path / "thesis"
    (foreign / "chapter1").mkdir(parents=True)
    (foreign / "chapter1" / "draft.txt").write_text("years of work")
    (foreign / "shard-000000.tar").write_bytes(b"not ours")
    before = _tree(foreign)
    assert shard_main([str(source), str(foreign), "--no-progress", mode]) == 2
    err = capsys.readouterr().err
    assert str(foreign) in err and "not an xfd-shard output" in err
    assert _tree(foreign) == before


def test_overwrite_replaces_an_earlier_output_deleting_only_its_own_files(source, tmp_path):
    out = tmp_path / "shards"
    args = [str(source), str(out), "--no-progress", "--shard-samples", "1"]
    assert shard_main(args) == 0
    (out / "notes.md").write_text("mine")
    (out / "train" / "plot.png").write_bytes(b"also mine")
    assert len(list((out / "train").glob("shard-*.tar"))) == 3
    assert shard_main(args[:-2] + ["--overwrite"]) == 0  # one shard now
    assert sorted(p.name for p in (out / "train").iterdir()) == ["manifest.json", "plot.png", "shard-000000.tar"]
    assert (out / "notes.md").read_text() == "mine" and json.loads((out / "dataset.json").read_text())["splits"]


def test_a_killed_run_can_be_resumed_or_replaced_before_dataset_json_exists(source, tmp_path):
    out = tmp_path / "shards"
    shard_dataset(source, out, ShardOptions(), progress=False)
    (out / "dataset.json").unlink()  # as after a kill: the marker, written first, still says whose folder it is
    assert (out / ".xfd-shard").is_file()
    shard_dataset(source, out, ShardOptions(), resume=True, progress=False)
    shard_dataset(source, out, ShardOptions(), overwrite=True, progress=False)


# ---------------------------------------------------------------------------------------------------- links

def _outside_frame(tmp_path: Path) -> Path:
    elsewhere = write_detreidx(tmp_path / "elsewhere", [dict(split="train", pid=1, tid=9, platform="ground",
                                                             frames=1)])
    return next((elsewhere / "train" / "0001" / "0001_9").iterdir())


def test_a_frame_linking_out_of_the_dataset_is_refused_by_default(source, tmp_path):
    frame = source / "train" / "0002" / "0002_2" / "0002_23_10_2024_G1_S1_00099.jpg"
    frame.symlink_to(_outside_frame(tmp_path))
    with pytest.raises(DataError) as caught:
        shard_dataset(source, tmp_path / "out", ShardOptions(), progress=False)
    assert caught.value.item == "train/0002/0002_2/0002_23_10_2024_G1_S1_00099.jpg"
    assert "leading out of the dataset" in caught.value.rule and "--follow-symlinks" in caught.value.rule


def test_a_tracklet_folder_linking_out_is_refused_and_followed_on_request(source, tmp_path):
    target = _outside_frame(tmp_path).parent
    (source / "train" / "0001" / "0001_9").symlink_to(target)
    with pytest.raises(DataError) as caught:
        shard_dataset(source, tmp_path / "out", ShardOptions(), progress=False)
    assert caught.value.item == "train/0001/0001_9" and "leading out of the dataset" in caught.value.rule

    result = shard_dataset(source, tmp_path / "out", ShardOptions(follow_symlinks=True), progress=False)
    manifest = result.manifests["train"]
    assert "0001_9" in manifest["shards"][0]["keys"]
    assert manifest["links_followed"] == [{"path": "train/0001/0001_9", "resolved": str(target.resolve())}]


def test_links_inside_the_dataset_are_read_without_ado(source, tmp_path):
    folder = source / "train" / "0003" / "0003_3"
    first = sorted(folder.iterdir())[0]
    (folder / "0003_23_10_2024_G1_S1_00099.jpg").symlink_to(first)
    result = shard_dataset(source, tmp_path / "out", ShardOptions(), progress=False)
    assert result.manifests["train"]["totals"]["frames"] == 10 and result.manifests["train"]["links_followed"] == []


# ---------------------------------------------------------------------------------------------------- ENOSPC

def test_disk_full_is_named_and_resume_finishes_the_run(source, tmp_path, monkeypatch, capsys):
    """The third shard's write fails with ENOSPC, as a full disk makes os.write fail."""
    import xfd.data.shard as shard_module

    real_atomic_output = shard_module.atomic_output
    writes = {"shards": 0}

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def failing_third_shard(path, *args, **kwargs):
        from contextlib import contextmanager

        @contextmanager
        def wrapped():
            with real_atomic_output(path, *args, **kwargs) as handle:
                writes["shards"] += 1
                if writes["shards"] == 3:
                    writes["failed"] = path
                    yield FullDisk(handle)
                else:
                    yield handle

        return wrapped()

    monkeypatch.setattr(shard_module, "atomic_output", failing_third_shard)
    out = tmp_path / "out"
    args = [str(source), str(out), "--no-progress", "--shard-samples", "1", "--workers", "1"]
    assert shard_main(args) == 2
    err = capsys.readouterr().err
    assert f"disk full while writing {writes['failed']}" in err and "--resume" in err
    assert not [p for p in (out / "train").iterdir() if p.name.endswith(".tmp")]  # no temporary left behind

    monkeypatch.setattr(shard_module, "atomic_output", real_atomic_output)
    assert shard_main(args + ["--resume"]) == 0
    assert shard_main([str(source), str(tmp_path / "clean"), *args[2:]]) == 0
    assert _tree(out) == _tree(tmp_path / "clean")
