"""Finding the tracklets of a dataset on disk: DetReIDX folders and MARS / G2A-VReID protocol files.

Each layout's discovery returns, per output split, a list of `Tracklet` records (identity, camera, platform,
capture metadata, frame files in temporal order). Nothing is read beyond names and protocol files here; frame
bytes are read and checked while shards are written. Problems are `DataError`s naming the file and the rule,
handled by the caller's `SkipLog` (raise by default, or skip-and-record).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError, SkipLog
from .metadata import (
    DetReIDXFrame,
    capture_bins,
    detreidx_camid,
    no_metadata_bins,
    parse_detreidx_frame,
    parse_mars_frame,
)

LAYOUTS = ("detreidx", "mars", "g2a", "g2a2")
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_CASE_FOLDER = re.compile(r"^case\d+_[A-Za-z0-9_]+$")


@dataclass
class StoredFrames:
    """What the shard tool learns of the frames it will keep: their indices in `frame_names`, the size of each, a
    digest of their sizes and mtimes (what a shard's plan fingerprint needs of them, small to send between
    processes), and the links it followed out of the dataset ((relative path, resolved path), with
    --follow-symlinks)."""

    indices: Sequence[int]  # a range when every frame is kept
    sizes: list[int]
    stamp: bytes  # sha256 of the sizes and st_mtime_ns, as 64-bit integers
    links: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Tracklet:
    """One tracklet as found on disk; becomes one shard sample."""

    key: str
    pid: int | None  # None in unlabelled splits
    camid: int | None  # None where an unlabelled tracklet's names do not give it
    platform: str
    folder: str  # every frame of a tracklet lies in one folder (read relative to it: one lookup a frame)
    frame_names: list[str]  # in temporal order (plain strings: millions of them cross process boundaries)
    meta: dict = field(default_factory=dict)
    label: int | None = None
    unknown: tuple[str, ...] = ()  # what an unlabelled tracklet's names did not say (counted in the manifest)
    stored: StoredFrames | None = None  # set by the shard tool before planning


_DIGIT_RUNS = re.compile(r"(\d+)")


def _natural_key(name: str) -> list:
    """'f10' after 'f9': digit runs compare as numbers (odd positions of the split are exactly the runs)."""
    parts = _DIGIT_RUNS.split(name)
    parts[1::2] = map(int, parts[1::2])
    return parts


_DIGIT_MASK = str.maketrans("0123456789", "0000000000")


def _natural_order(entries: list[os.DirEntry]) -> list[os.DirEntry]:
    """Entries by `_natural_key` of their names. Frame names of one tracklet usually differ only in equally wide
    digit runs (zero-padded counters): then plain string order is the same order, found at C speed."""
    masks = {entry.name.translate(_DIGIT_MASK) for entry in entries}
    if len(masks) <= 1 and all(entry.name.isascii() for entry in entries):
        return sorted(entries, key=lambda entry: entry.name)
    return sorted(entries, key=lambda entry: _natural_key(entry.name))


def _list_dir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return _natural_order(list(entries))
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


def _parse_key(name: str) -> tuple[tuple | str, str, bool]:
    """What decides a frame name's parse, given the other frames' names: (key, head, reusable). Names with equal
    keys parse alike when `reusable` (their last field, a frame counter, cannot change the result)."""
    dot = name.rfind(".")
    stem = name[:dot] if dot >= 0 else name
    head, _, last = stem.rpartition("_")
    fields = stem.count("_") + 1
    reusable = bool(head) and fields not in (8, 9) and not (last[:1] in ("S", "G") and last[1:].isdigit())
    return ((head, fields) if reusable else stem), head, reusable


def _parse_frame_names(folder: Path, names: list[str], labelled: bool,
                       uniform: bool = False) -> tuple[DetReIDXFrame | None, int]:
    """Parse every frame name of a tracklet; return the first frame's parse (None: an unlabelled tracklet whose
    names carry no metadata) and the number of distinct pids the names give. Frames must agree on the capture.

    Names of one tracklet usually differ only in a trailing frame counter, so a parse is reused for names equal
    up to their last field whenever that field cannot change the result (not an S<n>/G<n> field, not the angle of
    a 9-field name): every name is still checked, at one parse per tracklet. `uniform` names (equal up to their
    digits, see `_frame_names`) that all begin with the first name's head share its parse key: that is checked
    for the whole list at once.
    """
    key, head, reusable = _parse_key(names[0])
    if uniform and reusable and ("\0" + "\0".join(names)).count("\0" + head + "_") == len(names):
        # same head, and every "_" and "." where the first name has them (equal up to digits): same key
        first_names = {key: names[0]}
    else:
        first_names = {}  # parse key -> the first name with it (name order)
        for name in names:
            first_names.setdefault(_parse_key(name)[0], name)
    first, pids = None, set()
    for index, name in enumerate(first_names.values()):
        try:
            frame = parse_detreidx_frame(name, require_pid=labelled)
        except DataError as error:
            if labelled:
                raise DataError(str(folder / name), error.rule) from None
            frame = error  # unlabelled: a name without metadata is counted, not fatal
        if index == 0:
            first = frame
        elif isinstance(first, DataError) != isinstance(frame, DataError) or (
                not isinstance(frame, DataError) and frame.capture_key != first.capture_key):
            described = "no metadata" if isinstance(frame, DataError) else frame.capture_key
            expected = "no metadata" if isinstance(first, DataError) else first.capture_key
            raise DataError(str(folder / name),
                            f"capture metadata {described} differs from the tracklet's first frame {expected}")
        if not isinstance(frame, DataError):
            pids.add(frame.pid)
    return (None if isinstance(first, DataError) else first), len(pids)


def _frame_entries(folder: Path) -> list[os.DirEntry]:
    """The frames of a tracklet folder, in natural order, one check at a time (raising on the first bad entry)."""
    files = []
    for entry in _visible(_list_dir(folder)):
        if not _is_file(entry) or not entry.name.lower().endswith(_JPEG_SUFFIXES):
            raise DataError(entry.path, "unexpected entry in a tracklet folder (only .jpg/.jpeg frames belong there)")
        files.append(entry)
    if not files:
        raise DataError(str(folder), "empty tracklet (no .jpg frames)")
    return files


def _frame_names(folder: Path) -> tuple[list[str], bool]:
    """The frame names of a tracklet folder in natural order, and whether they are uniform (ASCII, equal up to
    their digits: the usual zero-padded counters).

    This runs for every tracklet of a dataset, so the usual folder is checked whole, at C speed, on its names
    joined by NUL (which no file name contains): no hidden entry, every name ending in .jpg/.jpeg, every entry a
    file. Any other folder takes `_frame_entries`' entry-by-entry path, which raises the same errors."""
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
        names = [entry.name for entry in entries]
        joined = "\0" + "\0".join(names) + "\0"
        lowered = joined.lower()
        if not names or "\0." in joined or \
                lowered.count(".jpg\0") + lowered.count(".jpeg\0") != len(names) or \
                not all(map(os.DirEntry.is_file, entries)):
            names = None
    except OSError:
        names = None
    if names is None:
        return _uniform([entry.name for entry in _frame_entries(folder)])
    return _uniform(names)


def _uniform(names: list[str]) -> tuple[list[str], bool]:
    """`names` in natural order, and whether they are ASCII and equal up to their digits (then plain string order
    is natural order)."""
    joined = "\0".join(names) + "\0"
    first = names[0].translate(_DIGIT_MASK) + "\0"
    uniform = joined.isascii() and joined.translate(_DIGIT_MASK) == first * len(names)
    return (sorted(names) if uniform else sorted(names, key=_natural_key)), uniform


def _capture_meta(root: Path, folder: Path, first: DetReIDXFrame | None) -> dict:
    aerial = first is not None and first.platform == "aerial"
    return {
        "session": first.session if first else None,
        "height": first.height if aerial else None,
        "distance": first.distance if aerial else None,
        "angle": first.angle if aerial else None,
        "bins": capture_bins(first.platform, first.height, first.distance, first.angle) if first
        else no_metadata_bins(),
        "name_fields": list(first.fields) if first else None,
        "source": folder.relative_to(root).as_posix(),
        "tracklet": folder.name,
    }


def _labelled_tracklet(root: Path, pid_folder: str, folder: Path, camid_rule: str) -> Tracklet:
    tracklet_name = folder.name
    pid_prefix = tracklet_name.split("_", 1)[0]
    if not pid_prefix.isdigit() or int(pid_prefix) != int(pid_folder):
        raise DataError(str(folder), f"tracklet folder must be named <pid>_<id> with pid {pid_folder}")
    names, uniform = _frame_names(folder)
    first, pid_count = _parse_frame_names(folder, names, labelled=True, uniform=uniform)
    if first.pid != int(pid_folder) or pid_count != 1:
        pids = sorted({parse_detreidx_frame(name).pid for name in names})
        raise DataError(str(folder), f"tracklet with several pids or a pid other than its folder's: {pids}")
    _check_key(tracklet_name, str(folder))
    return Tracklet(
        key=tracklet_name,
        pid=first.pid,
        camid=detreidx_camid(first, camid_rule),
        platform=first.platform,
        folder=str(folder),
        frame_names=names,
        meta=_capture_meta(root, folder, first),
    )


_PLATFORM_WORDS = re.compile(r"^case\d+_(?P<query>[a-z]+)_to_(?P<gallery>[a-z]+)$")


def _platform_from_split(split: str) -> str | None:
    """`case1_aerial_to_ground/query` → aerial: what the case folder's name says of one side."""
    case, _, side = split.rpartition("/")
    match = _PLATFORM_WORDS.match(case)
    platform = match[side] if match and side in ("query", "gallery") else None
    return platform if platform in ("ground", "aerial") else None


def unlabelled_key(name: str) -> str:
    """Sample key of an unlabelled tracklet: its folder name, or (names that are no valid key) a stable digest."""
    if _KEY.match(name):
        return name
    return "t" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def _unlabelled_tracklet(root: Path, split: str, folder: Path, camid_rule: str) -> Tracklet:
    """A tracklet of a split whose folders carry no trustworthy identity: any folder name, pid unknown, whatever
    the frame names say kept, what they do not say recorded in `unknown`."""
    names, uniform = _frame_names(folder)
    first, _ = _parse_frame_names(folder, names, labelled=False, uniform=uniform)
    unknown = ["pid"]
    if first is None:
        unknown.append("name_metadata")
        platform = _platform_from_split(split)
        if platform is None:
            raise DataError(str(folder), "frame names carry no metadata and the case folder's name does not say "
                                         "the platform (case<N>_<platform>_to_<platform>)")
        unknown.append("platform_from_folder")
        camid = None
    else:
        platform = first.platform
        try:
            camid = detreidx_camid(first, camid_rule)
        except DataError:
            camid = None
    if camid is None:
        unknown.append("camid")
    meta = _capture_meta(root, folder, first)
    if meta["session"] is None:
        unknown.append("session")
    if platform == "aerial" and meta["height"] is None:
        unknown.append("capture")
    return Tracklet(key=unlabelled_key(folder.name), pid=None, camid=camid, platform=platform,
                    folder=str(folder), frame_names=names, meta=meta, unknown=tuple(unknown))


def _tracklet(root: Path, split: str, group: str, folder: Path, camid_rule: str, labelled: bool, inspect):
    """One tracklet folder → Tracklet (passed through `inspect`, when given), or the DataError it raised."""
    try:
        if labelled:
            tracklet = _labelled_tracklet(root, group, folder, camid_rule)
        else:
            tracklet = _unlabelled_tracklet(root, split, folder, camid_rule)
        return tracklet if inspect is None else inspect(tracklet)
    except DataError as error:
        return error


def _group_task(task) -> list[tuple[str, Tracklet | DataError]]:
    """Worker entry point: one identity folder (labelled: `<PID>/`; unlabelled: any folder, or a tracklet folder
    itself) → (tracklet folder, Tracklet or DataError) for each tracklet in it, in name order."""
    root, split, group, camid_rule, labelled, inspect = task
    name = os.path.basename(group)
    try:
        if labelled and not name.isdigit():
            raise DataError(group, "expected an identity folder named by its numeric PID")
        if not os.path.isdir(group):
            raise DataError(group, "expected an identity or tracklet folder (not a file, not a broken link)")
        entries = _visible(_list_dir(Path(group)))
    except DataError as error:
        return [(group, error)]
    if not labelled and entries and not _is_folder(entries[0]):  # the folder is itself a tracklet
        return [(group, _tracklet(root, split, name, Path(group), camid_rule, labelled, inspect))]
    outcomes = []
    for entry in entries:
        if _is_folder(entry):
            outcomes.append((entry.path, _tracklet(root, split, name, Path(entry.path), camid_rule, labelled,
                                                   inspect)))
        else:
            outcomes.append((entry.path, DataError(entry.path, "expected a tracklet folder (not a file, not a "
                                                               "broken link)")))
    return outcomes


def discover_detreidx(root: Path, skips: SkipLog, camid_rule: str = "capture-point", unlabelled: bool = False,
                      run_tasks=map, inspect=None) -> dict[str, list[Tracklet]]:
    """`ROOT/{train,case*/query,case*/gallery}/<PID>/<pid>_<tracklet>/*.jpg` → tracklets per split.

    With `unlabelled`, every query/gallery split is read as anonymised (`_unlabelled_tracklet`): any
    `<group>/<tracklet>/` or `<tracklet>/` folder names; train never is. Identity folders are read by
    `run_tasks(function, tasks)` (an ordered map, e.g. over a process pool), each tracklet passed through
    `inspect` there when given (the shard tool stats the frames it will keep, where they were just listed)."""
    split_folders = _detreidx_split_folders(root)
    if unlabelled and set(split_folders) == {"train"}:
        raise DataError(str(root), "--unlabelled needs query/gallery splits (case*/query, case*/gallery); "
                                   "training splits are never unlabelled")
    tasks = []
    for split, folder in split_folders.items():
        labelled = split == "train" or not unlabelled
        tasks += [(root, split, group.path, camid_rule, labelled, inspect) for group in _visible(_list_dir(folder))]
    result: dict[str, list[Tracklet]] = {split: [] for split in split_folders}
    seen: dict[str, dict[str, Path]] = {split: {} for split in split_folders}
    for task, outcomes in zip(tasks, run_tasks(_group_task, tasks)):
        split = task[1]
        for folder, outcome in outcomes:
            try:
                if isinstance(outcome, DataError):
                    raise outcome
                _add_unique(result[split], seen[split], outcome, Path(folder))
            except DataError as error:
                skips.handle(error, split)
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


def _parse_mars_name(path: Path, pid_digits: int):
    try:
        return parse_mars_frame(path.name, pid_digits)
    except DataError as error:
        raise DataError(str(path), error.rule) from None


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
            parsed = [_parse_mars_name(root / image_folder / n[:pid_digits] / n, pid_digits) for n in frame_names]
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
            folder = str(root / image_folder / frame_names[0][:pid_digits])  # the frames' pid is the row's
            tracks.append(Tracklet(key=key, pid=pid, camid=camera, platform=platform, folder=folder,
                                   frame_names=list(frame_names), meta=meta))
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
             aerial_camera: int = 2, unlabelled: bool = False, run_tasks=map,
             inspect=None) -> tuple[str, dict[str, list[Tracklet]]]:
    """Resolve `layout` ('auto' allowed) and discover the tracklets of every split (`unlabelled`: DetReIDX only,
    query/gallery splits read as anonymised; `run_tasks`: an ordered map, e.g. over a process pool; `inspect`:
    applied to each DetReIDX tracklet where it is found, see `discover_detreidx`)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(str(root), "dataset folder does not exist")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of auto, {', '.join(LAYOUTS)}; got {layout!r}")
    if layout == "detreidx":
        return layout, discover_detreidx(root, skips, camid_rule, unlabelled, run_tasks, inspect)
    if unlabelled:
        raise ValueError(f"--unlabelled reads DetReIDX folders whose identities are hidden; the {layout} layout's "
                         "protocol files always carry identities")
    return layout, discover_mars_like(root, layout, skips, aerial_camera)
