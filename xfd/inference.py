"""Inference features of one shard set: stream tracklets, decode them with the eval FramePipeline, run the model.

Below both training (stage 1 caches image features, stage 2 validates) and evaluation, so neither imports the
other. Each rank reads only its own shards (`tracklet_stream` in eval mode splits shards by global rank) and returns
a `FeatureSet` of its tracklets; `gather_feature_sets` joins the parts of all ranks and orders them by key, so the
result does not depend on the number of ranks (1 rank ≡ N ranks). Features are the model's L2-normalised
retrieval features (`model.extract`, optional flip TTA) of L evenly spaced frames, or the re-normalised mean over
clips of L covering every frame, ready for `xfd.eval.score`.

Each row also carries the tracklet's metadata columns (`TRACKLET_COLUMNS`: name, session, capture point and its
bins, identity folder), which evaluation uses for the submission's names and order and for per-condition analysis.
A split whose manifest says `"labelled": false` (anonymised query/gallery tracklets: every sample's pid is null)
gives a FeatureSet without pids; anywhere else a pid must be an integer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.utils.data
from tqdm import tqdm

from xfd.data.encoding import BIN_FIELDS, UNKNOWN, collate, encode_tracklet
from xfd.data.errors import DataError
from xfd.data.jpeg import check_jpeg_structure
from xfd.data.pipeline import FramePipeline
from xfd.data.manifest import is_labelled, read_manifest
from xfd.data.stream import StreamOptions, tracklet_stream
from xfd.distributed import gather_objects

# Per-tracklet metadata columns (name -> numpy dtype kind): the tracklet folder name, the identity folder it sits
# in (a number, or UNKNOWN), the DetReIDX session, the capture point (m, m, degrees; NaN for ground) and its bins.
TRACKLET_COLUMNS = {"name": "U", "folder_pid": "i", "session": "i", "height": "f", "distance": "f", "angle": "f",
                    "altitude_bin": "i", "distance_bin": "i", "angle_bin": "i"}


@dataclass(frozen=True)
class FeatureSet:
    """Features and labels of a set of tracklets, one row per tracklet (key order after gathering).

    `pids` is None for an unlabelled split (identities unknown); `meta` holds TRACKLET_COLUMNS-style columns
    (any subset), each (N,)."""

    keys: list[str]
    features: np.ndarray  # (N, D) float32, L2-normalised
    pids: np.ndarray | None  # (N,) int64, None: unlabelled
    camids: np.ndarray  # (N,) int64 (UNKNOWN where the frame names give none)
    platform: np.ndarray  # (N,) int8: 0 ground, 1 aerial
    meta: dict[str, np.ndarray] = field(default_factory=dict)  # column -> (N,)

    def __post_init__(self):
        n = len(self.keys)
        if np.ndim(self.features) != 2 or np.shape(self.features)[0] != n:
            raise ValueError(f"features must be ({n}, D) for {n} keys, got shape {np.shape(self.features)}")
        columns = {"camids": self.camids, "platform": self.platform, **{f"meta[{k}]": v for k, v in self.meta.items()}}
        if self.pids is not None:
            columns["pids"] = self.pids
        for name, value in columns.items():
            if np.shape(value) != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {np.shape(value)}")

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def labelled(self) -> bool:
        return self.pids is not None

    @property
    def names(self) -> list[str]:
        """Tracklet folder names (the submission's names), or the keys where the metadata gave none."""
        return self.meta["name"].tolist() if "name" in self.meta else list(self.keys)

    def select(self, rows) -> "FeatureSet":
        """The rows given by a boolean mask or an index array, in that order."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=np.int64)
        return FeatureSet([self.keys[i] for i in rows], self.features[rows],
                          None if self.pids is None else self.pids[rows], self.camids[rows], self.platform[rows],
                          {name: column[rows] for name, column in self.meta.items()})

    @staticmethod
    def concatenate(parts: Iterable["FeatureSet"]) -> "FeatureSet":
        """All rows of `parts`, ordered by key; a key present twice is an error (a shard read by two ranks)."""
        parts = list(parts)
        if not parts:
            raise ValueError("no feature sets to concatenate")
        keys = [key for part in parts for key in part.keys]
        dims = {part.features.shape[1] for part in parts if len(part)}
        if len(dims) > 1:
            raise ValueError(f"feature sets have different feature dimensions {sorted(dims)}")
        if len({part.labelled for part in parts}) > 1:
            raise ValueError("cannot join labelled and unlabelled feature sets")
        if len({tuple(sorted(part.meta)) for part in parts}) > 1:
            raise ValueError(f"feature sets have different metadata columns {[sorted(p.meta) for p in parts]}")
        dim = dims.pop() if dims else parts[0].features.shape[1]
        joined = FeatureSet(
            keys,
            np.concatenate([p.features.reshape(len(p), dim) for p in parts]).astype(np.float32, copy=False),
            np.concatenate([p.pids for p in parts]).astype(np.int64, copy=False) if parts[0].labelled else None,
            np.concatenate([p.camids for p in parts]).astype(np.int64, copy=False),
            np.concatenate([p.platform for p in parts]).astype(np.int8, copy=False),
            {name: np.concatenate([p.meta[name] for p in parts]) for name in parts[0].meta},
        )
        ordered = joined.select(np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64))
        twice = sorted({a for a, b in zip(ordered.keys, ordered.keys[1:]) if a == b})
        if twice:
            raise ValueError(f"{len(twice)} tracklet key(s) appear in more than one part, e.g. {twice[:5]}")
        return ordered


def empty_feature_set(dim: int, labelled: bool = True) -> FeatureSet:
    """A FeatureSet of no tracklets (a split whose manifest lists none), with every metadata column."""
    meta = {name: np.zeros(0, dtype=np.str_ if kind == "U" else np.float64 if kind == "f" else np.int64)
            for name, kind in TRACKLET_COLUMNS.items()}
    return FeatureSet([], np.zeros((0, dim), np.float32), np.zeros(0, np.int64) if labelled else None,
                      np.zeros(0, np.int64), np.zeros(0, np.int8), meta)


def _rank_entries(manifest: dict, rank: int, world_size: int) -> list[dict]:
    """This rank's manifest entries: shards i with i mod world_size == rank, as the stream splits them (the stream
    checks each against its entry as it reads it: a truncated, missing or replaced shard is a DataError naming it)."""
    return [entry for i, entry in enumerate(manifest["shards"]) if i % world_size == rank]


def _batches(tracklets: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch = []
    for tracklet in tracklets:
        batch.append(tracklet)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class TrackletRecord:
    """What extraction keeps of one tracklet's metadata."""

    pid: int | None
    camid: int
    platform: int
    bins: tuple[int, int, int]  # the model's conditioning bins, BIN_FIELDS order
    meta: dict  # TRACKLET_COLUMNS values


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _folder_pid(source) -> int:
    """The number of the identity folder holding the tracklet folder (`.../<PID>/<tracklet>`), else UNKNOWN."""
    parts = PurePosixPath(str(source)).parts if source else ()
    return int(parts[-2]) if len(parts) >= 2 and parts[-2].isdigit() else UNKNOWN


def _record(tracklet: dict, labelled: bool) -> TrackletRecord:
    return tracklet_record(tracklet["meta"], tracklet["key"], f"{tracklet.get('url', '?')} [{tracklet['key']}]",
                           labelled)


def tracklet_record(meta: dict, key: str, where: str, labelled: bool) -> TrackletRecord:
    """The labels and metadata of one tracklet from its sample JSON (codes from `xfd.data.encoding`, the one
    metadata encoding); errors name `where` (shard and key)."""
    codes = encode_tracklet(meta, where, labelled)
    session = meta.get("session")
    columns = {"name": str(meta.get("tracklet") or key), "folder_pid": _folder_pid(meta.get("source")),
               "session": session if isinstance(session, int) and not isinstance(session, bool) else UNKNOWN,
               "height": _number(meta.get("height")), "distance": _number(meta.get("distance")),
               "angle": _number(meta.get("angle")),
               **{f"{name}_bin": value for name, value in zip(BIN_FIELDS, codes.bins)}}
    return TrackletRecord(codes.pid, codes.camid, codes.platform, codes.bins, columns)


def _pipeline_device(device: torch.device) -> int | None:
    """DALI's device_id: None decodes on the CPU; a CUDA device decodes there ("mixed")."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def _clips(tracklets: Iterable[dict]) -> Iterator[tuple[int, dict, list[bytes], list[int]]]:
    """(tracklet ordinal, tracklet, L encoded frames, their frame indices) for every clip, tracklet by tracklet: one
    clip a tracklet for evenly spaced frames, ceil(n / L) for dense clips."""
    for ordinal, tracklet in enumerate(tracklets):
        if "clips" in tracklet:
            for frames, indices in zip(tracklet["clips"], tracklet["clip_indices"]):
                yield ordinal, tracklet, frames, indices
        else:
            yield ordinal, tracklet, tracklet["frames"], tracklet["frame_indices"]


class _TrackletMeans:
    """Clip features in, tracklet features out: the mean of a tracklet's clips, L2-normalised again (a single
    clip's feature passes unchanged). Clips arrive in tracklet order, so a tracklet is complete when the next
    one starts."""

    def __init__(self):
        self.done: list[tuple[dict, np.ndarray]] = []  # (tracklet, feature (D,)) in stream order
        self._ordinal, self._tracklet, self._clips = -1, None, []

    def add(self, ordinal: int, tracklet: dict, feature: np.ndarray) -> None:
        if ordinal != self._ordinal:
            self._close()
            self._ordinal, self._tracklet = ordinal, tracklet
        self._clips.append(feature)

    def finish(self) -> None:
        self._close()

    def _close(self) -> None:
        if not self._clips:
            return
        if len(self._clips) == 1:
            feature = self._clips[0]
        else:
            mean = np.mean(np.stack(self._clips).astype(np.float64), axis=0)  # (D,)
            feature = (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)
        self.done.append((self._tracklet, feature))
        self._clips = []


def extract_split(model, folder: str | Path, *, num_frames: int, batch_size: int, image_size: tuple[int, int],
                  device: str | torch.device = "cpu", flip_tta: bool = True, rank: int = 0, world_size: int = 1,
                  num_threads: int = 2, loader_workers: int = 0, progress: bool = True,
                  clips: bool = False) -> FeatureSet:
    """This rank's features of the shard set in `folder` (its shards only; join ranks with gather_feature_sets).

    Each tracklet is L evenly spaced frames, or with `clips` every frame in consecutive clips of L (the last
    padded with its last frame) whose features are averaged and L2-normalised again. Clips go through the eval
    FramePipeline B at a time; the pipeline's batch size is fixed, so the last partial batch is padded with copies
    of its last clip and the padded outputs are dropped (in eval mode a clip's feature does not depend on its
    batch neighbours, so neither does a tracklet's). The model runs in eval mode without gradients and gets its
    previous train/eval mode back afterwards. A shard that is missing, truncated or unreadable is a DataError
    naming it (never a shorter FeatureSet).
    """
    folder = Path(folder)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    manifest = read_manifest(folder)
    labelled = is_labelled(manifest)
    expected = sum(int(entry["samples"]) for entry in _rank_entries(manifest, rank, world_size))
    if expected == 0 and world_size == 1:
        raise DataError(str(folder), "shard set is empty: the split holds no tracklets, nothing to extract")
    stream = tracklet_stream(folder, StreamOptions(num_frames=num_frames, rank=rank, world_size=world_size,
                                                   clips=clips))
    device = torch.device(device)
    height, width = image_size
    pipe = FramePipeline(tracklets=batch_size, frames=num_frames, image_size=(height, width), augment=None,
                         device_id=_pipeline_device(device), num_threads=num_threads)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=loader_workers)

    means = _TrackletMeans()
    dtype = next(iter(model.parameters()), torch.empty(0)).dtype  # bf16 under a bf16 DeepSpeed engine
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=expected, desc=f"features {folder.name}", unit="tracklet",
                                   disable=not progress or rank != 0, leave=False) as bar:
            for batch in _batches(_clips(loader), batch_size):
                n = len(batch)
                padded = batch + [batch[-1]] * (batch_size - n)
                for _, t, frames, indices in batch:  # a damaged frame is named here, not as DALI's "sample #n"
                    for i, data in zip(indices, frames):
                        check_jpeg_structure(data, f"{t['url']} [{t['key']}] frame {i}")
                frames, _ = pipe.run([clip[2] for clip in padded])  # (B, L, 3, H, W)
                clip_batch = collate(frames, [t["key"] for _, t, _, _ in padded], [t["meta"] for _, t, _, _ in padded],
                                     [t["url"] for _, t, _, _ in padded], with_labels=False,
                                     labelled=labelled).to(device)
                out = model.extract(clip_batch.frames.to(dtype), clip_batch.platform, clip_batch.meta,
                                    flip_tta=flip_tta)  # (B, D)
                finished = len(means.done)
                for (ordinal, t, _, _), feature in zip(batch, out[:n].float().cpu().numpy()):
                    means.add(ordinal, t, feature)
                bar.update(len(means.done) - finished)
            means.finish()
            bar.update(len(means.done) - bar.n)
    finally:
        model.train(was_training)

    keys = [t["key"] for t, _ in means.done]
    if len(keys) != expected:
        raise DataError(str(folder), f"rank {rank} of {world_size} read {len(keys)} tracklets, its shards' "
                                     f"manifest entries list {expected} (a truncated or replaced shard?)")
    records = [_record(t, labelled) for t, _ in means.done]
    dim = means.done[0][1].shape[0] if means.done else int(getattr(model, "feature_dim", 0))
    columns = empty_feature_set(dim).meta  # name -> empty column of its dtype
    part = FeatureSet(
        keys,
        np.stack([f for _, f in means.done]).astype(np.float32, copy=False) if means.done
        else np.zeros((0, dim), np.float32),
        np.array([r.pid for r in records], dtype=np.int64) if labelled else None,
        np.array([r.camid for r in records], dtype=np.int64),
        np.array([r.platform for r in records], dtype=np.int8),
        {name: _column([r.meta[name] for r in records], column.dtype) if records else column
         for name, column in columns.items()},
    )
    bad = np.flatnonzero(~np.isfinite(part.features).all(axis=1))
    if bad.size:
        names = [part.keys[i] for i in bad[:10]]
        raise ValueError(f"{folder}: NaN or inf features for {bad.size} tracklet(s): {', '.join(names)}"
                         + (" ..." if bad.size > 10 else ""))
    return FeatureSet.concatenate([part])


def _column(values: list, dtype: np.dtype) -> np.ndarray:
    """(N,) column of `values`; strings keep their full width (the empty column's dtype is only a kind)."""
    return np.array(values, dtype=np.str_ if dtype.kind == "U" else dtype)


def gather_feature_sets(part: FeatureSet, world_size: int) -> FeatureSet:
    """Every rank's part joined on every rank, ordered by key (the same FeatureSet whatever the world size).

    With world_size > 1 torch.distributed must be initialised with that many ranks; parts travel as pickled
    numpy arrays (`xfd.distributed.gather_objects`).
    """
    if world_size == 1:
        return FeatureSet.concatenate([part])
    joined = FeatureSet.concatenate(gather_objects(part, world_size, "gather_feature_sets"))
    if not len(joined):
        raise ValueError(f"gather_feature_sets: none of the {world_size} ranks extracted any tracklet")
    return joined
