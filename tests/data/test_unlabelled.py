"""Anonymised query/gallery splits (`xfd-shard --unlabelled`), tested on xfd-synth data whose test tracklet folders
are scrambled: any folder names are accepted, the pid is unknown (null), whatever the frame names give is kept and
what they do not give is counted; train stays labelled; every reader accepts the result."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
import webdataset as wds

from xfd.cli.shard import main as shard_main
from xfd.data.errors import DataError
from xfd.data.index import ShardIndex
from xfd.data.stream import StreamOptions, tracklet_stream
from xfd.data.synth.dataset import generate
from xfd.data.synth.plan import SynthConfig

from dataset_builders import write_detreidx


def _samples(folder: Path) -> dict[str, dict]:
    urls = [str(p) for p in sorted(folder.glob("shard-*.tar"))]
    return {s["__key__"]: s for s in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples())}


def _fingerprint(sample: dict) -> str:
    """Identity of a tracklet across runs: the bytes of its frames."""
    frames = sorted(k for k in sample if k.endswith(".jpg"))
    return hashlib.sha256(b"".join(sample[k] for k in frames)).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("unlabelled")
    generate(SynthConfig(ids=4, test_ids=3, seed=3, min_frames=6, max_frames=10), base / "synth", workers=1,
             progress=False)
    scrambled = shutil.copytree(base / "synth", base / "scrambled")
    rng = random.Random(0)
    odd_names = iter(["track 7.b", "ünïcode-name", "x" * 120])
    for case in sorted(scrambled.glob("case*")):
        for side in ("query", "gallery"):
            tracklets = sorted(p for p in (case / side).glob("*/*") if p.is_dir())
            for n, folder in enumerate(tracklets):
                if case.name.startswith("case1") and side == "query":
                    target = case / side / f"{rng.getrandbits(40):010x}"  # flat: no group folder at all
                elif case.name.startswith("case2") and (side, n) in {("query", 0), ("query", 1), ("gallery", 0)}:
                    target = case / side / "anon" / next(odd_names)  # a name that is no valid sample key
                else:
                    target = case / side / f"g{rng.randrange(3)}" / f"{rng.getrandbits(40):010x}"
                target.parent.mkdir(parents=True, exist_ok=True)
                folder.rename(target)
            for empty in sorted((case / side).glob("*")):
                if empty.is_dir() and not any(empty.iterdir()):
                    empty.rmdir()
    # names that hide the pid (first field) but keep the rest, and one tracklet whose names say nothing at all
    hidden = sorted((scrambled / "case3_aerial_to_aerial" / "query").glob("*/*"))[0]
    for frame in sorted(hidden.iterdir()):
        frame.rename(frame.with_name("XXXX" + frame.name[4:]))
    mute = sorted((scrambled / "case3_aerial_to_aerial" / "gallery").glob("*/*"))[0]
    for number, frame in enumerate(sorted(mute.iterdir())):
        frame.rename(frame.with_name(f"{number:06d}.jpg"))
    assert shard_main([str(base / "synth"), str(base / "labelled"), "--no-progress", "--workers", "2"]) == 0
    assert shard_main([str(scrambled), str(base / "out"), "--unlabelled", "--no-progress", "--workers", "2"]) == 0
    return {"labelled": base / "labelled", "out": base / "out", "hidden": hidden, "mute": mute}


TEST_SPLITS = [f"{case}/{side}" for case in ("case1_aerial_to_ground", "case2_ground_to_aerial",
                                              "case3_aerial_to_aerial") for side in ("query", "gallery")]


def test_test_splits_carry_no_identity_and_keep_the_frame_name_metadata(runs):
    for split in TEST_SPLITS:
        truth = {_fingerprint(s): json.loads(s["json"]) for s in _samples(runs["labelled"] / split).values()}
        samples = _samples(runs["out"] / split)
        assert len(samples) == len(truth) > 0, split
        for key, sample in samples.items():
            meta, expected = json.loads(sample["json"]), truth[_fingerprint(sample)]
            assert meta["pid"] is None and meta["label"] is None and meta["key"] == key
            assert meta["source"].startswith(split + "/") and meta["tracklet"] == meta["source"].rsplit("/", 1)[1]
            if meta["tracklet"] == runs["mute"].name:  # names without metadata: platform from the case folder
                assert (meta["platform"], meta["camid"], meta["height"], meta["session"]) == ("aerial", None, None,
                                                                                             None)
                assert meta["bins"] == {"altitude": 18, "distance": 18, "angle": 3}
                continue
            for field in ("camid", "platform", "bins", "height", "distance", "angle", "session", "frame_indices"):
                assert meta[field] == expected[field], (split, field)


def test_odd_folder_names_are_accepted_and_kept(runs):
    names = {json.loads(s["json"])["tracklet"]: key
             for split in TEST_SPLITS for key, s in _samples(runs["out"] / split).items()}
    assert {"track 7.b", "ünïcode-name", "x" * 120} <= set(names)
    assert all(names[n].startswith("t") and len(names[n]) == 25 for n in ("track 7.b", "ünïcode-name", "x" * 120))


def test_manifests_and_dataset_json_say_unlabelled_and_count_the_unknown(runs):
    dataset = json.loads((runs["out"] / "dataset.json").read_text())
    assert dataset["splits"]["train"]["labelled"] is True
    for split in TEST_SPLITS:
        manifest = json.loads((runs["out"] / split / "manifest.json").read_text())
        assert manifest["labelled"] is False and dataset["splits"][split]["labelled"] is False
        assert manifest["identities"] == [] and manifest["totals"]["identities"] is None
        assert manifest["unknown"]["pid"] == manifest["totals"]["samples"]
    mute = json.loads((runs["out"] / "case3_aerial_to_aerial/gallery/manifest.json").read_text())["unknown"]
    assert {k: mute[k] for k in ("name_metadata", "platform_from_folder", "camid", "capture")} == dict.fromkeys(
        ("name_metadata", "platform_from_folder", "camid", "capture"), 1)
    hidden = json.loads((runs["out"] / "case3_aerial_to_aerial/query/manifest.json").read_text())["unknown"]
    assert set(hidden) == {"pid"}  # a hidden pid field: every other field still parsed


def test_train_is_labelled_and_byte_identical_to_a_plain_run(runs):
    plain, unlabelled = (sorted((runs[name] / "train").glob("shard-*.tar")) for name in ("labelled", "out"))
    assert [p.read_bytes() for p in unlabelled] == [p.read_bytes() for p in plain] and plain
    manifest = json.loads((runs["out"] / "train" / "manifest.json").read_text())
    assert manifest["labelled"] is True and manifest["totals"]["identities"] == 4 and "pid" not in manifest["unknown"]


def test_every_reader_accepts_unlabelled_splits(runs, capsys):
    assert shard_main(["--verify", str(runs["out"]), "--no-progress"]) == 0
    assert "(unlabelled)" in capsys.readouterr().out
    split = runs["out"] / "case1_aerial_to_ground" / "query"
    streamed = list(tracklet_stream(split, StreamOptions(num_frames=4)))
    index = ShardIndex.open(split)
    assert [t["key"] for t in streamed] == index.keys and all(t["meta"]["pid"] is None for t in streamed)
    with pytest.raises(DataError, match="cannot be used for training"):
        index.labels_to_keys()


def test_a_pid_in_an_unlabelled_split_is_caught_by_verify(runs, tmp_path, capsys):
    out = shutil.copytree(runs["out"], tmp_path / "out")
    from dataset_builders import rewrite_sample_json

    folder = out / "case2_ground_to_aerial" / "gallery"
    key = json.loads((folder / "manifest.json").read_text())["shards"][0]["keys"][0]
    rewrite_sample_json(folder / "shard-000000.tar", key, pid=7)
    assert shard_main(["--verify", str(out), "--no-progress"]) == 1
    assert f"[{key}]: sample of an unlabelled split carries pid 7" in capsys.readouterr().err


def test_training_splits_are_never_unlabelled(tmp_path, capsys):
    source = write_detreidx(tmp_path / "src", [dict(split="train", pid=1, tid=1, platform="ground", frames=2),
                                               dict(split="train", pid=2, tid=2, platform="ground", frames=2)])
    assert shard_main([str(source), str(tmp_path / "out"), "--unlabelled", "--no-progress"]) == 2
    assert "training splits are never unlabelled" in capsys.readouterr().err
    # scrambled train folders stay errors under --unlabelled: train is read with the labelled rules
    (source / "train" / "0001" / "0001_1").rename(source / "train" / "0001" / "anything")
    (source / "case1_aerial_to_ground" / "query" / "5").mkdir(parents=True)
    write_detreidx(source, [dict(split="case1_aerial_to_ground/query", pid=5, tid=5, platform="aerial", frames=2)])
    with pytest.raises(DataError, match="must be named <pid>_<id>"):
        from xfd.data.shard import ShardOptions, shard_dataset

        shard_dataset(source, tmp_path / "out2", ShardOptions(unlabelled=True), progress=False)
