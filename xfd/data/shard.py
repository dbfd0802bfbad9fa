"""Writing WebDataset shard sets of tracklets (`xfd-shard`).

One sample per tracklet: `<key>.json` (metadata) then `<key>.0000.jpg …` (frame JPEG bytes, copied, never
re-encoded unless a resize is asked). Shards are planned up front from file sizes, so the same input always
gives the same shards; each is written to a temporary name, hashed while written, and renamed. The manifest
is rewritten (atomically) after every finished shard, so `--resume` after a kill skips every shard whose file
still matches its recorded sha256 and plan, and ends with the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .. import __version__
from ..atomic import atomic_output, remove_temporaries, write_json_atomic
from ..parallel import worker_results
from .errors import DataError, SkipLog
from .jpeg import check_jpeg_structure
from .layouts import Tracklet, assign_train_labels, discover, hold_out_val
from .sampling import evenly_spaced_indices

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATASET_INDEX_NAME = "dataset.json"
SHARD_NAME = re.compile(r"^shard-\d{6}\.tar$")


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


@dataclass
class PlannedShard:
    """One shard to write: which tracklets, with which frames, and the fingerprint of that plan."""

    split: str
    index: int
    samples: list[tuple[Tracklet, list[int], bytes]] = field(default_factory=list)  # (tracklet, frame idx, json)
    estimated_bytes: int = 0
    fingerprint: str = ""

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}.tar"


# ---------------------------------------------------------------- planning

def stored_frame_indices(num_frames: int, max_frames: int) -> list[int]:
    """Frames kept in the shard: all of them, or `max_frames` evenly spaced ones."""
    if max_frames == 0 or num_frames <= max_frames:
        return list(range(num_frames))
    return evenly_spaced_indices(num_frames, max_frames)


def sample_metadata(tracklet: Tracklet, split: str, layout: str, indices: list[int]) -> dict:
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
        "frame_names": [tracklet.frame_paths[i].name for i in indices],
        "frame_indices": indices,
        "num_source_frames": len(tracklet.frame_paths),
    }
    meta.update(tracklet.meta)
    return meta


def _encode_json(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def plan_split(split: str, tracklets: list[Tracklet], layout: str, options: ShardOptions,
               skips: SkipLog) -> list[PlannedShard]:
    """Group a split's tracklets (in key order) into shards by size and/or sample count."""
    limit_bytes = int(options.shard_size_mb * 1024 * 1024)
    shards: list[PlannedShard] = []
    current = PlannedShard(split, 0)
    for tracklet in sorted(tracklets, key=lambda t: t.key):
        indices = stored_frame_indices(len(tracklet.frame_paths), options.max_frames)
        try:
            stats = [_stat(tracklet.frame_paths[i]) for i in indices]
        except DataError as error:
            skips.handle(error, split)
            continue
        meta_json = _encode_json(sample_metadata(tracklet, split, layout, indices))
        size = sum(s[0] for s in stats) + 512 * (len(indices) + 2) + len(meta_json)
        full_by_count = options.shard_samples is not None and len(current.samples) >= options.shard_samples
        full_by_size = current.samples and current.estimated_bytes + size > limit_bytes
        if full_by_count or full_by_size:
            shards.append(current)
            current = PlannedShard(split, len(shards))
        current.samples.append((tracklet, indices, meta_json))
        current.estimated_bytes += size
        _update_fingerprint(current, meta_json, stats)
    if current.samples:
        shards.append(current)
    for shard in shards:
        shard.fingerprint = hashlib.sha256(
            (shard.fingerprint + json.dumps(options.as_manifest(), sort_keys=True)).encode()
        ).hexdigest()
    return shards


def _stat(path: Path) -> tuple[int, int]:
    try:
        status = path.stat()
    except OSError as error:
        raise DataError(str(path), f"frame cannot be read ({error.strerror or error})") from error
    return status.st_size, status.st_mtime_ns


def _update_fingerprint(shard: PlannedShard, meta_json: bytes, stats: list[tuple[int, int]]) -> None:
    digest = hashlib.sha256(shard.fingerprint.encode())
    digest.update(meta_json)
    digest.update(json.dumps(stats).encode())
    shard.fingerprint = digest.hexdigest()


# ---------------------------------------------------------------- writing one shard

class _HashingWriter:
    """File wrapper that hashes and counts what tarfile writes through it."""

    def __init__(self, raw):
        self.raw, self.digest, self.position = raw, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.raw.write(data)
        self.digest.update(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position


def _read_frame(path: Path, options: ShardOptions) -> bytes:
    try:
        with open(path, "rb", buffering=0) as handle:
            data = handle.readall()
    except OSError as error:
        raise DataError(str(path), f"frame cannot be read ({error.strerror or error})") from error
    check_jpeg_structure(data, str(path))
    if options.resize is None:
        return data
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            height, width = options.resize
            resized = image.convert("RGB").resize((width, height), Image.BICUBIC)
    except OSError as error:
        raise DataError(str(path), f"JPEG does not decode ({error})") from error
    out = io.BytesIO()
    resized.save(out, format="JPEG", quality=options.resize_quality)
    return out.getvalue()


def _member(name: str, size: int) -> tarfile.TarInfo:
    """A tar header with every field fixed, so equal content gives equal bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# ustar header of a regular file with the fixed fields of `_member`: name (100), mode, uid, gid, size, mtime,
# checksum, type '0', link name, magic "ustar\0" + version "00", empty owner names, device numbers, prefix.
_HEADER_BEFORE_SIZE = b"%07o\0" % 0o644 + b"%07o\0" % 0 + b"%07o\0" % 0
_HEADER_AFTER_SIZE = b"%011o\0" % 0


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte header tarfile writes for `_member(name, size)` in USTAR format, built directly.

    tarfile's general header code costs more than reading the frame itself; shards have millions of
    members, so the fixed-field header is assembled here (a test checks it equals tarfile's byte for byte).
    """
    encoded = name.encode("ascii")
    if len(encoded) > 100 or size >= 8 ** 11:
        return _member(name, size).tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    head = encoded.ljust(100, b"\0") + _HEADER_BEFORE_SIZE + b"%011o\0" % size + _HEADER_AFTER_SIZE
    tail = b"0" + b"\0" * 100 + b"ustar\x0000" + b"\0" * 247
    checksum = sum(head) + 8 * 32 + sum(tail)
    return head + b"%06o\0 " % checksum + tail


def sample_members(tracklet: Tracklet, indices: list[int], meta_json: bytes, options: ShardOptions):
    """The tar members of one sample: (name, bytes), json first, then frames in order."""
    frames = [_read_frame(tracklet.frame_paths[i], options) for i in indices]
    width = max(4, len(str(len(frames) - 1)))
    members = [(f"{tracklet.key}.json", meta_json)]
    members += [(f"{tracklet.key}.{j:0{width}d}.jpg", data) for j, data in enumerate(frames)]
    return members


def _append_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """What `tar.addfile(_member(name, len(data)), BytesIO(data))` does, with the header built directly."""
    tar.fileobj.write(ustar_header(name, len(data)))
    tar.fileobj.write(data)
    remainder = len(data) % tarfile.BLOCKSIZE
    if remainder:
        tar.fileobj.write(b"\0" * (tarfile.BLOCKSIZE - remainder))
    tar.offset += tarfile.BLOCKSIZE + len(data) + (tarfile.BLOCKSIZE - remainder if remainder else 0)


def write_shard(shard: PlannedShard, folder: Path, options: ShardOptions) -> dict:
    """Write one planned shard atomically; return its manifest entry (+ skip records under `skip`)."""
    skips = SkipLog(options.on_error)
    keys, pids, camids, frame_counts = [], [], [], []
    with atomic_output(folder / shard.name) as raw:
        writer = _HashingWriter(raw)
        with tarfile.open(fileobj=writer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for tracklet, indices, meta_json in shard.samples:
                try:
                    members = sample_members(tracklet, indices, meta_json, options)
                except DataError as error:
                    skips.handle(error, shard.split)
                    continue
                for name, data in members:
                    _append_member(tar, name, data)
                keys.append(tracklet.key)
                pids.append(tracklet.pid)
                camids.append(tracklet.camid)
                frame_counts.append(len(indices))
    return {
        "name": shard.name,
        "sha256": writer.digest.hexdigest(),
        "bytes": writer.position,
        "samples": len(keys),
        "frames": sum(frame_counts),
        "keys": keys,
        "pids": pids,
        "camids": camids,
        "frame_counts": frame_counts,
        "fingerprint": shard.fingerprint,
        "skipped": skips.skipped,
    }


def _write_shard_task(task) -> tuple[str, dict]:
    """Pool entry point: (split, manifest entry), or (split, {"error": ...}) to re-raise in the parent."""
    shard, folder, options = task
    try:
        return shard.split, write_shard(shard, folder, options)
    except DataError as error:  # under the raise policy: hand the error back to the parent intact
        return shard.split, {"error": (error.item, error.rule)}


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
                   num_classes: int | None, complete: bool) -> dict:
    """Manifest of one shard set: per-shard records plus totals (schema in data_shards/README.md)."""
    entries = sorted(entries, key=lambda e: e["name"])
    pids = sorted({p for e in entries for p in e["pids"]})
    camera_counts: dict[str, int] = {}
    for entry in entries:
        for camid in entry["camids"]:
            camera_counts[str(camid)] = camera_counts.get(str(camid), 0) + 1
    frame_counts = [c for e in entries for c in e["frame_counts"]]
    skip_log = SkipLog(options.on_error, list(skipped))  # this split's share of the run's skips
    return {
        "format_version": FORMAT_VERSION,
        "tool": "xfd-shard",
        "tool_version": __version__,
        "layout": layout,
        "split": split,
        "options": options.as_manifest(),
        "complete": complete,
        "num_classes": num_classes,
        "totals": {
            "shards": len(entries),
            "samples": sum(e["samples"] for e in entries),
            "frames": sum(frame_counts),
            "bytes": sum(e["bytes"] for e in entries),
            "identities": len(pids),
        },
        "identities": pids,
        "cameras": dict(sorted(camera_counts.items(), key=lambda item: int(item[0]))),
        "frames_per_sample": {
            "min": min(frame_counts, default=0),
            "max": max(frame_counts, default=0),
            "mean": round(sum(frame_counts) / len(frame_counts), 3) if frame_counts else 0.0,
        },
        "skipped": skip_log.as_manifest(),
        "shards": entries,
    }


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(str(path), f"manifest is not valid JSON ({error})") from error


def _reusable_entries(folder: Path, planned: list[PlannedShard]) -> dict[str, dict]:
    """Shards of a previous run whose plan is unchanged and whose file still has the recorded sha256."""
    previous = read_manifest(folder)
    if previous is None:
        return {}
    by_name = {entry["name"]: entry for entry in previous.get("shards", [])}
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


def _prepare_output(out: Path, overwrite: bool, resume: bool) -> None:
    if out.exists() and any(out.iterdir()) and not (overwrite or resume):
        raise FileExistsError(f"{out} is not empty: pass --resume to continue a run or --overwrite to replace it")
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out)


def shard_dataset(source: Path, out: Path, options: ShardOptions, workers: int = 1, resume: bool = False,
                  overwrite: bool = False, progress: bool = True) -> ShardRunResult:
    """Discover, plan and write every split of `source` into shard sets under `out`."""
    source, out = Path(source), Path(out)
    skips = SkipLog(options.on_error)
    layout, splits = discover(source, options.layout, skips, options.camid_rule, options.aerial_camera)
    if "train" in splits:
        hold_out_val(splits, options.val_ids, options.val_seed)
    num_classes = assign_train_labels(splits)
    _prepare_output(out, overwrite, resume)

    plans = {split: plan_split(split, tracklets, layout, options, skips) for split, tracklets in splits.items()}
    for split, tracklets in splits.items():
        if not plans[split]:
            raise DataError(f"{source} [{split}]", "split is empty: no tracklet left to shard")
    entries: dict[str, list[dict]] = {}
    tasks = []
    reused = 0
    for split, planned in plans.items():
        folder = split_folder(out, split)
        folder.mkdir(parents=True, exist_ok=True)
        keep = _reusable_entries(folder, planned) if resume else {}
        _remove_stale(folder, planned)
        entries[split] = list(keep.values())
        reused += len(keep)
        tasks += [(shard, folder, options) for shard in planned if shard.name not in keep]

    def labels_for(split: str) -> int | None:
        return num_classes if split == "train" else None

    def manifest_for(split: str, complete: bool) -> dict:
        skipped = skips.for_split(split) + [record for e in entries[split] for record in e["skipped"]]
        return build_manifest(split, layout, options, entries[split], skipped, labels_for(split), complete)

    total_samples = sum(len(shard.samples) for shard, _, _ in tasks)
    with worker_results(_write_shard_task, tasks, workers) as results, \
            tqdm(total=total_samples, unit="tracklet", desc="xfd-shard", disable=not progress) as bar:
        for split, result in results:
            if "error" in result:
                raise DataError(*result["error"])
            entries[split].append(result)
            write_json_atomic(split_folder(out, split) / MANIFEST_NAME, manifest_for(split, complete=False))
            bar.update(result["samples"] + len(result["skipped"]))

    manifests = {}
    for split in splits:
        manifests[split] = manifest_for(split, complete=True)
        write_json_atomic(split_folder(out, split) / MANIFEST_NAME, manifests[split])
    all_skips = SkipLog(options.on_error, skips.skipped + [
        record for split in splits for entry in entries[split] for record in entry["skipped"]
    ])
    write_json_atomic(out / DATASET_INDEX_NAME, {
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "layout": layout,
        "num_classes": num_classes,
        "splits": {split: {"path": split, **manifests[split]["totals"]} for split in sorted(splits)},
        "skipped": all_skips.as_manifest(),
    })
    return ShardRunResult(layout, manifests, written=len(tasks), reused=reused)

