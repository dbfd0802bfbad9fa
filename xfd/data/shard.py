"""Writing WebDataset shard sets of tracklets (`xfd-shard`).

One sample per tracklet: `<key>.json` (metadata) then `<key>.0000.jpg …` (frame JPEG bytes, copied, never
re-encoded unless a resize is asked). The run has four steps: discover the tracklets (folder listings, name
parsing) and stat the frames to keep (sizes, links), both in the worker processes; plan the shards from those sizes
(so the same input always gives the same shards), split after split in this process while the workers already
write the shards planned; and write each shard (members built by `tar_members.py`) to a temporary name, hashed
while written, then renamed; threads of this process fsync the finished shards meanwhile. The manifest is
rewritten (atomically) as shards finish, so `--resume` after a kill skips every shard whose file still matches its
recorded sha256 and plan, and ends with the same bytes as an uninterrupted run. What may be written where, and what
a full disk says, is `output.py`'s.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import os
import stat
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from .. import __version__
from ..atomic import atomic_output, remove_temporaries, write_bytes_atomic, write_json_atomic
from ..parallel import worker_pool
from .errors import DataError, SkipLog
from .jpeg import JpegStructureChecker
from .layouts import StoredFrames, Tracklet, assign_train_labels, discover, hold_out_val
from .manifest import DATASET_INDEX_NAME, FORMAT_VERSION, MANIFEST_NAME, SHARD_NAME, read_manifest
from .output import check_output_location, disk_full_named, prepare_output, sync_file
from .sampling import evenly_spaced_indices
from .tar_members import PlannedSample, archive_end, sample_bytes
TRAINING_SPLITS = ("train", "val")


@dataclass(frozen=True)
class ShardOptions:
    """Everything that decides the bytes of the shards (recorded in each manifest)."""

    layout: str = "auto"
    max_frames: int = 64
    shard_size_mb: float = 256.0
    shard_samples: int | None = None
    resize: tuple[int, int] | None = None  # (height, width): re-encode frames at this size
    resize_quality: int = 95
    camid_rule: str = "capture-point"
    aerial_camera: int = 2
    val_ids: int = 0
    val_seed: int = 0
    on_error: str = "raise"
    unlabelled: bool = False  # query/gallery splits are anonymised: pid unknown, any tracklet folder names
    follow_symlinks: bool = False  # read links that lead out of the source dataset (recorded in the manifest)

    def __post_init__(self):
        if self.max_frames < 0:
            raise ValueError("max_frames must be >= 0 (0 keeps every frame)")
        if self.shard_size_mb <= 0:
            raise ValueError("shard size must be positive")
        if self.shard_samples is not None and self.shard_samples < 1:
            raise ValueError("shard_samples must be >= 1")

    def as_manifest(self) -> dict:
        values = dict(self.__dict__)
        values["resize"] = list(self.resize) if self.resize else None
        return values

    def labelled(self, split: str) -> bool:
        """Training splits always carry identities; the others unless the run shards them `unlabelled`."""
        return split in TRAINING_SPLITS or not self.unlabelled


@dataclass
class PlannedShard:
    """One shard to write: which tracklets, with which frames, and the fingerprint of that plan."""

    split: str
    index: int
    samples: list[PlannedSample] = field(default_factory=list)
    estimated_bytes: int = 0
    fingerprint: str = ""

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}.tar"


# ---------------------------------------------------------------- frames to keep, and their sizes

def stored_frame_indices(num_frames: int, max_frames: int) -> Sequence[int]:
    """Frames kept in the shard: all of them (a range: cheap to send between processes), or `max_frames` evenly
    spaced ones."""
    if max_frames == 0 or num_frames <= max_frames:
        return range(num_frames)
    return evenly_spaced_indices(num_frames, max_frames)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _inspect_frames(tracklet: Tracklet, max_frames: int, root: str, real_root: str,
                    follow: bool) -> Tracklet | DataError:
    """Choose and stat the frames the shard will keep (set as `tracklet.stored`), refusing links that lead out
    of the dataset unless `follow` (then recording them). Runs in the workers, right after discovery; frames are
    stat-ed relative to their folder (one name lookup each, as tar does). The usual tracklet, all regular files,
    is stat-ed in one `map`; any other goes frame by frame (`_stat_frames`), which says what is wrong where."""
    indices = stored_frame_indices(len(tracklet.frame_names), max_frames)
    names = tracklet.frame_names if len(indices) == len(tracklet.frame_names) else \
        [tracklet.frame_names[i] for i in indices]
    folder, links = tracklet.folder, []

    def check_link(path: str, what: str) -> None:
        resolved = os.path.realpath(path)
        if not _inside(resolved, real_root):
            if not follow:
                raise DataError(path, f"{what} is a symbolic link (or inside one) leading out of the dataset to "
                                      f"{resolved}; pass --follow-symlinks to read it")
            links.append((os.path.relpath(path, root), resolved))

    try:
        check_link(folder, "folder")
        try:
            folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as error:
            raise DataError(folder, f"folder cannot be read ({error.strerror or error})") from None
        try:
            try:
                statuses = list(map(functools.partial(os.lstat, dir_fd=folder_fd), names))
                regular = all(map(stat.S_ISREG, map(_MODE, statuses)))
            except OSError:
                regular = False
            if not regular:  # a link, something else, or an error: frame by frame
                statuses = _stat_frames(folder, folder_fd, names, check_link)
        finally:
            os.close(folder_fd)
    except DataError as error:
        return error
    sizes = list(map(_SIZE, statuses))
    stamp = hashlib.sha256(array("q", sizes).tobytes() + array("q", map(_MTIME, statuses)).tobytes()).digest()
    tracklet.stored = StoredFrames(indices, sizes, stamp, links)
    return tracklet


_MODE, _SIZE, _MTIME = (operator.attrgetter(name) for name in ("st_mode", "st_size", "st_mtime_ns"))


def _stat_frames(folder: str, folder_fd: int, names: Sequence[str], check_link) -> list[os.stat_result]:
    """The frames' stats one by one, following links that `check_link` accepts; a DataError names the first
    frame that cannot be read or is not a regular file."""
    statuses = []
    for name in names:
        try:
            status = os.lstat(name, dir_fd=folder_fd)
            if stat.S_ISLNK(status.st_mode):
                check_link(os.path.join(folder, name), "frame")
                status = os.stat(name, dir_fd=folder_fd)
        except OSError as error:
            raise DataError(os.path.join(folder, name), f"frame cannot be read ({error.strerror or error})") from None
        if not stat.S_ISREG(status.st_mode):
            raise DataError(os.path.join(folder, name), "frame is not a regular file")
        statuses.append(status)
    return statuses


# ---------------------------------------------------------------- planning

def sample_metadata(tracklet: Tracklet, split: str, layout: str, indices: Sequence[int]) -> dict:
    """The `<key>.json` of a sample (schema in data_shards/README.md)."""
    meta = {
        "format_version": FORMAT_VERSION,
        "key": tracklet.key,
        "split": split,
        "layout": layout,
        "pid": tracklet.pid,
        "label": tracklet.label,
        "camid": tracklet.camid,
        "platform": tracklet.platform,
        "frame_names": [tracklet.frame_names[i] for i in indices],
        "frame_indices": list(indices),
        "num_source_frames": len(tracklet.frame_names),
    }
    meta.update(tracklet.meta)
    return meta


def _encode_json(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def plan_split(split: str, tracklets: list[Tracklet], layout: str, options: ShardOptions) -> list[PlannedShard]:
    """Group a split's tracklets (in key order; their `stored` frames known) into shards by size and/or count."""
    limit_bytes = int(options.shard_size_mb * 1024 * 1024)
    options_json = json.dumps(options.as_manifest(), sort_keys=True)
    shards: list[PlannedShard] = []
    current = PlannedShard(split, 0)
    for tracklet in sorted(tracklets, key=lambda t: t.key):
        stored = tracklet.stored
        meta_json = _encode_json(sample_metadata(tracklet, split, layout, stored.indices))
        sizes = stored.sizes
        size = sum(sizes) + 512 * (len(sizes) + 2) + len(meta_json)
        full_by_count = options.shard_samples is not None and len(current.samples) >= options.shard_samples
        full_by_size = current.samples and current.estimated_bytes + size > limit_bytes
        if full_by_count or full_by_size:
            shards.append(current)
            current = PlannedShard(split, len(shards))
        names = tracklet.frame_names if len(stored.indices) == len(tracklet.frame_names) else \
            [tracklet.frame_names[i] for i in stored.indices]
        current.samples.append(PlannedSample(tracklet.key, tracklet.pid, tracklet.camid, tracklet.unknown, meta_json,
                                             tracklet.folder, names, sizes))
        current.estimated_bytes += size
        _update_fingerprint(current, meta_json, stored)
    if current.samples:
        shards.append(current)
    for shard in shards:
        shard.fingerprint = hashlib.sha256((shard.fingerprint + options_json).encode()).hexdigest()
    return shards


def _update_fingerprint(shard: PlannedShard, meta_json: bytes, stored: StoredFrames) -> None:
    """Chain the sample into its shard's fingerprint: its JSON and its frames' sizes and mtimes (`stamp`)."""
    shard.fingerprint = hashlib.sha256(shard.fingerprint.encode() + meta_json + stored.stamp).hexdigest()


# ---------------------------------------------------------------- writing one shard

def write_shard(shard: PlannedShard, folder: Path, options: ShardOptions, root: str | None = None) -> dict:
    """Write one planned shard atomically; return its manifest entry (+ skip records under `skip`)."""
    skips = SkipLog(options.on_error, root=root)
    check = JpegStructureChecker()  # frames of a tracklet share their header: it is walked once
    written: list[PlannedSample] = []
    digest, size = hashlib.sha256(), 0
    path = folder / shard.name
    with disk_full_named(path), atomic_output(path, sync=False) as raw:  # made durable by `sync_file`
        for sample in shard.samples:
            try:
                data = sample_bytes(sample, options.resize, options.resize_quality, check)
            except DataError as error:
                skips.handle(error, shard.split)
                continue
            raw.write(data)
            digest.update(data)
            size += len(data)
            written.append(sample)
        end = archive_end(size)
        raw.write(end)
        digest.update(end)
        size += len(end)
    unknown: dict[str, int] = {}
    for sample in written:
        for what in sample.unknown:
            unknown[what] = unknown.get(what, 0) + 1
    return {
        "name": shard.name,
        "sha256": digest.hexdigest(),
        "bytes": size,
        "samples": len(written),
        "frames": sum(len(sample.names) for sample in written),
        "keys": [sample.key for sample in written],
        "pids": [sample.pid for sample in written],
        "camids": [sample.camid for sample in written],
        "frame_counts": [len(sample.names) for sample in written],
        "fingerprint": shard.fingerprint,
        "skipped": skips.skipped,
        "unknown": dict(sorted(unknown.items())),
    }


def _write_shard_task(task) -> tuple[str, dict]:
    """Pool entry point: (split, manifest entry); errors cross the pool as themselves (DataError pickles)."""
    shard, folder, options, root = task
    return shard.split, write_shard(shard, folder, options, root)


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- manifests

def split_folder(out: Path, split: str) -> Path:
    return out.joinpath(*split.split("/"))


def build_manifest(split: str, layout: str, options: ShardOptions, entries: list[dict], skipped: list[dict],
                   num_classes: int | None, complete: bool, links: list[tuple[str, str]] = ()) -> dict:
    """Manifest of one shard set: per-shard records plus totals (schema in data_shards/README.md)."""
    entries = sorted(entries, key=lambda e: e["name"])
    labelled = options.labelled(split)
    pids = sorted({p for e in entries for p in e["pids"] if p is not None})
    camera_counts: dict[str, int] = {}
    unknown: dict[str, int] = {}
    for entry in entries:
        for camid in entry["camids"]:
            if camid is not None:
                camera_counts[str(camid)] = camera_counts.get(str(camid), 0) + 1
        for what, count in entry.get("unknown", {}).items():
            unknown[what] = unknown.get(what, 0) + count
    frame_counts = [c for e in entries for c in e["frame_counts"]]
    skip_log = SkipLog(options.on_error, list(skipped))  # this split's share of the run's skips
    return {
        "format_version": FORMAT_VERSION,
        "tool": "xfd-shard",
        "tool_version": __version__,
        "layout": layout,
        "split": split,
        "labelled": labelled,
        "options": options.as_manifest(),
        "complete": complete,
        "num_classes": num_classes,
        "totals": {
            "shards": len(entries),
            "samples": sum(e["samples"] for e in entries),
            "frames": sum(frame_counts),
            "bytes": sum(e["bytes"] for e in entries),
            "identities": len(pids) if labelled else None,
        },
        "identities": pids,
        "cameras": dict(sorted(camera_counts.items(), key=lambda item: int(item[0]))),
        "unknown": dict(sorted(unknown.items())),
        "links_followed": [{"path": path, "resolved": resolved} for path, resolved in sorted(set(links))],
        "frames_per_sample": {
            "min": min(frame_counts, default=0),
            "max": max(frame_counts, default=0),
            "mean": round(sum(frame_counts) / len(frame_counts), 3) if frame_counts else 0.0,
        },
        "skipped": skip_log.as_manifest(),
        "shards": entries,
    }


def _reusable_entries(folder: Path, planned: list[PlannedShard]) -> dict[str, dict]:
    """Shards of a previous run whose plan is unchanged and whose file still has the recorded sha256."""
    if not (folder / MANIFEST_NAME).is_file():
        return {}
    try:
        previous = read_manifest(folder)
    except DataError:  # an interim manifest is written unsynced: a crash may have emptied it; start the split over
        return {}
    by_name = {entry.get("name"): entry for entry in previous["shards"] if isinstance(entry, dict)}
    reusable = {}
    for shard in planned:
        entry = by_name.get(shard.name)
        path = folder / shard.name
        if entry and entry.get("fingerprint") == shard.fingerprint and path.is_file():
            if sha256_of_file(path) == entry["sha256"]:
                reusable[shard.name] = entry
    return reusable


def _remove_stale(folder: Path, planned: list[PlannedShard]) -> None:
    """Delete shard files the plan no longer has and temporaries a killed run left behind."""
    wanted = {shard.name for shard in planned}
    for path in folder.iterdir():
        if SHARD_NAME.match(path.name) and path.name not in wanted:
            path.unlink()
    remove_temporaries(folder)


# ---------------------------------------------------------------- the whole run

@dataclass
class ShardRunResult:
    layout: str
    manifests: dict[str, dict]
    written: int
    reused: int


def shard_dataset(source: Path, out: Path, options: ShardOptions, workers: int = 1, resume: bool = False,
                  overwrite: bool = False, progress: bool = True) -> ShardRunResult:
    """Discover, plan and write every split of `source` into shard sets under `out`."""
    source, out = Path(source), Path(out)
    check_output_location(source, out)
    skips = SkipLog(options.on_error, root=str(source))
    inspect = functools.partial(_inspect_frames, max_frames=options.max_frames, root=str(source),
                                real_root=os.path.realpath(source), follow=options.follow_symlinks)
    with worker_pool(workers) as pool:
        layout, splits = discover(source, options.layout, skips, options.camid_rule, options.aerial_camera,
                                  options.unlabelled, run_tasks=pool.map, inspect=inspect)
        for split, tracklets in splits.items():  # tracklets found in this process (MARS-style): inspected here
            outcomes = pool.map(inspect, [t for t in tracklets if t.stored is None])
            splits[split] = []
            for tracklet in tracklets:
                outcome = tracklet if tracklet.stored is not None else next(outcomes)
                if isinstance(outcome, DataError):
                    skips.handle(outcome, split)
                else:
                    splits[split].append(outcome)
        if "train" in splits:
            hold_out_val(splits, options.val_ids, options.val_seed)
        num_classes = assign_train_labels(splits)
        for split, tracklets in splits.items():
            if not tracklets:
                raise DataError(f"{source} [{split}]", "split is empty: no tracklet left to shard")
        prepare_output(out, overwrite, resume)
        links = {split: [link for t in tracklets for link in t.stored.links] for split, tracklets in splits.items()}
        return _write_splits(pool, source, out, layout, options, splits, links, num_classes, skips, resume,
                             progress)


def _write_splits(pool, source: Path, out: Path, layout: str, options: ShardOptions, splits: dict, links: dict,
                  num_classes: int, skips: SkipLog, resume: bool, progress: bool) -> ShardRunResult:
    """Plan each split and hand its shards to the workers, split after split: the workers write the first
    split's shards while this process plans the next (the pool takes every task before any result is read)."""
    entries: dict[str, list[dict]] = {}
    plans: dict[str, list[PlannedShard]] = {}
    counts = {"written": 0, "reused": 0}

    def tasks():
        for split, tracklets in splits.items():
            plans[split] = planned = plan_split(split, tracklets, layout, options)
            folder = split_folder(out, split)
            with disk_full_named(folder):
                folder.mkdir(parents=True, exist_ok=True)
            keep = _reusable_entries(folder, planned) if resume else {}
            _remove_stale(folder, planned)
            entries[split] = list(keep.values())
            counts["reused"] += len(keep)
            bar.update(sum(len(shard.samples) for shard in planned if shard.name in keep))
            todo = [shard for shard in planned if shard.name not in keep]
            todo.sort(key=lambda shard: -shard.estimated_bytes)  # biggest first: the workers finish together
            counts["written"] += len(todo)
            yield from ((shard, folder, options, str(source)) for shard in todo)

    def manifest_for(split: str, complete: bool) -> dict:
        skipped = skips.for_split(split) + [record for e in entries[split] for record in e["skipped"]]
        return build_manifest(split, layout, options, entries[split], skipped,
                              num_classes if split == "train" else None, complete, links[split])

    def write_interim_manifest(split: str, manifest: dict) -> None:
        path = split_folder(out, split) / MANIFEST_NAME
        with disk_full_named(path):  # a hint for --resume, which re-checks it: compact and unsynced
            write_bytes_atomic(path, json.dumps(manifest, sort_keys=True).encode(), sync=False)

    listed = dict.fromkeys(splits, 0)

    def note_progress(split: str) -> None:
        """Rewrite the split's interim manifest after each shard while there are few, then after every ~6 %
        more: a kill loses at most that much work, and a run of thousands of shards is not quadratic in them."""
        if len(entries[split]) - listed[split] >= max(1, len(entries[split]) // 16):
            listed[split] = len(entries[split])
            write_interim_manifest(split, manifest_for(split, complete=False))

    total_samples = sum(len(tracklets) for tracklets in splits.values())
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="xfd-shard-sync") as syncing, \
            tqdm(total=total_samples, unit="tracklet", desc="xfd-shard", disable=not progress) as bar:
        synced = []
        for split, result in pool.map(_write_shard_task, tasks(), ordered=False):
            synced.append(syncing.submit(sync_file, split_folder(out, split) / result["name"]))
            entries[split].append(result)
            note_progress(split)
            bar.update(result["samples"] + len(result["skipped"]))
        for future in synced:
            future.result()  # every shard on disk before any manifest says complete

        manifests = {}
        for split in plans:  # written first, then synced together (one journal commit rather than one each)
            manifests[split] = manifest_for(split, complete=True)
            path = split_folder(out, split) / MANIFEST_NAME
            with disk_full_named(path):
                write_json_atomic(path, manifests[split], sync=False)
        for future in [syncing.submit(sync_file, split_folder(out, split) / MANIFEST_NAME) for split in plans]:
            future.result()
    all_skips = SkipLog(options.on_error, skips.skipped + [
        record for split in plans for entry in entries[split] for record in entry["skipped"]
    ])
    with disk_full_named(out / DATASET_INDEX_NAME):
        write_json_atomic(out / DATASET_INDEX_NAME, {
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "layout": layout,
            "num_classes": num_classes,
            "splits": {split: {"path": split, "labelled": manifests[split]["labelled"], **manifests[split]["totals"]}
                       for split in sorted(plans)},
            "skipped": all_skips.as_manifest(),
        })
    return ShardRunResult(layout, manifests, written=counts["written"], reused=counts["reused"])
