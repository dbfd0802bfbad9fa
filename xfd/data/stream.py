"""Reading shard sets in order: a WebDataset stream of tracklets, each with L evenly spaced encoded JPEG frames (or,
for dense evaluation, every frame in clips of L).

One ordered pass: shards split by global rank, then by DataLoader worker, so that every sample is read exactly once
across all ranks and workers. This is how evaluation, validation and stage 1's feature cache read a split;
training reads tracklets by random access instead (`ShardIndex` + `PKSampler` + `TrainLoader`). Frames stay
encoded: decoding belongs to the DALI pipeline downstream.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds

from .errors import DataError
from .sampling import clip_indices, evenly_spaced_indices
from .shard import FORMAT_VERSION, MANIFEST_NAME

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_FRAME_EXTENSION = re.compile(r"^\d{4,}\.jpg$")


@dataclass(frozen=True)
class StreamOptions:
    """How to read one shard set."""

    num_frames: int = 16
    rank: int = 0
    world_size: int = 1
    clips: bool = False  # every frame, in consecutive clips of num_frames (sample["clips"])

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world of size {self.world_size}")


def shard_set_urls(folder: str | Path) -> list[str]:
    """Shard paths of a complete shard set, in manifest order."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise DataError(str(folder), f"not a shard set (no {MANIFEST_NAME}); run xfd-shard first")
    manifest = json.loads(manifest_path.read_text())
    if not manifest.get("complete"):
        raise DataError(str(manifest_path), "shard set is incomplete (an interrupted run): use xfd-shard --resume")
    if not manifest["shards"]:
        raise DataError(str(manifest_path), "shard set is empty")
    return [str(folder / entry["name"]) for entry in manifest["shards"]]


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
    meta = json.loads(sample["json"])
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(where, f"shard format version {meta.get('format_version')!r}; this xfd reads {FORMAT_VERSION}")
    if not extensions or len(extensions) != len(meta.get("frame_names", [])):
        raise DataError(where, f"{len(extensions)} frames stored but the metadata lists {len(meta.get('frame_names', []))}")
    return key, meta, [sample[ext] for ext in extensions]


def _select_frames(options: StreamOptions):
    """Pipeline stage: raw samples → tracklets with `num_frames` encoded frames each (or every frame in clips)."""

    def stage(samples):
        for sample in samples:
            key, meta, frames = parse_tracklet_sample(sample)
            if options.clips:
                clips = clip_indices(len(frames), options.num_frames)
                yield {"key": key, "meta": meta, "url": sample["__url__"],
                       "clips": [[frames[i] for i in clip] for clip in clips],  # ceil(n / L) x L encoded JPEGs
                       "clip_indices": clips}
                continue
            indices = evenly_spaced_indices(len(frames), options.num_frames)
            yield {
                "key": key,
                "meta": meta,
                "frames": [frames[i] for i in indices],  # L encoded JPEGs
                "frame_indices": indices,
                "url": sample["__url__"],
            }

    return stage


def tracklet_stream(folder: str | Path, options: StreamOptions = StreamOptions()) -> wds.DataPipeline:
    """An IterableDataset of tracklets from the shard set in `folder` (use with a DataLoader, batch_size=None)."""
    return wds.DataPipeline(
        wds.SimpleShardList(shard_set_urls(folder)),
        functools.partial(_split_by_rank, rank=options.rank, world_size=options.world_size),
        wds.split_by_worker,
        wds.tarfile_to_samples(),
        _select_frames(options),
    )
