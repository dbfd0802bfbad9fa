"""xfd-synth: layout and names (the DetReIDX contract), JPEG validity, determinism, cross-camera matches,
clothing change with stable body, aerial/ground scale, degradations and their quality truth, CLI behaviour,
and the default size's counts (its speed is bench/synth.py's)."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xfd.cli.synth import main
from xfd.data.jpeg import check_jpeg_decodes
from xfd.data.metadata import CAPTURE_POINTS, detreidx_camid, parse_detreidx_frame
from xfd.data.synth import TRUTH_FILE, OutputExistsError, SynthConfig, build_plan, generate
from xfd.data.synth import degrade
from xfd.data.synth.camera import aerial_person_px, slant_range
from xfd.data.synth.figure import build_figure
from xfd.data.synth.naming import CASES, ROLES
from xfd.data.synth.render import extent, project, view_basis
from xfd.data.synth.tracklet import RenderSettings, render_tracklet

SMALL = SynthConfig(ids=4, test_ids=3, seed=7, min_frames=6, max_frames=10, degraded_fraction=0.25)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "small"
    generate(SMALL, out, workers=1, progress=False)
    return out


def _truth(root: Path) -> dict:
    return json.loads((root / TRUTH_FILE).read_text())


def _tree(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _tracklets(root: Path):
    """(split folder relative to root, pid folder name, tracklet folder) for every tracklet on disk."""
    for split in ["train"] + [f"{case}/{role}" for case in CASES for role in ROLES]:
        for pid_dir in sorted((root / split).iterdir()):
            for tracklet_dir in sorted(pid_dir.iterdir()):
                yield split, pid_dir, tracklet_dir


def test_layout_and_every_name_parses_to_the_truth(small):
    assert sorted(p.name for p in small.iterdir()) == sorted(["train", *CASES, TRUTH_FILE])
    for case in CASES:
        assert sorted(p.name for p in (small / case).iterdir()) == ["gallery", "query"]
    truth = {record["folder"]: record for record in _truth(small)["tracklets"]}
    seen_ids, train_pids, test_pids = [], set(), set()
    for split, pid_dir, tracklet_dir in _tracklets(small):
        assert len(pid_dir.name) == 4 and pid_dir.name.isdigit()
        pid_text, tracklet_id = tracklet_dir.name.split("_")
        assert pid_text == pid_dir.name and len(tracklet_id) == 4
        seen_ids.append(tracklet_id)
        (train_pids if split == "train" else test_pids).add(int(pid_text))
        record = truth[f"{split}/{pid_dir.name}/{tracklet_dir.name}"]
        names = sorted(p.name for p in tracklet_dir.iterdir())
        assert len(names) == record["frames"] and names[0] == record["first_frame"]
        frames = [parse_detreidx_frame(name) for name in names]
        assert len({frame.capture_key for frame in frames}) == 1, "one tracklet, one capture"
        numbers = [int(frame.fields[-1]) for frame in frames]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        frame = frames[0]
        assert (frame.pid, frame.platform, frame.session) == (int(pid_text), record["platform"], record["session"])
        assert detreidx_camid(frame, "capture-point") == record["camid"]
        day, month, year = frame.fields[1:4]
        assert f"{year}-{month}-{day}" == record["date"]
        if frame.platform == "aerial":
            assert len(frame.fields) == 13 and frame.fields[10] == "walk"
            point = CAPTURE_POINTS[record["capture_point"]["index"]]
            assert (frame.angle, frame.height, frame.distance) == point
            assert frame.fields[6:9] == tuple(f"{x:g}" for x in (point[1], point[2], point[0]))
        else:
            assert len(frame.fields) == 7 and frame.ground_camera == record["ground_camera"] in (1, 2)
        if split != "train":
            case, role = split.split("/")
            assert frame.platform == CASES[case][ROLES.index(role)]
    assert len(seen_ids) == len(set(seen_ids)) == len(truth), "tracklet ids are unique in the dataset"
    assert len(train_pids) == SMALL.ids and len(test_pids) == SMALL.test_ids and not train_pids & test_pids


def test_sessions_are_different_days(small):
    for identity in _truth(small)["identities"].values():
        assert identity["sessions"]["1"]["date"] < identity["sessions"]["2"]["date"]


def test_every_file_is_a_jpeg_of_the_recorded_size(small):
    truth = {record["folder"]: record for record in _truth(small)["tracklets"]}
    count = 0
    for split, pid_dir, tracklet_dir in _tracklets(small):
        view = truth[f"{split}/{pid_dir.name}/{tracklet_dir.name}"]["view"]
        for path in tracklet_dir.iterdir():
            assert check_jpeg_decodes(path.read_bytes(), str(path)) == (view["width"], view["height"])
            count += 1
    assert count == sum(record["frames"] for record in truth.values())


def test_same_seed_is_byte_identical_across_worker_counts_and_other_seed_differs(small, tmp_path):
    generate(SMALL, tmp_path / "two_workers", workers=2, progress=False)
    reference = _tree(small)
    assert _tree(tmp_path / "two_workers") == reference
    generate(dataclasses.replace(SMALL, seed=8), tmp_path / "other_seed", workers=2, progress=False)
    other = _tree(tmp_path / "other_seed")
    assert other[TRUTH_FILE] != reference[TRUTH_FILE]
    different = sum(other.get(name) != data for name, data in reference.items())
    assert different > 0.9 * len(reference)


def test_every_test_identity_has_a_cross_camera_match_in_every_case_both_within_and_across_sessions(small):
    for case in CASES:
        by_pid = defaultdict(lambda: {role: set() for role in ROLES})
        for role in ROLES:
            for tracklet_dir in (small / case / role).glob("*/*"):
                frame = parse_detreidx_frame(next(tracklet_dir.iterdir()).name)
                by_pid[frame.pid][role].add((detreidx_camid(frame, "capture-point"), frame.session))
        assert len(by_pid) == SMALL.test_ids
        kinds = set()
        for pid, sides in by_pid.items():
            matches = [(q, g) for q in sides["query"] for g in sides["gallery"] if q[0] != g[0]]
            assert matches, f"{case}: pid {pid} has no gallery match with another camid"
            kinds |= {q[1] == g[1] for q, g in matches}
        assert kinds == {True, False}, f"{case} should mix same-session and clothing-changed matches"


def test_clothing_changes_between_sessions_while_body_and_gait_stay(small):
    truth = _truth(small)
    per_pid = defaultdict(list)
    for record in truth["tracklets"]:
        per_pid[record["pid"]].append(record)
    for pid, records in per_pid.items():
        assert all(r["body"] == records[0]["body"] and r["gait"] == records[0]["gait"] for r in records)
        sessions = truth["identities"][f"{pid:04d}"]["sessions"]
        first, second = sessions["1"]["outfit"], sessions["2"]["outfit"]
        assert first["top_family"] != second["top_family"]
        assert math.dist(first["top"], second["top"]) > 20
        for record in records:
            assert record["outfit"] == sessions[str(record["session"])]["outfit"]


def _spec(platform: str, point_or_camera: int):
    spec = build_plan(SMALL)[1][0]
    if platform == "ground":
        return dataclasses.replace(spec, platform="ground", ground_camera=point_or_camera, capture_point=None)
    return dataclasses.replace(spec, platform="aerial", capture_point=point_or_camera, ground_camera=None)


def test_aerial_crops_shrink_with_range_and_far_ones_are_much_smaller_than_ground(tmp_path):
    sizes = [aerial_person_px(height, distance) for _, height, distance in CAPTURE_POINTS]
    ranges = [slant_range(height, distance) for _, height, distance in CAPTURE_POINTS]
    order = np.argsort(ranges)
    assert all(np.diff(np.array(sizes)[order]) <= 0) and sizes[0] > 100 and 15 <= min(sizes) <= 30
    settings = RenderSettings(seed=1, jpeg_quality=90, degraded_fraction=0.0, fps=10.0)
    heights = {}
    for name, platform, which in (("ground", "ground", 1), ("far30", "aerial", 5), ("far90", "aerial", 17),
                                  ("near30", "aerial", 0)):
        record = render_tracklet(_spec(platform, which), settings, str(tmp_path))
        heights[name] = Image.open(tmp_path / record["folder"] / record["first_frame"]).height
    assert heights["far30"] < 0.3 * heights["ground"] and heights["far90"] < 0.3 * heights["ground"]
    assert heights["near30"] > 3 * heights["far30"]


def test_top_down_views_foreshorten_the_figure():
    plan = build_plan(SMALL)[1][0]
    figure = build_figure(plan.identity, plan.outfit, 0.3)
    tall = {}
    for elevation in (0, 30, 60, 90):
        x0, y0, x1, y1 = extent(project(figure, *view_basis(elevation, 90)))
        tall[elevation] = y1 - y0
    assert tall[0] > tall[30] > tall[60] > tall[90]
    assert tall[90] < 0.45 * tall[0]


def test_gait_swings_the_legs_in_antiphase():
    spec = build_plan(SMALL)[1][0]
    phases = np.linspace(0, 2 * math.pi, 16, endpoint=False)
    # capsules 2 and 5 are the feet (ankle -> toe) of the right and left leg: their forward (y) positions
    right, left = np.array([[build_figure(spec.identity, spec.outfit, p).capsules[i, 0, 1] for p in phases]
                            for i in (2, 5)])
    assert np.ptp(right) > 0.2 and np.corrcoef(right, left)[0, 1] < -0.9


def test_degradation_schedule_hits_the_fraction():
    rng = np.random.default_rng(0)
    per_frame = degrade.schedule(rng, 20000, 0.3)
    assert abs(np.mean([bool(b) for b in per_frame]) - 0.3) < 0.02
    assert {b.kind for bursts in per_frame for b in bursts} == set(degrade.KINDS)
    assert not any(degrade.schedule(rng, 50, 0.0))


def test_degraded_frames_at_the_configured_fraction_with_quality_below_one(small):
    records = _truth(small)["tracklets"]
    flags = [f for record in records for f in record["frame_flags"]]
    quality = [q for record in records for q in record["frame_quality"]]
    assert abs(np.mean([bool(f) for f in flags]) - SMALL.degraded_fraction) < 0.08
    assert all(q == 1.0 for f, q in zip(flags, quality) if not f)
    # an occluder or a slipped box may miss the person; every other degradation costs quality
    assert all(q < 1.0 for f, q in zip(flags, quality) if set(f) - {"occlusion", "misaligned"})
    assert all(0.0 <= q <= 1.0 for q in quality)


def test_degradations_change_only_their_frames_and_blur_or_lowres_remove_detail(tmp_path):
    spec = dataclasses.replace(_spec("ground", 1), frames=40)
    clean = render_tracklet(spec, RenderSettings(3, 90, 0.0, 10.0), str(tmp_path / "clean"))
    bad = render_tracklet(spec, RenderSettings(3, 90, 0.6, 10.0), str(tmp_path / "bad"))
    assert set(clean["frame_quality"]) == {1.0} and 0.4 < np.mean([bool(f) for f in bad["frame_flags"]]) < 0.8

    def frame(root, index):
        return (tmp_path / root / spec.folder / spec.frame_name(index)).read_bytes()

    def detail(data):
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"), float)
        return np.abs(np.diff(pixels, axis=1)).mean() + np.abs(np.diff(pixels, axis=0)).mean()

    checked = 0
    for index, flags in enumerate(bad["frame_flags"]):
        if not flags:
            assert frame("clean", index) == frame("bad", index)
        else:
            assert frame("clean", index) != frame("bad", index)
            if flags in (["motion_blur"], ["lowres"]):
                assert detail(frame("bad", index)) < 0.9 * detail(frame("clean", index))
                checked += 1
    assert checked > 0


def test_failed_run_leaves_no_output(tmp_path, monkeypatch):
    import xfd.data.synth.dataset as dataset

    calls = []

    def failing(spec, settings, root):
        calls.append(spec)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return render_tracklet(spec, settings, root)

    monkeypatch.setattr(dataset, "render_tracklet", failing)
    with pytest.raises(RuntimeError, match="boom"):
        generate(SMALL, tmp_path / "out", workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_refuses_non_empty_and_overwrites_its_own_output(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [str(out), "--ids", "2", "--test-ids", "2", "--min-frames", "3", "--max-frames", "4", "--workers", "1",
            "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "frames/s" in printed and "case3_aerial_to_aerial/gallery" in printed
    before = _tree(out)
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--seed", "5"]) == 0
    assert _tree(out) != before and sorted(os.listdir(tmp_path)) == ["cli"]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="does not look like an xfd-synth output"):
        generate(SMALL, foreign, overwrite=True, progress=False)
    assert (foreign / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("bad, message", [
    (["--ids", "1"], "at least 2"),
    (["--test-ids", "0"], "at least 2"),
    (["--min-frames", "50", "--max-frames", "10"], "must not exceed"),
    (["--quality", "101"], "at most 100"),
    (["--degraded-fraction", "1.5"], "between 0 and 1"),
    (["--workers", "0"], "at least 1"),
    (["--ids", "9000", "--test-ids", "1000"], "at most 9999"),
])
def test_cli_rejects_bad_arguments(tmp_path, capsys, bad, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "x"), *bad])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_default_size_has_the_documented_counts(tmp_path):
    """xfd-synth's default size (64 + 32 identities, 24-80 frames): the README's 448 tracklets and ~23k frames.
    How fast it is written is measured by bench/synth.py, not asserted here."""
    summary = generate(SynthConfig(), tmp_path / "demo", workers=2, progress=False)
    assert summary.tracklets == 64 * 4 + 32 * 6 and 20000 < summary.frames < 27000


def test_train_aerial_gives_each_session_aerial_tracklets_from_distinct_capture_points():
    config = dataclasses.replace(SMALL, train_aerial=3)
    specs = [s for s in build_plan(config)[1] if s.split == "train"]
    by_session = defaultdict(list)
    for spec in specs:
        by_session[spec.pid, spec.session].append(spec)
    assert len(by_session) == 2 * config.ids
    for group in by_session.values():
        aerial = [s.capture_point for s in group if s.platform == "aerial"]
        assert len(group) == 4 and len(aerial) == 3 == len(set(aerial))
    # the default keeps one aerial tracklet a session, laid out as before the option existed
    assert sum(s.split == "train" for s in build_plan(SMALL)[1]) == 4 * SMALL.ids
    with pytest.raises(ValueError, match="train_aerial"):
        dataclasses.replace(SMALL, train_aerial=0)
