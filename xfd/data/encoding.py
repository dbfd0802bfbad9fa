"""Tracklet metadata → model tensors, in one place: the platform codes, the bin columns and the one `collate` that
builds a batch for training (`TrainLoader`) and for feature extraction alike.

A shard sample's JSON (data_shards/README.md) says `platform: "ground" | "aerial"`, `bins: {altitude, distance,
angle}`, `camid`, `pid` (null on an unlabelled split) and `label` (training splits: 0..C-1). The model takes
`platform` (B,) long (0 ground, 1 aerial: the row of the platform prompts) and `meta` (B, 3) long, the bins in
`BIN_FIELDS` order with the last index of each column meaning "no capture metadata". Every value is checked here,
and a bad one is a `DataError` naming the shard and the tracklet, before any tensor reaches the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import DataError
from .metadata import ANGLE_BINS, ALTITUDE_BINS, DISTANCE_BINS

PLATFORMS = ("ground", "aerial")  # a platform's code is its position here
PLATFORM_CODES = {name: code for code, name in enumerate(PLATFORMS)}
GROUND, AERIAL = PLATFORM_CODES["ground"], PLATFORM_CODES["aerial"]
BIN_FIELDS = ("altitude", "distance", "angle")  # column order of the (B, 3) meta tensor
BIN_LIMITS = (ALTITUDE_BINS, DISTANCE_BINS, ANGLE_BINS)  # largest valid bin per column: "no capture metadata"
UNKNOWN = -1  # an integer code the data does not give (a camid on an unlabelled split); float columns use NaN


@dataclass(frozen=True)
class TrackletCodes:
    """What the model and the metrics need of one tracklet's metadata."""

    platform: int
    bins: tuple[int, int, int]  # in BIN_FIELDS order
    camid: int  # UNKNOWN where an unlabelled split's frame names give none
    pid: int | None  # None: an unlabelled split
    label: int | None  # training label 0..C-1; None outside training splits


def _integer(value, what: str, where: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(where, f"{what} must be an integer{' or null' if allow_none else ''}, got {value!r}")
    return value


def check_bins(where: str, meta: dict) -> tuple[int, int, int]:
    """The metadata-conditioning bins of a sample, in BIN_FIELDS order: integers 0..limit (the last one: "no capture
    metadata"); anything else is a DataError naming `where`. Every reader (stream, shard index, --verify) and the
    collate apply this one rule."""
    bins = meta.get("bins")
    if not isinstance(bins, dict):
        raise DataError(where, f"metadata 'bins' must be an object giving {list(BIN_FIELDS)}, found {bins!r}")
    values = []
    for name, limit in zip(BIN_FIELDS, BIN_LIMITS):
        value = bins.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise DataError(where, f"bins.{name} = {value!r} is outside 0..{limit} (data_shards/README.md, Bins)")
        values.append(value)
    return tuple(values)


def encode_tracklet(meta: dict, where: str, labelled: bool | None = None) -> TrackletCodes:
    """The codes of one tracklet's metadata; `where` ("shard [key]") names it in errors.

    `labelled` says what the split's manifest says: True, the pid must be an integer; False (an unlabelled split),
    the pid must be null and a null camid reads as UNKNOWN; None accepts either pid."""
    if meta.get("platform") not in PLATFORM_CODES:
        raise DataError(where, f"unknown platform {meta.get('platform')!r}; expected one of {list(PLATFORMS)}")
    values = check_bins(where, meta)
    if labelled is False and meta.get("pid") is not None:
        raise DataError(where, f"sample of an unlabelled split carries pid {meta['pid']!r} / label "
                               f"{meta.get('label')!r} (must be null)")
    label = _integer(meta.get("label"), "label", where, allow_none=True)
    if label is not None and label < 0:
        raise DataError(where, f"label must be >= 0, got {label}")
    return TrackletCodes(platform=PLATFORM_CODES[meta["platform"]], bins=values,
                         camid=_or_unknown(_integer(meta.get("camid"), "camid", where, allow_none=labelled is False)),
                         pid=_integer(meta.get("pid"), "pid", where, allow_none=labelled is not True), label=label)


def _or_unknown(value: int | None) -> int:
    return UNKNOWN if value is None else value


@dataclass
class Batch:
    """B tracklets ready for the model: L decoded frames each, and their metadata as tensors."""

    frames: torch.Tensor  # (B, L, 3, H, W) float32, CLIP-normalised
    platform: torch.Tensor  # (B,) long, 0 ground / 1 aerial
    meta: torch.Tensor  # (B, 3) long, bins in BIN_FIELDS order
    camids: torch.Tensor  # (B,) long
    labels: torch.Tensor | None  # (B,) long training labels; None for a batch built without them
    keys: list[str]
    pids: list[int | None]

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.frames, self.platform, self.meta, self.camids, self.labels) if t is not None]

    def to(self, device: torch.device) -> "Batch":
        """The batch on `device`; to a GPU from pinned memory and asynchronously on the current stream (the caller
        synchronises before another stream reads it)."""
        device = torch.device(device)
        cuda = device.type == "cuda"

        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            if tensor is None or tensor.device == device:
                return tensor
            if cuda and tensor.device.type == "cpu":
                tensor = tensor.pin_memory()
            return tensor.to(device, non_blocking=cuda)

        return Batch(move(self.frames), move(self.platform), move(self.meta), move(self.camids), move(self.labels),
                     self.keys, self.pids)

    def record_stream(self, stream: "torch.cuda.Stream") -> None:
        """Tell the CUDA caching allocator that `stream` uses these tensors (they were made on another stream: without
        this, their memory could be handed out again while `stream` still reads it)."""
        for tensor in self.tensors():
            if tensor.is_cuda:
                tensor.record_stream(stream)


def collate(frames: torch.Tensor, keys: Sequence[str], metas: Sequence[dict], sources: Sequence[str],
            with_labels: bool, labelled: bool | None = None) -> Batch:
    """One batch from decoded frames (B, L, 3, H, W) and the B tracklets' keys, metadata and shard names.

    `with_labels` (training) requires every tracklet's training label; extraction leaves `labels` None.
    `labelled` as in `encode_tracklet`. Metadata
    tensors are made on the CPU: `Batch.to` moves the whole batch."""
    if not len(keys) == len(metas) == len(sources) == frames.shape[0]:
        raise ValueError(f"collate: {frames.shape[0]} clips of frames for {len(keys)} keys, {len(metas)} metadata "
                         f"and {len(sources)} sources")
    codes = [encode_tracklet(meta, f"{source} [{key}]", labelled) for key, meta, source in zip(keys, metas, sources)]
    labels = None
    if with_labels:
        missing = [f"{source} [{key}]" for key, source, c in zip(keys, sources, codes) if c.label is None]
        if missing:
            raise DataError(missing[0], "no training label (label is null): not a training split")
        labels = torch.tensor([c.label for c in codes], dtype=torch.long)  # (B,)
    return Batch(
        frames=frames,
        platform=torch.tensor([c.platform for c in codes], dtype=torch.long),  # (B,)
        meta=torch.tensor([c.bins for c in codes], dtype=torch.long).view(len(codes), len(BIN_FIELDS)),  # (B, 3)
        camids=torch.tensor([c.camid for c in codes], dtype=torch.long),  # (B,)
        labels=labels,
        keys=list(keys),
        pids=[c.pid for c in codes],
    )
