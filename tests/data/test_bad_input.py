"""Each kind of bad input is a clear error naming the item, or a counted, listed skip under --on-error skip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from xfd.data.errors import DataError
from xfd.data.jpeg import check_jpeg_decodes, check_jpeg_structure
from xfd.data.shard import ShardOptions, shard_dataset

from dataset_builders import detreidx_frame_name, jpeg_bytes, write_detreidx


def _tracklet_folder(root: Path, pid: int, tid) -> Path:
    return root / "train" / f"{pid:04d}" / f"{pid:04d}_{tid}"


@pytest.fixture
def source(tmp_path) -> Path:
    spec = [dict(split="train", pid=pid, tid=pid, platform="ground", frames=3) for pid in (1, 2, 3)]
    return write_detreidx(tmp_path / "src", spec)


def _shard(source: Path, out: Path, on_error: str = "raise"):
    return shard_dataset(source, out, ShardOptions(on_error=on_error), progress=False)


def _assert_error(source: Path, tmp_path: Path, item: Path, rule_part: str) -> None:
    """The run stops with an error naming `item` by its path relative to the dataset root."""
    with pytest.raises(DataError) as caught:
        _shard(source, tmp_path / "out")
    assert caught.value.item == item.relative_to(source).as_posix(), str(caught.value)
    assert rule_part in caught.value.rule, str(caught.value)


def test_truncated_jpeg_names_the_frame(source, tmp_path):
    frame = sorted(_tracklet_folder(source, 2, 2).glob("*.jpg"))[1]
    frame.write_bytes(frame.read_bytes()[:-40])
    _assert_error(source, tmp_path, frame, "truncated")


def test_non_jpeg_bytes_name_the_frame(source, tmp_path):
    frame = sorted(_tracklet_folder(source, 1, 1).glob("*.jpg"))[0]
    frame.write_bytes(b"GIF89a not a jpeg at all" * 10)
    _assert_error(source, tmp_path, frame, "not a JPEG")


def test_corrupt_header_segment_is_caught_by_the_structure_check():
    data = bytearray(jpeg_bytes(0))
    data[4:6] = b"\xff\xff"  # first segment length now runs past the end
    with pytest.raises(DataError, match="runs past the end"):
        check_jpeg_structure(bytes(data), "x.jpg")


def test_garbage_markers_in_scan_data_are_caught():
    data = bytearray(jpeg_bytes(1, 64, 32))
    middle = len(data) // 2
    data[middle : middle + 200] = b"\xff\xd0" * 100  # restart markers where no restart interval exists
    with pytest.raises(DataError, match="restart marker"):
        check_jpeg_decodes(bytes(data), "x.jpg")


def test_spliced_files_are_caught():
    first, second = jpeg_bytes(1), jpeg_bytes(2)
    with pytest.raises(DataError, match="data after EOI"):
        check_jpeg_structure(first + second, "x.jpg")


def test_valid_frames_pass_both_checks_and_report_their_size():
    data = jpeg_bytes(3, 40, 20)
    assert check_jpeg_structure(data, "x.jpg") == (20, 40)
    assert check_jpeg_decodes(data, "x.jpg") == (20, 40)


def test_unparsable_frame_name(source, tmp_path):
    folder = _tracklet_folder(source, 3, 3)
    bad = folder / "0003_23_10_2024_09_18_high_10_30_3_walk_S1_00009.jpg"
    bad.write_bytes(jpeg_bytes(5))
    _assert_error(source, tmp_path, bad, "drone height")


def test_empty_tracklet(source, tmp_path):
    folder = _tracklet_folder(source, 2, 99)
    folder.mkdir()
    _assert_error(source, tmp_path, folder, "empty tracklet")


def test_tracklet_with_several_pids(source, tmp_path):
    folder = _tracklet_folder(source, 1, 1)
    (folder / detreidx_frame_name(2, "ground", 50)).write_bytes(jpeg_bytes(6))
    _assert_error(source, tmp_path, folder, "several pids")


def test_tracklet_folder_pid_differs_from_identity_folder(source, tmp_path):
    folder = source / "train" / "0001" / "0002_77"
    folder.mkdir()
    (folder / detreidx_frame_name(2, "ground", 0)).write_bytes(jpeg_bytes(7))
    _assert_error(source, tmp_path, folder, "pid 0001")


def test_duplicate_keys(source, tmp_path):
    folder = source / "train" / "0001" / "0001_2"
    write_detreidx(source.parent / "other", [dict(split="train", pid=1, tid=2, platform="ground", frames=2)])
    (source / "train" / "0002" / "0001_2").mkdir()  # the same tracklet name under another identity
    for frame in (source.parent / "other" / "train" / "0001" / "0001_2").iterdir():
        (folder.parent / "0001_2").mkdir(exist_ok=True)
        (folder / frame.name).write_bytes(frame.read_bytes())
    with pytest.raises(DataError) as caught:
        _shard(source, tmp_path / "out")
    assert "0001_2" in caught.value.item


def test_unreadable_folder_is_named(source, tmp_path):
    loop = source / "train" / "0001" / "0001_loop"
    os.symlink(loop, loop)  # a link to itself: neither readable nor a folder, even for root
    _assert_error(source, tmp_path, loop, "tracklet folder")


def test_stray_file_in_tracklet_is_named(source, tmp_path):
    stray = _tracklet_folder(source, 1, 1) / "notes.txt"
    stray.write_text("hello")
    _assert_error(source, tmp_path, stray, "unexpected entry")


def test_empty_split_is_an_error(tmp_path):
    root = tmp_path / "src"
    (root / "train").mkdir(parents=True)
    (root / "case1_aerial_to_ground" / "query").mkdir(parents=True)
    write_detreidx(root, [dict(split="train", pid=1, tid=1, platform="ground", frames=2)])
    with pytest.raises(DataError, match="split is empty"):
        _shard(root, tmp_path / "out")


def test_skip_policy_counts_and_lists_every_skip(source, tmp_path):
    truncated = sorted(_tracklet_folder(source, 2, 2).glob("*.jpg"))[0]
    truncated.write_bytes(truncated.read_bytes()[:100])
    _tracklet_folder(source, 3, 99).mkdir()
    result = _shard(source, tmp_path / "out", on_error="skip")
    manifest = result.manifests["train"]
    assert manifest["totals"]["samples"] == 3 - 1 + 0
    assert manifest["skipped"]["count"] == 2
    items = sorted(record["item"] for record in manifest["skipped"]["items"])
    assert items == sorted([truncated.relative_to(source).as_posix(), "train/0003/0003_99"])  # relative to SRC
    dataset = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert dataset["skipped"]["count"] == 2


def test_the_header_remembering_checker_gives_the_same_verdict_as_the_plain_walk():
    """JpegStructureChecker skips headers it has validated before; on damaged files that share (or almost share)
    a valid file's header its verdict must still be check_jpeg_structure's, error text included."""
    import io as _io
    import random

    import numpy as np
    from PIL import Image

    from xfd.data.jpeg import JpegStructureChecker

    def encoded(seed, **save):
        pixels = np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8)
        out = _io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", **save)
        return out.getvalue()

    bases = [jpeg_bytes(1), jpeg_bytes(2), encoded(3, progressive=True), encoded(4, restart_marker_blocks=1)]

    def verdict(check, data):
        try:
            return check(data, "x.jpg")
        except DataError as error:
            return error.rule

    rng, checker, compared = random.Random(5), JpegStructureChecker(), 0
    for _ in range(1500):
        data = bytearray(rng.choice(bases))
        cut = rng.randrange(len(data))
        kind = rng.randrange(4)
        if kind == 0:
            data[cut] = rng.randrange(256)
        elif kind == 1:
            data = data[: max(cut, 2)] + b"\xff\xd9"  # cut short, an EOI stuck on (the cheap check passes)
        elif kind == 2:
            data[cut:cut] = bytes([0xFF, rng.randrange(256)])
        for sample in (bytes(data), rng.choice(bases)):  # valid files in between keep the memory warm
            assert verdict(checker, sample) == verdict(check_jpeg_structure, sample)
            compared += 1
    assert compared == 3000
