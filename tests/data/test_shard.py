"""xfd-shard on DetReIDX: byte-exact round trips, determinism, resume after SIGKILL, manifests, val split."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import webdataset as wds

from xfd.cli.shard import main as shard_main
from xfd.data.shard import ShardOptions, shard_dataset

from dataset_builders import standard_detreidx_spec, write_detreidx


def _source_tracklets(root: Path) -> dict[str, list[Path]]:
    """key -> frame files in order, straight from the folders."""
    return {folder.name: sorted(folder.glob("*.jpg")) for folder in root.glob("*/*/*") if folder.is_dir()} | {
        folder.name: sorted(folder.glob("*.jpg")) for folder in root.glob("case*/*/*/*") if folder.is_dir()}


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_sample_round_trips_byte_exactly_through_tarfile_and_webdataset(detreidx_root, tmp_path):
    out = tmp_path / "shards"
    shard_dataset(detreidx_root, out, ShardOptions(shard_samples=2), progress=False)
    source = _source_tracklets(detreidx_root)
    checked = 0
    for manifest_path in out.rglob("manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        for entry in manifest["shards"]:
            shard = manifest_path.parent / entry["name"]
            with tarfile.open(shard) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            for sample in wds.DataPipeline(wds.SimpleShardList([str(shard)]), wds.tarfile_to_samples()):
                key = sample["__key__"]
                meta = json.loads(sample["json"])
                assert members[f"{key}.json"] == sample["json"]
                frames = source[key]
                assert meta["frame_names"] == [f.name for f in frames]
                assert meta["split"] == manifest["split"] and meta["key"] == key
                for index, frame in enumerate(frames):
                    assert sample[f"{index:04d}.jpg"] == frame.read_bytes()
                    assert members[f"{key}.{index:04d}.jpg"] == frame.read_bytes()
                checked += 1
    assert checked == len(standard_detreidx_spec())


def test_metadata_carries_identity_capture_and_labels(detreidx_root, tmp_path):
    out = tmp_path / "shards"
    shard_dataset(detreidx_root, out, ShardOptions(), progress=False)
    samples = list(wds.DataPipeline(wds.SimpleShardList([str(p) for p in sorted(out.rglob("*.tar"))]),
                                    wds.tarfile_to_samples()))
    metas = [json.loads(s["json"]) for s in samples]
    train = [m for m in metas if m["split"] == "train"]
    assert sorted({m["label"] for m in train}) == list(range(6))  # relabelled 0..N-1 in pid order
    assert all(m["label"] is None for m in metas if m["split"] != "train")
    aerial = next(m for m in metas if m["split"] == "case2_ground_to_aerial/gallery")
    assert (aerial["platform"], aerial["height"], aerial["distance"], aerial["angle"]) == ("aerial", 120, 0, 90)
    assert aerial["bins"] == {"altitude": 17, "distance": 0, "angle": 2}
    ground = next(m for m in metas if m["split"] == "case2_ground_to_aerial/query")
    assert ground["bins"] == {"altitude": 18, "distance": 18, "angle": 3} and ground["camid"] == 1
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["num_classes"] == 6 and set(dataset["splits"]) == {m["split"] for m in metas}


def test_long_tracklets_are_subsampled_evenly_with_original_indices(tmp_path):
    root = write_detreidx(tmp_path / "src", [
        dict(split="train", pid=1, tid=1, platform="ground", frames=20),
        dict(split="train", pid=2, tid=2, platform="ground", frames=3),
    ])
    out = tmp_path / "out"
    shard_dataset(root, out, ShardOptions(max_frames=8), progress=False)
    samples = {s["__key__"]: s for s in wds.DataPipeline(
        wds.SimpleShardList([str(p) for p in out.rglob("*.tar")]), wds.tarfile_to_samples())}
    long_meta = json.loads(samples["0001_1"]["json"])
    assert long_meta["frame_indices"] == [0, 2, 5, 7, 10, 12, 15, 17]
    assert long_meta["num_source_frames"] == 20
    frames = sorted((root / "train" / "0001" / "0001_1").glob("*.jpg"))
    assert samples["0001_1"]["0003.jpg"] == frames[7].read_bytes()
    assert json.loads(samples["0002_2"]["json"])["frame_indices"] == [0, 1, 2]


def test_rerun_and_worker_count_give_byte_identical_shards(detreidx_root, tmp_path):
    options = ShardOptions(shard_samples=3, val_ids=2)
    shard_dataset(detreidx_root, tmp_path / "a", options, workers=1, progress=False)
    shard_dataset(detreidx_root, tmp_path / "b", options, workers=2, progress=False)
    shard_dataset(detreidx_root, tmp_path / "a", options, workers=2, overwrite=True, progress=False)
    first, second = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert first == second
    assert any(name.endswith(".tar") for name in first)


def test_manifest_sha256_and_counts_match_the_files(detreidx_root, tmp_path):
    out = tmp_path / "out"
    result = shard_dataset(detreidx_root, out, ShardOptions(shard_samples=4), progress=False)
    manifest = result.manifests["train"]
    assert manifest["complete"] and manifest["totals"]["samples"] == 12 and manifest["totals"]["shards"] == 3
    for entry in manifest["shards"]:
        data = (out / "train" / entry["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    assert manifest["identities"] == [1, 2, 3, 4, 5, 6]
    assert manifest["cameras"] == {"0": 6, "10": 6}


def test_val_ids_hold_out_whole_identities(detreidx_root, tmp_path):
    result = shard_dataset(detreidx_root, tmp_path / "out", ShardOptions(val_ids=2, val_seed=5), progress=False)
    train_ids = set(result.manifests["train"]["identities"])
    val_ids = set(result.manifests["val"]["identities"])
    assert len(val_ids) == 2 and not train_ids & val_ids and train_ids | val_ids == set(range(1, 7))
    assert result.manifests["train"]["num_classes"] == 4


def test_output_folder_is_not_clobbered_without_resume_or_overwrite(detreidx_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert shard_main([str(detreidx_root), str(out), "--no-progress"]) == 0
    assert shard_main([str(detreidx_root), str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err


def _interrupted_run(source: Path, out: Path, args: list[str]) -> None:
    """Start xfd-shard in a subprocess and SIGKILL it once some (not all) train shards are finished."""
    process = subprocess.Popen([sys.executable, "-m", "xfd.cli.shard", str(source), str(out), *args])
    manifest = out / "train" / "manifest.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if manifest.is_file():
                state = json.loads(manifest.read_text())
                if len(state["shards"]) >= 3:
                    break
            if process.poll() is not None:
                break
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    state = json.loads(manifest.read_text())
    assert not state["complete"], "the run finished before it could be killed; enlarge the fixture"


def test_kill_and_resume_ends_with_the_same_sha256s(tmp_path):
    spec = [dict(split="train", pid=pid, tid=pid, platform="ground", frames=2) for pid in range(1, 241)]
    source = write_detreidx(tmp_path / "src", spec)
    args = ["--shard-samples", "1", "--workers", "1", "--no-progress"]
    assert shard_main([str(source), str(tmp_path / "clean"), *args]) == 0

    resumed = tmp_path / "resumed"
    _interrupted_run(source, resumed, args)
    finished = sorted(p.name for p in (resumed / "train").glob("shard-*.tar"))
    # damage one finished shard: resume must notice the sha256 mismatch and rewrite it
    with open(resumed / "train" / finished[0], "r+b") as handle:
        handle.truncate(700)
    assert shard_main([str(source), str(resumed), *args, "--resume"]) == 0

    clean = json.loads((tmp_path / "clean" / "train" / "manifest.json").read_text())
    again = json.loads((resumed / "train" / "manifest.json").read_text())
    assert [e["sha256"] for e in again["shards"]] == [e["sha256"] for e in clean["shards"]]
    assert _tree_bytes(tmp_path / "clean") == _tree_bytes(resumed)


def test_resume_reuses_untouched_shards(detreidx_root, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(detreidx_root), str(out), "--shard-samples", "2", "--no-progress"]
    assert shard_main(args) == 0
    os.remove(out / "train" / "shard-000001.tar")
    capsys.readouterr()
    assert shard_main(args + ["--resume"]) == 0
    assert "1 shards written, 17 reused" in capsys.readouterr().out


def test_direct_ustar_header_equals_tarfiles_byte_for_byte():
    from xfd.data.tar_members import _member, ustar_header

    for name, size in [("0001_1.json", 0), ("0024_5453.0000.jpg", 1), ("k" * 90 + ".0001.jpg", 123456789),
                       ("abc.json", 511), ("abc.0000.jpg", 512), ("x" * 100, 7)]:
        expected = _member(name, size).tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
        assert ustar_header(name, size) == expected, name


def test_frame_headers_equal_tarfiles_byte_for_byte():
    """The batch builder (names sharing a key, octal digit sums from a table) against tarfile, at sizes that
    cross each 12-bit slice up to ustar's largest (8 GiB - 1), names of exactly 100 bytes and 10000+ frames."""
    from xfd.data.tar_members import _member, frame_headers

    def expected(key, sizes):
        width = max(4, len(str(len(sizes) - 1)))
        return [_member(f"{key}.{j:0{width}d}.jpg", size).tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
                for j, size in enumerate(sizes)]

    sizes = [0, 1, 7, 511, 512, 4095, 4096, 5123, 8 ** 8 - 1, 8 ** 8, 16_777_215, 16_777_216, 8 ** 11 - 1]
    for key, frame_sizes in [("0024_5453", sizes), ("k" * 90, sizes), ("k" * 91, sizes[:3]),
                             ("0001_1", [3] * 10_001)]:
        assert frame_headers(key, frame_sizes) == expected(key, frame_sizes), key
