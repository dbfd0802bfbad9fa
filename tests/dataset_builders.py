"""Builders of tiny datasets on disk, in the real layouts, with real JPEG frames (shared by the tests)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(seed: int, height: int = 24, width: int = 12) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def detreidx_frame_name(pid: int, platform: str, frame: int, session: int = 1, camera: int = 1,
                        capture=(30, 5.8, 10)) -> str:
    if platform == "ground":
        return f"{pid:04d}_23_10_2024_G{camera}_S{session}_{frame:05d}.jpg"
    angle, height, distance = capture
    return f"{pid:04d}_23_10_2024_09_18_{height:g}_{distance:g}_{angle:g}_3_walk_S{session}_{frame:05d}.jpg"


def write_detreidx(root: Path, tracklets: list[dict]) -> Path:
    """Each dict: split, pid, tid, platform, frames (+ optional session, camera, capture)."""
    for t in tracklets:
        folder = root.joinpath(*t["split"].split("/"), f"{t['pid']:04d}", f"{t['pid']:04d}_{t['tid']}")
        folder.mkdir(parents=True, exist_ok=True)
        for frame in range(t["frames"]):
            name = detreidx_frame_name(t["pid"], t["platform"], frame, t.get("session", 1), t.get("camera", 1),
                                       t.get("capture", (30, 5.8, 10)))
            (folder / name).write_bytes(jpeg_bytes(hash((t["pid"], t["tid"], frame)) % 2**31))
    return root


def standard_detreidx_spec(train_ids: int = 6, test_ids: int = 3) -> list[dict]:
    """Train identities with ground + aerial tracklets; each case's query/gallery for test identities."""
    spec, tid = [], 1000
    for pid in range(1, train_ids + 1):
        for platform, frames in (("ground", 5 + pid), ("aerial", 3 + 2 * pid)):
            tid += 1
            spec.append(dict(split="train", pid=pid, tid=tid, platform=platform, frames=frames))
    for pid in range(100, 100 + test_ids):
        cases = {
            "case1_aerial_to_ground": (("query", "aerial", (60, 30, 20)), ("gallery", "ground", None)),
            "case2_ground_to_aerial": (("query", "ground", None), ("gallery", "aerial", (90, 120, 0))),
            "case3_aerial_to_aerial": (("query", "aerial", (30, 60, 120)), ("gallery", "aerial", (90, 10, 0))),
        }
        for case, sides in cases.items():
            for side, platform, capture in sides:
                tid += 1
                spec.append(dict(split=f"{case}/{side}", pid=pid, tid=tid, platform=platform, frames=4,
                                 capture=capture or (30, 5.8, 10), camera=2))
    return spec


def sharded_detreidx(base: Path, train_ids: int, test_ids: int) -> Path:
    """BASE/src in the DetReIDX layout (`standard_detreidx_spec`), sharded with default options into BASE/shards."""
    from xfd.data.shard import ShardOptions, shard_dataset

    write_detreidx(base / "src", standard_detreidx_spec(train_ids=train_ids, test_ids=test_ids))
    shard_dataset(base / "src", base / "shards", ShardOptions(), progress=False)
    return base / "shards"


def write_mars_like(root: Path, layout: str, seed: int = 0) -> dict:
    """A tiny MARS / G2A v1 / G2A v2 dataset with protocol .mat files; returns the expected membership."""
    from scipy.io import savemat

    pid_digits = 5 if layout == "g2a2" else 4
    cameras = (1, 2) if layout != "mars" else (1, 2, 3)
    info = root / "info"
    info.mkdir(parents=True)

    def tracks(folder: str, pids: list[int]) -> tuple[list[str], list[list[int]]]:
        names, rows = [], []
        for pid in pids:
            for camera in cameras:
                count = 3 + (pid + camera) % 3
                pid_text = "0" * (pid_digits - 2) + "-1" if pid == -1 else f"{pid:0{pid_digits}d}"
                start = len(names) + 1
                for frame in range(1, count + 1):
                    name = f"{pid_text}C{camera}T{1:04d}F{frame:03d}.jpg"
                    path = root / folder / pid_text / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(jpeg_bytes(seed + len(names)))
                    names.append(name)
                rows.append([start, len(names), pid, camera])
        return names, rows

    train_names, train_rows = tracks("bbox_train", [1, 2, 3, -1])
    test_names, test_rows = tracks("bbox_test", [0, 4, 5, -1])
    (info / "train_name.txt").write_text("\n".join(train_names) + "\n")
    (info / "test_name.txt").write_text("\n".join(test_names) + "\n")
    savemat(info / "tracks_train_info.mat", {"track_train_info": np.array(train_rows, dtype=np.float64)})
    savemat(info / "tracks_test_info.mat", {"track_test_info": np.array(test_rows, dtype=np.float64)})
    # query = the camera-1 track of pids 4 and 5 (1-based rows into the test tracks)
    query_rows = [i + 1 for i, row in enumerate(test_rows) if row[2] in (4, 5) and row[3] == 1]
    savemat(info / "query_IDX.mat", {"query_IDX": np.array(query_rows, dtype=np.float64)})
    expected = {"query_rows": query_rows, "test_rows": test_rows, "train_rows": train_rows}
    if layout == "g2a2":
        a2g_rows = [i + 1 for i, row in enumerate(test_rows) if row[2] in (4, 5) and row[3] == 2]
        savemat(info / "query_IDX_A2G.mat", {"query_IDX_A2G": np.array(a2g_rows, dtype=np.float64)})
        expected["a2g_query_rows"] = a2g_rows
    return expected


# ------------------------------------------------------------------------------------------ damaging shard sets

def rewrite_sample_json(shard: Path, key: str, **changes) -> None:
    """Rewrite `shard` with sample `key`'s metadata fields set to `changes` (every other member unchanged)."""
    import json
    import tarfile

    with tarfile.open(shard) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            if info.name == f"{key}.json":
                data = json.dumps({**json.loads(data), **changes}, sort_keys=True).encode()
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shard.write_bytes(buffer.getvalue())


def member_offset(shard: Path, name: str) -> int:
    """Byte offset of the header of member `name` in `shard` (to cut a shard at a sample boundary)."""
    import tarfile

    with tarfile.open(shard) as tar:
        return next(info.offset for info in tar if info.name == name)


def edit_manifest(folder: Path, edit) -> dict:
    """Apply `edit(manifest)` to FOLDER/manifest.json in place; returns the edited manifest."""
    import json

    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    return manifest
