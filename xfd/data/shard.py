"""Writing WebDataset shard sets of tracklets (`xfd-shard`).

One sample per tracklet: `<key>.json` (metadata) then `<key>.0000.jpg …` (frame JPEG bytes, copied, never
re-encoded unless a resize is asked). The run has four steps, the middle two and the last spread over the worker
processes: discover the tracklets (folder listings, name parsing), stat the frames to keep (sizes, links), plan
the shards from those sizes (so the same input always gives the same shards), and write each shard to a
temporary name, hashed while written, then renamed. The manifest is rewritten (atomically) after every finished
shard, so `--resume` after a kill skips every shard whose file still matches its recorded sha256 and plan, and
ends with the same bytes as an uninterrupted run.

Safety of the output folder: OUT may not be, contain or lie inside the source dataset, and `--overwrite` or
`--resume` act only on a folder xfd-shard wrote (its `dataset.json` or the `.xfd-shard` marker written first
thing); `--overwrite` then deletes only the files xfd-shard writes.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

from tqdm import tqdm

from .. import __version__
from ..atomic import atomic_output, remove_temporaries, write_bytes_atomic, write_json_atomic
from ..parallel import worker_pool
from .errors import DataError, SkipLog
from .jpeg import JpegStructureChecker, check_jpeg_structure
from .layouts import StoredFrames, Tracklet, assign_train_labels, discover, hold_out_val
from .manifest import DATASET_INDEX_NAME, FORMAT_VERSION, MANIFEST_NAME, SHARD_NAME, read_manifest
from .sampling import evenly_spaced_indices

OUTPUT_MARKER = ".xfd-shard"
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


class UnsafeOutputError(ValueError):
    """OUT is, contains or lies inside the source, or holds something xfd-shard did not write."""


class DiskFullError(OSError):
    """The output disk filled up; the message says what was being written and how to resume."""

    def __init__(self, path: str):
        super().__init__(errno.ENOSPC, f"disk full while writing {path}: its temporary file was removed and every "
                                       "finished shard is kept; free some space (or pick another OUT) and run the "
                                       "same command again with --resume")
        self.path = path

    def __reduce__(self):
        return DiskFullError, (self.path,)

    def __str__(self) -> str:
        return self.strerror


@contextmanager
def _disk_full_named(path: Path):
    """Turn ENOSPC while writing `path` into a DiskFullError naming it."""
    try:
        yield
    except OSError as error:
        if error.errno == errno.ENOSPC and not isinstance(error, DiskFullError):
            raise DiskFullError(str(path)) from None
        raise


class PlannedSample(NamedTuple):
    """What writing one sample needs (and no more: planned shards are sent to the worker processes)."""

    key: str
    pid: int | None
    camid: int | None
    unknown: tuple[str, ...]
    meta_json: bytes
    folder: str
    names: list[str]  # the stored frames, in order
    sizes: list[int]  # their sizes when planned


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
    stat-ed relative to their folder (one name lookup each, as tar does)."""
    indices = stored_frame_indices(len(tracklet.frame_names), max_frames)
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
            stats = []
            for name in (tracklet.frame_names[i] for i in indices):
                try:
                    status = os.lstat(name, dir_fd=folder_fd)
                    if stat.S_ISLNK(status.st_mode):
                        check_link(os.path.join(folder, name), "frame")
                        status = os.stat(name, dir_fd=folder_fd)
                except OSError as error:
                    raise DataError(os.path.join(folder, name),
                                    f"frame cannot be read ({error.strerror or error})") from None
                if not stat.S_ISREG(status.st_mode):
                    raise DataError(os.path.join(folder, name), "frame is not a regular file")
                stats.append((status.st_size, status.st_mtime_ns))
        finally:
            os.close(folder_fd)
    except DataError as error:
        return error
    tracklet.stored = StoredFrames(indices, stats, links)
    return tracklet


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
    shards: list[PlannedShard] = []
    current = PlannedShard(split, 0)
    for tracklet in sorted(tracklets, key=lambda t: t.key):
        stored = tracklet.stored
        meta_json = _encode_json(sample_metadata(tracklet, split, layout, stored.indices))
        sizes = [size for size, _ in stored.stats]
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
        _update_fingerprint(current, meta_json, stored.stats)
    if current.samples:
        shards.append(current)
    for shard in shards:
        shard.fingerprint = hashlib.sha256(
            (shard.fingerprint + json.dumps(options.as_manifest(), sort_keys=True)).encode()
        ).hexdigest()
    return shards


def _update_fingerprint(shard: PlannedShard, meta_json: bytes, stats: list[tuple[int, int]]) -> None:
    digest = hashlib.sha256(shard.fingerprint.encode())
    digest.update(meta_json)
    digest.update(json.dumps(stats).encode())
    shard.fingerprint = digest.hexdigest()


# ---------------------------------------------------------------- writing one shard

def _read_frame(folder_fd: int, folder: str, name: str, planned_size: int, options: ShardOptions,
                check=check_jpeg_structure) -> bytes:
    """The frame's bytes (one open relative to its folder, one read, one close), structure-checked; re-encoded
    with `--resize`."""
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=folder_fd)
        try:
            data = os.read(fd, planned_size + 1)
        finally:
            os.close(fd)
    except OSError as error:
        raise DataError(os.path.join(folder, name), f"frame cannot be read ({error.strerror or error})") from None
    if len(data) != planned_size:
        raise DataError(os.path.join(folder, name), f"frame changed while sharding ({planned_size} bytes when "
                        f"planned, {len(data)}{'+' if len(data) > planned_size else ''} now); run again")
    check(data, os.path.join(folder, name))
    if options.resize is None:
        return data
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            height, width = options.resize
            resized = image.convert("RGB").resize((width, height), Image.BICUBIC)
    except OSError as error:
        raise DataError(os.path.join(folder, name), f"JPEG does not decode ({error})") from error
    out = io.BytesIO()
    resized.save(out, format="JPEG", quality=options.resize_quality)
    return out.getvalue()


_BLOCK = 512
_RECORD = 20 * _BLOCK  # tar's default blocking factor: archives end on a 10240-byte boundary
# ustar header of a regular file with every field fixed but name and size: mode 0644, uid/gid 0, mtime 0, type
# '0', no link name, magic "ustar\0" + version "00", empty owner names, no device numbers, no prefix.
_HEADER_BEFORE_SIZE = b"%07o\0" % 0o644 + b"%07o\0" % 0 + b"%07o\0" % 0
_HEADER_AFTER_SIZE = b"%011o\0" % 0
_HEADER_TAIL = b"0" + b"\0" * 100 + b"ustar\x0000" + b"\0" * 247
_CHECKSUM_CONSTANT = sum(_HEADER_BEFORE_SIZE) + sum(_HEADER_AFTER_SIZE) + 8 * 32 + sum(_HEADER_TAIL)
# the whole header in one formatting step: name (padded to 100 bytes), size, checksum
_HEADER = b"%s" + _HEADER_BEFORE_SIZE + b"%011o\0" + _HEADER_AFTER_SIZE + b"%06o\0 " + _HEADER_TAIL
_ZEROS = bytes(2 * _RECORD)
_PADDING = tuple(_ZEROS[: (_BLOCK - r) % _BLOCK] for r in range(_BLOCK))  # after a member of size ≡ r (mod 512)


def _member(name: str, size: int):
    """tarfile's TarInfo with the same fixed fields (the reference `ustar_header` is tested against)."""
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte USTAR header tarfile writes for `_member(name, size)`, built directly.

    tarfile's general header code costs more than reading the frame itself; shards have millions of
    members, so the fixed-field header is assembled here (a test checks it equals tarfile's byte for byte).
    """
    encoded = name.encode("ascii")
    if len(encoded) > 100 or size >= 8 ** 11:
        import tarfile

        return _member(name, size).tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    return _HEADER % (encoded.ljust(100, b"\0"), size, _CHECKSUM_CONSTANT + sum(encoded) + sum(b"%011o" % size))


def sample_bytes(sample: PlannedSample, options: ShardOptions, check=check_jpeg_structure) -> bytes:
    """The tar members of one sample, json first, then the frames in order, as one block of bytes.

    The loop below runs once per frame of the whole dataset, so it does the least it can: frames opened relative
    to their folder, read in one call, header walks shared by the tracklet (`check`), headers formatted in one
    step, paddings taken from a table."""
    width = max(4, len(str(len(sample.names) - 1)))
    names = [f"{sample.key}.{j:0{width}d}.jpg" for j in range(len(sample.names))]
    parts = [ustar_header(f"{sample.key}.json", len(sample.meta_json)), sample.meta_json,
             _PADDING[len(sample.meta_json) % _BLOCK]]
    append = parts.append
    try:
        folder_fd = os.open(sample.folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise DataError(sample.folder, f"folder cannot be read ({error.strerror or error})") from None
    try:
        for member, name, size in zip(names, sample.names, sample.sizes):
            if options.resize is None:
                try:
                    fd = os.open(name, os.O_RDONLY, dir_fd=folder_fd)
                    try:
                        data = os.read(fd, size + 1)
                    finally:
                        os.close(fd)
                except OSError:
                    data = None
                if data is None or len(data) != size:
                    data = _read_frame(folder_fd, sample.folder, name, size, options, check)  # raises, naming it
                check(data, name)
            else:
                data = _read_frame(folder_fd, sample.folder, name, size, options, check)
            append(ustar_header(member, len(data)))
            append(data)
            append(_PADDING[len(data) % _BLOCK])
    except DataError as error:  # `check` names the frame by its file name alone; give its path
        if error.item in sample.names:
            raise DataError(os.path.join(sample.folder, error.item), error.rule) from None
        raise
    finally:
        os.close(folder_fd)
    return b"".join(parts)


def write_shard(shard: PlannedShard, folder: Path, options: ShardOptions, root: str | None = None) -> dict:
    """Write one planned shard atomically; return its manifest entry (+ skip records under `skip`)."""
    skips = SkipLog(options.on_error, root=root)
    check = JpegStructureChecker()  # frames of a tracklet share their header: it is walked once
    written: list[PlannedSample] = []
    digest, size = hashlib.sha256(), 0
    path = folder / shard.name
    with _disk_full_named(path), atomic_output(path, sync=False) as raw:  # made durable by `_sync_file`
        for sample in shard.samples:
            try:
                data = sample_bytes(sample, options, check)
            except DataError as error:
                skips.handle(error, shard.split)
                continue
            raw.write(data)
            digest.update(data)
            size += len(data)
            written.append(sample)
        end = _ZEROS[: 2 * _BLOCK + (-(size + 2 * _BLOCK)) % _RECORD]  # two zero blocks, then a full record
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


def _sync_file(path: Path) -> None:
    """fsync a finished file. Shards are renamed into place unsynced (a crash may leave a damaged one, which
    --resume's sha256 check rewrites); the run syncs them here, in threads of the parent, while the workers go on,
    and only then writes the manifests that say `complete: true` (synced the same way, together)."""
    with _disk_full_named(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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


# ---------------------------------------------------------------- the output folder

def check_output_location(source: Path, out: Path) -> None:
    """Refuse an OUT that is the source dataset, contains it or lies inside it (links resolved)."""
    real_source, real_out = Path(source).resolve(), Path(out).resolve()
    if real_out == real_source:
        raise UnsafeOutputError(f"OUT {out} is the source dataset {source}: choose an output folder outside it")
    if real_out in real_source.parents:
        raise UnsafeOutputError(f"OUT {out} contains the source dataset {source}: choose an output folder that "
                                "does not hold the source")
    if real_source in real_out.parents:
        raise UnsafeOutputError(f"OUT {out} lies inside the source dataset {source}: choose an output folder "
                                "outside it")


def is_shard_output(folder: Path) -> bool:
    """A folder xfd-shard wrote: it has the marker of a run (written first) or the dataset index (written last)."""
    return (folder / OUTPUT_MARKER).is_file() or (folder / DATASET_INDEX_NAME).is_file()


def _remove_previous_output(out: Path) -> None:
    """Delete what xfd-shard writes (shards, manifests, temporaries, dataset.json, marker) under `out` and the
    folders this leaves empty; anything else is left where it is. Links are not followed."""
    for folder, subfolders, files in os.walk(out, topdown=False):
        folder = Path(folder)
        for name in files:
            if SHARD_NAME.match(name) or name == MANIFEST_NAME:
                (folder / name).unlink()
        remove_temporaries(folder)
        if folder != out and not any(folder.iterdir()):
            folder.rmdir()
    for name in (DATASET_INDEX_NAME, OUTPUT_MARKER):
        (out / name).unlink(missing_ok=True)


def _prepare_output(out: Path, overwrite: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UnsafeOutputError(f"OUT {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not (overwrite or resume):
            raise FileExistsError(f"{out} is not empty: pass --resume to continue a run or --overwrite to replace it")
        if not is_shard_output(out):
            raise UnsafeOutputError(
                f"{out} is not empty and is not an xfd-shard output (it has no {DATASET_INDEX_NAME} and no "
                f"{OUTPUT_MARKER} marker): refusing to {'replace' if overwrite else 'resume into'} it; choose "
                "an empty or new output folder")
        if overwrite:
            _remove_previous_output(out)
    with _disk_full_named(out / OUTPUT_MARKER):
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / OUTPUT_MARKER, {"tool": "xfd-shard", "format_version": FORMAT_VERSION}, sync=False)
    remove_temporaries(out)


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
        plans = {split: plan_split(split, tracklets, layout, options) for split, tracklets in splits.items()}
        for split in splits:
            if not plans[split]:
                raise DataError(f"{source} [{split}]", "split is empty: no tracklet left to shard")
        _prepare_output(out, overwrite, resume)
        links = {split: [link for t in tracklets for link in t.stored.links] for split, tracklets in splits.items()}
        return _write_splits(pool, source, out, layout, options, plans, links, num_classes, skips, resume, progress)


def _write_splits(pool, source: Path, out: Path, layout: str, options: ShardOptions, plans: dict, links: dict,
                  num_classes: int, skips: SkipLog, resume: bool, progress: bool) -> ShardRunResult:
    entries: dict[str, list[dict]] = {}
    tasks = []
    reused = 0
    for split, planned in plans.items():
        folder = split_folder(out, split)
        with _disk_full_named(folder):
            folder.mkdir(parents=True, exist_ok=True)
        keep = _reusable_entries(folder, planned) if resume else {}
        _remove_stale(folder, planned)
        entries[split] = list(keep.values())
        reused += len(keep)
        tasks += [(shard, folder, options, str(source)) for shard in planned if shard.name not in keep]
    tasks.sort(key=lambda task: -task[0].estimated_bytes)  # biggest first: workers finish together

    def manifest_for(split: str, complete: bool) -> dict:
        skipped = skips.for_split(split) + [record for e in entries[split] for record in e["skipped"]]
        return build_manifest(split, layout, options, entries[split], skipped,
                              num_classes if split == "train" else None, complete, links[split])

    def write_interim_manifest(split: str, manifest: dict) -> None:
        path = split_folder(out, split) / MANIFEST_NAME
        with _disk_full_named(path):  # a hint for --resume, which re-checks it: compact and unsynced
            write_bytes_atomic(path, json.dumps(manifest, sort_keys=True).encode(), sync=False)

    listed = dict.fromkeys(plans, 0)

    def note_progress(split: str) -> None:
        """Rewrite the split's interim manifest after each shard while there are few, then after every ~6 %
        more: a kill loses at most that much work, and a run of thousands of shards is not quadratic in them."""
        if len(entries[split]) - listed[split] >= max(1, len(entries[split]) // 16):
            listed[split] = len(entries[split])
            write_interim_manifest(split, manifest_for(split, complete=False))

    total_samples = sum(len(shard.samples) for shard, _, _, _ in tasks)
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="xfd-shard-sync") as syncing, \
            tqdm(total=total_samples, unit="tracklet", desc="xfd-shard", disable=not progress) as bar:
        synced = []
        for split, result in pool.map(_write_shard_task, tasks, ordered=False):
            synced.append(syncing.submit(_sync_file, split_folder(out, split) / result["name"]))
            entries[split].append(result)
            note_progress(split)
            bar.update(result["samples"] + len(result["skipped"]))
        for future in synced:
            future.result()  # every shard on disk before any manifest says complete

        manifests = {}
        for split in plans:  # written first, then synced together (one journal commit rather than one each)
            manifests[split] = manifest_for(split, complete=True)
            path = split_folder(out, split) / MANIFEST_NAME
            with _disk_full_named(path):
                write_json_atomic(path, manifests[split], sync=False)
        for future in [syncing.submit(_sync_file, split_folder(out, split) / MANIFEST_NAME) for split in plans]:
            future.result()
    all_skips = SkipLog(options.on_error, skips.skipped + [
        record for split in plans for entry in entries[split] for record in entry["skipped"]
    ])
    with _disk_full_named(out / DATASET_INDEX_NAME):
        write_json_atomic(out / DATASET_INDEX_NAME, {
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "layout": layout,
            "num_classes": num_classes,
            "splits": {split: {"path": split, "labelled": manifests[split]["labelled"], **manifests[split]["totals"]}
                       for split in sorted(plans)},
            "skipped": all_skips.as_manifest(),
        })
    return ShardRunResult(layout, manifests, written=len(tasks), reused=reused)
