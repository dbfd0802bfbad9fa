"""Reading shard sets: an ordered WebDataset stream of tracklets, each with L evenly spaced encoded JPEG frames
(or, for dense evaluation, every frame in clips of L). Evaluation and feature extraction read this way; training
reads through `ShardIndex` (random access for PK batches) instead.

One ordered pass: shards split by global rank, then by DataLoader worker, so that every sample is read exactly
once across all ranks and workers. Every shard is checked against its manifest entry as it is read: a truncated
or replaced shard, a sample whose pid disagrees with its key or the manifest, or bins out of range is a
DataError naming the shard (and key). Frames stay encoded: decoding belongs to the DALI pipeline downstream.
"""

from __future__ import annotations

import functools
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds

from .encoding import check_bins
from .errors import DataError
from .manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    check_sample_identity,
    is_labelled,
    read_manifest,
    shard_path,
)
from .sampling import clip_indices, evenly_spaced_indices

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_FRAME_EXTENSION = re.compile(r"^\d{4,}\.jpg$")


@dataclass(frozen=True)
class StreamOptions:
    """How to read one shard set: L frames a tracklet, this rank's share, evenly spaced frames or every frame."""

    num_frames: int = 16
    rank: int = 0
    world_size: int = 1
    clips: bool = False  # every frame, in consecutive clips of num_frames (sample["clips"])

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world of size {self.world_size}")


def complete_manifest(folder: str | Path) -> dict:
    """The manifest of a complete, non-empty shard set of a version this reader knows (errors name the file)."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise DataError(str(folder), f"not a shard set (no {MANIFEST_NAME}); run xfd-shard first")
    manifest = read_manifest(folder)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(str(manifest_path),
                        f"shard format version {manifest.get('format_version')!r}; this xfd reads {FORMAT_VERSION}")
    if not manifest.get("complete"):
        raise DataError(str(manifest_path), "shard set is incomplete (an interrupted run): use xfd-shard --resume")
    if not manifest["shards"]:
        raise DataError(str(manifest_path), "shard set is empty")
    for entry in manifest["shards"]:
        shard_path(folder, entry)
    return manifest


def _split_by_rank(urls, rank: int, world_size: int):
    """Shard i goes to rank i mod world_size (the global rank, so nothing assumes a single node)."""
    for index, url in enumerate(urls):
        if index % world_size == rank:
            yield url


def parse_tracklet_sample(sample: dict) -> tuple[str, dict, list[bytes]]:
    """(key, metadata, stored frames in order) from a raw WebDataset sample; errors name shard and key."""
    key, url = sample.get("__key__", ""), sample.get("__url__", "?")
    where = f"{url} [{key}]"
    if not _SAFE_KEY.match(key):
        raise DataError(where, "unsafe or malformed sample key (absolute path, '..' or folder in member name)")
    if "json" not in sample:
        raise DataError(where, "sample has no .json metadata member")
    extensions = sorted(ext for ext in sample if not ext.startswith("__") and ext != "json")
    if any(not _FRAME_EXTENSION.match(ext) for ext in extensions):
        raise DataError(where, f"unexpected members {[e for e in extensions if not _FRAME_EXTENSION.match(e)]}")
    try:
        meta = json.loads(sample["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(where, f"metadata is not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise DataError(where, "metadata is not a JSON object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(where, f"shard format version {meta.get('format_version')!r}; this xfd reads {FORMAT_VERSION}")
    if not extensions or len(extensions) != len(meta.get("frame_names", [])):
        raise DataError(where, f"{len(extensions)} frames stored but the metadata lists {len(meta.get('frame_names', []))}")
    check_bins(where, meta)
    return key, meta, [sample[ext] for ext in extensions]


def _check_size(url: str, entry: dict) -> None:
    """A shard must be on disk with the size its manifest entry records (checked before reading it, so a truncated
    or replaced shard is named at once rather than part-way through)."""
    try:
        size = Path(url).stat().st_size
    except FileNotFoundError:
        raise DataError(url, "shard listed in the manifest is missing") from None
    if "bytes" in entry and size != int(entry["bytes"]):
        raise DataError(url, f"shard has {size} bytes, its manifest entry {entry['bytes']} (truncated or replaced "
                             "shard; xfd-shard --verify checks every shard)")


def _read_shards(folder: Path, manifest: dict):
    """Pipeline stage: shard paths → (key, metadata, frames, url) of every sample, each shard checked against its
    manifest entry: readable to the end, the same keys in the same order, pids agreeing with keys and manifest."""
    entries = {str(shard_path(folder, entry)): entry for entry in manifest["shards"]}
    labelled = is_labelled(manifest)

    def stage(shards):
        for shard in shards:  # {"url": path}, as wds.SimpleShardList gives them
            url = shard["url"]
            entry = entries[url]
            expected = dict(zip(entry["keys"], entry["pids"]))
            _check_size(url, entry)
            keys = []
            try:
                for sample in wds.tarfile_to_samples()(iter([shard])):
                    key, meta, frames = parse_tracklet_sample(sample)
                    check_sample_identity(f"{url} [{key}]", key, meta, expected.get(key), labelled)
                    keys.append(key)
                    yield key, meta, frames, url
            except (tarfile.TarError, EOFError, OSError) as error:
                raise DataError(url, f"unreadable or truncated tar ({error.args[0] if error.args else error}); "
                                     f"the manifest lists {entry['samples']} samples") from None
            if keys != entry["keys"]:
                raise DataError(url, f"{len(keys)} samples read where the manifest lists {entry['samples']} "
                                     f"(truncated or replaced shard; xfd-shard --verify checks every shard)")

    return stage


def _select_frames(options: StreamOptions):
    """Pipeline stage: parsed samples → tracklets with `num_frames` encoded frames each (or every frame, in clips)."""

    def stage(samples):
        for key, meta, frames, url in samples:
            if options.clips:
                clips = clip_indices(len(frames), options.num_frames)
                yield {"key": key, "meta": meta, "url": url,
                       "clips": [[frames[i] for i in clip] for clip in clips],  # ceil(n / L) x L encoded JPEGs
                       "clip_indices": clips}
                continue
            indices = evenly_spaced_indices(len(frames), options.num_frames)
            yield {
                "key": key,
                "meta": meta,
                "frames": [frames[i] for i in indices],  # L encoded JPEGs
                "frame_indices": indices,
                "url": url,
            }

    return stage


def tracklet_stream(folder: str | Path, options: StreamOptions = StreamOptions()) -> wds.DataPipeline:
    """An IterableDataset of tracklets from the shard set in `folder` (use with a DataLoader, batch_size=None)."""
    folder = Path(folder)
    manifest = complete_manifest(folder)
    urls = [str(shard_path(folder, entry)) for entry in manifest["shards"]]
    return wds.DataPipeline(
        wds.SimpleShardList(urls),
        functools.partial(_split_by_rank, rank=options.rank, world_size=options.world_size),
        wds.split_by_worker,
        _read_shards(folder, manifest),
        _select_frames(options),
    )
