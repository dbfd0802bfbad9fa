"""Finding the tracklets of a dataset on disk: DetReIDX folders and MARS / G2A-VReID protocol files.

Each layout's discovery returns, per output split, a list of `Tracklet` records (identity, camera, platform,
capture metadata, frame files in temporal order). Nothing is read beyond names and protocol files here; frame
bytes are read and checked while shards are written. Problems are `DataError`s naming the file and the rule,
handled by the caller's `SkipLog` (raise by default, or skip-and-record).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError, SkipLog
from .metadata import (
    capture_bins,
    detreidx_camid,
    no_metadata_bins,
    parse_detreidx_frame,
    parse_mars_frame,
)

LAYOUTS = ("detreidx", "mars", "g2a", "g2a2")
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_JPEG_SUFFIXES = {".jpg", ".jpeg"}
_CASE_FOLDER = re.compile(r"^case\d+_[A-Za-z0-9_]+$")


@dataclass
class Tracklet:
    """One tracklet as found on disk; becomes one shard sample."""

    key: str
    pid: int
    camid: int
    platform: str
    frame_paths: list[Path]
    meta: dict = field(default_factory=dict)
    label: int | None = None


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _list_dir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return sorted(entries, key=lambda entry: _natural_key(entry.name))
    except OSError as error:
        raise DataError(str(path), f"folder cannot be read ({error.strerror or error})") from error


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # e.g. a link to itself
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _visible(entries: list[os.DirEntry]) -> list[os.DirEntry]:
    """Entries that belong to the dataset: hidden files (.DS_Store, editor swap files) are not data."""
    return [entry for entry in entries if not entry.name.startswith(".")]


def _check_key(key: str, where: str) -> None:
    if not _KEY.match(key):
        raise DataError(where, f"sample key {key!r} must be 1-80 characters of letters, digits, '_' or '-'")


def _add_unique(tracklets: list[Tracklet], seen: dict[str, Path], tracklet: Tracklet, where: Path) -> None:
    if tracklet.key in seen:
        raise DataError(str(where), f"duplicate sample key {tracklet.key!r} (also {seen[tracklet.key]})")
    seen[tracklet.key] = where
    tracklets.append(tracklet)


# ---------------------------------------------------------------- DetReIDX

def _detreidx_split_folders(root: Path) -> dict[str, Path]:
    splits = {}
    if (root / "train").is_dir():
        splits["train"] = root / "train"
    for entry in _list_dir(root):
        if _is_folder(entry) and _CASE_FOLDER.match(entry.name):
            for side in ("query", "gallery"):
                if (Path(entry.path) / side).is_dir():
                    splits[f"{entry.name}/{side}"] = Path(entry.path) / side
    if not splits:
        raise DataError(str(root), "no DetReIDX split folders (train/ or case*/query, case*/gallery) found")
    return splits


def _detreidx_tracklet(root: Path, pid_folder: str, folder: Path, camid_rule: str) -> Tracklet:
    tracklet_name = folder.name
    pid_prefix = tracklet_name.split("_", 1)[0]
    if not pid_prefix.isdigit() or int(pid_prefix) != int(pid_folder):
        raise DataError(str(folder), f"tracklet folder must be named <pid>_<id> with pid {pid_folder}")
    files = []
    for entry in _visible(_list_dir(folder)):
        if not _is_file(entry) or Path(entry.name).suffix.lower() not in _JPEG_SUFFIXES:
            raise DataError(entry.path, "unexpected entry in a tracklet folder (only .jpg/.jpeg frames belong there)")
        files.append(entry)
    if not files:
        raise DataError(str(folder), "empty tracklet (no .jpg frames)")
    frames = [parse_detreidx_frame(e.name) for e in files]
    pids = sorted({f.pid for f in frames})
    if pids != [int(pid_folder)]:
        raise DataError(str(folder), f"tracklet with several pids or a pid other than its folder's: {pids}")
    first = frames[0]
    for entry, frame in zip(files, frames):
        if frame.capture_key != first.capture_key:
            raise DataError(
                str(Path(entry.path)),
                f"capture metadata {frame.capture_key} differs from the tracklet's first frame {first.capture_key}",
            )
    _check_key(tracklet_name, str(folder))
    meta = {
        "session": first.session,
        "height": first.height if first.platform == "aerial" else None,
        "distance": first.distance if first.platform == "aerial" else None,
        "angle": first.angle if first.platform == "aerial" else None,
        "bins": capture_bins(first.platform, first.height, first.distance, first.angle),
        "name_fields": list(first.fields),
        "source": str(folder.relative_to(root)),
        "tracklet": tracklet_name,
    }
    return Tracklet(
        key=tracklet_name,
        pid=first.pid,
        camid=detreidx_camid(first, camid_rule),
        platform=first.platform,
        frame_paths=[Path(e.path) for e in files],
        meta=meta,
    )


def discover_detreidx(root: Path, skips: SkipLog, camid_rule: str = "capture-point") -> dict[str, list[Tracklet]]:
    """`ROOT/{train,case*/query,case*/gallery}/<PID>/<pid>_<tracklet>/*.jpg` → tracklets per split."""
    result = {}
    for split, folder in _detreidx_split_folders(root).items():
        tracklets: list[Tracklet] = []
        seen: dict[str, Path] = {}
        for pid_entry in _visible(_list_dir(folder)):
            try:
                if not _is_folder(pid_entry) or not pid_entry.name.isdigit():
                    raise DataError(pid_entry.path, "expected an identity folder named by its numeric PID")
                tracklet_folders = list(_visible(_list_dir(Path(pid_entry.path))))
            except DataError as error:
                skips.handle(error, split)
                continue
            for entry in tracklet_folders:
                try:
                    if not _is_folder(entry):
                        raise DataError(entry.path, "expected a tracklet folder (not a file, not a broken link)")
                    tracklet = _detreidx_tracklet(root, pid_entry.name, Path(entry.path), camid_rule)
                    _add_unique(tracklets, seen, tracklet, Path(entry.path))
                except DataError as error:
                    skips.handle(error, split)
        result[split] = tracklets
    return result


# ---------------------------------------------------------------- MARS / G2A-VReID

def _load_mat_array(path: Path, key: str, columns: int | None) -> np.ndarray:
    from scipy.io import loadmat  # scipy is needed only for these layouts

    if not path.is_file():
        raise DataError(str(path), "protocol file is missing")
    try:
        content = loadmat(str(path))
    except Exception as error:
        raise DataError(str(path), f"not a readable .mat file ({error})") from error
    if key not in content:
        raise DataError(str(path), f"has no variable {key!r} (found {sorted(k for k in content if not k.startswith('__'))})")
    array = np.asarray(content[key])
    if columns is None:
        return array.reshape(-1).astype(np.int64)
    if array.ndim != 2 or array.shape[1] != columns:
        raise DataError(str(path), f"{key!r} must have {columns} columns, has shape {array.shape}")
    return array.astype(np.int64)


def _read_name_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(str(path), "name list is missing")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(str(path), "name list is empty")
    return names


def _mars_tracks(
    root: Path, image_folder: str, names: list[str], info: np.ndarray, info_path: Path, pid_digits: int,
    platform_of_camera, skips: SkipLog, split: str,
) -> list[Tracklet | None]:
    """One Tracklet per row of a tracks-info matrix (None for junk pid -1, which the protocol drops)."""
    tracks: list[Tracklet | None] = []
    for row_number, (start, end, pid, camera) in enumerate(info.tolist(), start=1):
        try:
            if not 1 <= start <= end <= len(names):
                raise DataError(
                    str(info_path),
                    f"row {row_number}: frames [{start}, {end}] fall outside the name list of {len(names)} names",
                )
            frame_names = names[start - 1 : end]
            parsed = [parse_mars_frame(n, pid_digits) for n in frame_names]
            for frame_name, frame in zip(frame_names, parsed):
                if frame.pid != pid or frame.camera != camera:
                    raise DataError(
                        str(info_path),
                        f"row {row_number} says pid {pid} camera {camera} but frame {frame_name} says pid "
                        f"{frame.pid} camera {frame.camera}: the .mat does not match the name list",
                    )
            if pid == -1:
                tracks.append(None)
                continue
            first = parsed[0]
            key = f"{frame_names[0][:pid_digits]}C{first.camera}T{first.tracklet:04d}"
            platform = platform_of_camera(camera)
            meta = {
                "session": None, "height": None, "distance": None, "angle": None,
                "bins": no_metadata_bins(),
                "source": f"{image_folder}/{frame_names[0][:pid_digits]}",
                "tracklet": key,
                "track_row": row_number,
            }
            paths = [root / image_folder / n[:pid_digits] / n for n in frame_names]
            tracks.append(Tracklet(key=key, pid=pid, camid=camera, platform=platform, frame_paths=paths, meta=meta))
        except DataError as error:
            skips.handle(error, split)
            tracks.append(None)
    return tracks


def discover_mars_like(
    root: Path, layout: str, skips: SkipLog, aerial_camera: int = 2
) -> dict[str, list[Tracklet]]:
    """MARS-style folders + `info/*.mat` protocol files → train / query / gallery (and a2g_* for G2A v2)."""
    pid_digits = 5 if layout == "g2a2" else 4
    if layout == "mars":
        def platform_of_camera(camera: int) -> str:
            return "ground"
    else:
        def platform_of_camera(camera: int) -> str:
            return "aerial" if camera == aerial_camera else "ground"

    info = root / "info"
    train_names = _read_name_list(info / "train_name.txt")
    test_names = _read_name_list(info / "test_name.txt")
    train_info_path, test_info_path = info / "tracks_train_info.mat", info / "tracks_test_info.mat"
    train_info = _load_mat_array(train_info_path, "track_train_info", 4)
    test_info = _load_mat_array(test_info_path, "track_test_info", 4)

    train = _mars_tracks(root, "bbox_train", train_names, train_info, train_info_path, pid_digits,
                         platform_of_camera, skips, "train")
    # test-track problems affect query and gallery alike: they are listed in dataset.json under split "test"
    test = _mars_tracks(root, "bbox_test", test_names, test_info, test_info_path, pid_digits,
                        platform_of_camera, skips, "test")

    result = {"train": _unique_split([t for t in train if t is not None], train_info_path, skips, "train")}
    protocols = [("query_IDX.mat", "query_IDX", "")]
    if layout == "g2a2":
        protocols.append(("query_IDX_A2G.mat", "query_IDX_A2G", "a2g_"))
    for file_name, variable, prefix in protocols:
        query_path = info / file_name
        query_rows = _load_mat_array(query_path, variable, None)
        if query_rows.size and (query_rows.min() < 1 or query_rows.max() > len(test)):
            raise DataError(str(query_path), f"query rows must lie in 1..{len(test)} (rows of {test_info_path.name})")
        if len(set(query_rows.tolist())) != query_rows.size:
            raise DataError(str(query_path), "query rows repeat")
        query_set = set((query_rows - 1).tolist())
        query = [test[i] for i in sorted(query_set) if test[i] is not None]
        gallery = [t for i, t in enumerate(test) if i not in query_set and t is not None]
        result[f"{prefix}query"] = _unique_split(query, query_path, skips, f"{prefix}query")
        result[f"{prefix}gallery"] = _unique_split(gallery, query_path, skips, f"{prefix}gallery")
    return result


def _unique_split(tracklets: list[Tracklet], where: Path, skips: SkipLog, split: str) -> list[Tracklet]:
    result: list[Tracklet] = []
    seen: dict[str, Path] = {}
    for tracklet in tracklets:
        try:
            _add_unique(result, seen, tracklet, where)
        except DataError as error:
            skips.handle(error, split)
    return result


# ---------------------------------------------------------------- choosing a layout, relabelling, val split

def detect_layout(root: Path) -> str:
    """`auto` resolution: DetReIDX folders (train/ and/or case*/), else G2A v2 (has the A2G query file), else MARS."""
    has_cases = any(_CASE_FOLDER.match(e.name) for e in _list_dir(root) if _is_folder(e))
    if ((root / "train").is_dir() or has_cases) and not (root / "info").is_dir():
        return "detreidx"
    if (root / "info" / "query_IDX_A2G.mat").is_file():
        return "g2a2"
    if (root / "info").is_dir() and (root / "bbox_train").is_dir():
        return "mars"
    raise DataError(str(root), "cannot tell the layout: expected DetReIDX folders (train/, case*/) or MARS-style "
                               "bbox_train/, bbox_test/, info/; pass --layout")


def hold_out_val(splits: dict[str, list[Tracklet]], val_ids: int, seed: int) -> None:
    """Move all train tracklets of `val_ids` identities (chosen by `seed`) into a `val` split, in place."""
    if val_ids <= 0:
        return
    train_pids = sorted({t.pid for t in splits["train"]})
    if val_ids >= len(train_pids):
        raise ValueError(f"--val-ids {val_ids} must leave at least one of the {len(train_pids)} train identities")
    chosen = set(np.random.default_rng(seed).choice(train_pids, size=val_ids, replace=False).tolist())
    splits["val"] = [t for t in splits["train"] if t.pid in chosen]
    splits["train"] = [t for t in splits["train"] if t.pid not in chosen]


def assign_train_labels(splits: dict[str, list[Tracklet]]) -> int:
    """Relabel train pids to 0..N-1 in pid order; other splits keep label None. Returns N."""
    pids = sorted({t.pid for t in splits.get("train", [])})
    label_of = {pid: label for label, pid in enumerate(pids)}
    for tracklet in splits.get("train", []):
        tracklet.label = label_of[tracklet.pid]
    return len(pids)


def discover(root: Path, layout: str, skips: SkipLog, camid_rule: str = "capture-point",
             aerial_camera: int = 2) -> tuple[str, dict[str, list[Tracklet]]]:
    """Resolve `layout` ('auto' allowed) and discover the tracklets of every split."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(str(root), "dataset folder does not exist")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of auto, {', '.join(LAYOUTS)}; got {layout!r}")
    if layout == "detreidx":
        return layout, discover_detreidx(root, skips, camid_rule)
    return layout, discover_mars_like(root, layout, skips, aerial_camera)
