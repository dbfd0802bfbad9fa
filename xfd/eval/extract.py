"""Inference features of one shard set: stream tracklets, decode them with the eval FramePipeline, run the model.

Each rank reads only its own shards (`tracklet_stream` in eval mode splits shards by global rank) and returns a
`FeatureSet` of its tracklets; `gather_feature_sets` joins the parts of all ranks and orders them by key, so the
result does not depend on the number of ranks (1 rank ≡ N ranks). Features are the model's L2-normalised
retrieval features (`model.extract`, optional flip TTA) of L evenly spaced frames, or the re-normalised mean over
clips of L covering every frame, ready for `xfd.eval.evaluate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.utils.data
from tqdm import tqdm

from xfd.data.jpeg import check_jpeg_structure
from xfd.data.pipeline import AugmentSettings, FramePipeline
from xfd.data.shard import MANIFEST_NAME
from xfd.data.stream import StreamOptions, tracklet_stream

PLATFORM_CODES = {"ground": 0, "aerial": 1}
BIN_NAMES = ("altitude", "distance", "angle")  # column order of the model's (B, 3) meta tensor


@dataclass(frozen=True)
class FeatureSet:
    """Features and labels of a set of tracklets, one row per tracklet (key order after gathering)."""

    keys: list[str]
    features: np.ndarray  # (N, D) float32, L2-normalised
    pids: np.ndarray  # (N,) int64
    camids: np.ndarray  # (N,) int64
    platform: np.ndarray  # (N,) int8: 0 ground, 1 aerial

    def __post_init__(self):
        n = len(self.keys)
        if np.ndim(self.features) != 2 or np.shape(self.features)[0] != n:
            raise ValueError(f"features must be ({n}, D) for {n} keys, got shape {np.shape(self.features)}")
        for name in ("pids", "camids", "platform"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {np.shape(getattr(self, name))}")

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, rows) -> "FeatureSet":
        """The rows given by a boolean mask or an index array, in that order."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=np.int64)
        return FeatureSet([self.keys[i] for i in rows], self.features[rows], self.pids[rows], self.camids[rows],
                          self.platform[rows])

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
        dim = dims.pop() if dims else parts[0].features.shape[1]
        joined = FeatureSet(
            keys,
            np.concatenate([p.features.reshape(len(p), dim) for p in parts]).astype(np.float32, copy=False),
            np.concatenate([p.pids for p in parts]).astype(np.int64, copy=False),
            np.concatenate([p.camids for p in parts]).astype(np.int64, copy=False),
            np.concatenate([p.platform for p in parts]).astype(np.int8, copy=False),
        )
        ordered = joined.select(np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64))
        twice = sorted({a for a, b in zip(ordered.keys, ordered.keys[1:]) if a == b})
        if twice:
            raise ValueError(f"{len(twice)} tracklet key(s) appear in more than one part, e.g. {twice[:5]}")
        return ordered


def _rank_sample_count(folder: Path, rank: int, world_size: int) -> int:
    """Tracklets this rank will read: the samples of shards i with i mod world_size == rank (as the stream)."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    return sum(entry["samples"] for i, entry in enumerate(manifest["shards"]) if i % world_size == rank)


def _batches(tracklets: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch = []
    for tracklet in tracklets:
        batch.append(tracklet)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _labels(tracklet: dict) -> tuple[int, int, int, list[int]]:
    """(pid, camid, platform code, meta bins) of one tracklet; errors name the tracklet."""
    meta, where = tracklet["meta"], f"{tracklet.get('url', '?')} [{tracklet['key']}]"
    try:
        platform = PLATFORM_CODES[meta["platform"]]
        bins = [int(meta["bins"][name]) for name in BIN_NAMES]
        return int(meta["pid"]), int(meta["camid"]), platform, bins
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{where}: metadata lacks a usable pid / camid / platform / bins ({error!r})") from None


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
    previous train/eval mode back afterwards.
    """
    folder = Path(folder)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stream = tracklet_stream(folder, StreamOptions(num_frames=num_frames, rank=rank,
                                                   world_size=world_size, clips=clips))
    expected = _rank_sample_count(folder, rank, world_size)
    if expected == 0 and world_size == 1:
        raise ValueError(f"{folder}: the split holds no tracklets; nothing to extract")
    device = torch.device(device)
    height, width = image_size
    pipe = FramePipeline(tracklets=batch_size, frames=num_frames, settings=AugmentSettings(height=height, width=width),
                         train=False, device_id=_pipeline_device(device), num_threads=num_threads)
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
                batch_labels = [_labels(clip[1]) for clip in padded]
                platform = torch.tensor([lab[2] for lab in batch_labels], dtype=torch.long, device=device)  # (B,)
                meta = torch.tensor([lab[3] for lab in batch_labels], dtype=torch.long, device=device)  # (B, 3)
                out = model.extract(frames.to(device, dtype), platform, meta, flip_tta=flip_tta)  # (B, D)
                finished = len(means.done)
                for (ordinal, t, _, _), feature in zip(batch, out[:n].float().cpu().numpy()):
                    means.add(ordinal, t, feature)
                bar.update(len(means.done) - finished)
            means.finish()
            bar.update(len(means.done) - bar.n)
    finally:
        model.train(was_training)

    keys = [t["key"] for t, _ in means.done]
    labels = [_labels(t) for t, _ in means.done]
    if len(keys) != expected:
        raise ValueError(f"{folder}: rank {rank} of {world_size} read {len(keys)} tracklets, its shards' manifest "
                         f"entries list {expected}")
    dim = means.done[0][1].shape[0] if means.done else int(getattr(model, "feature_dim", 0))
    part = FeatureSet(
        keys,
        np.stack([f for _, f in means.done]).astype(np.float32, copy=False) if means.done
        else np.zeros((0, dim), np.float32),
        np.array([lab[0] for lab in labels], dtype=np.int64),
        np.array([lab[1] for lab in labels], dtype=np.int64),
        np.array([lab[2] for lab in labels], dtype=np.int8),
    )
    bad = np.flatnonzero(~np.isfinite(part.features).all(axis=1))
    if bad.size:
        names = [part.keys[i] for i in bad[:10]]
        raise ValueError(f"{folder}: NaN or inf features for {bad.size} tracklet(s): {', '.join(names)}"
                         + (" ..." if bad.size > 10 else ""))
    return FeatureSet.concatenate([part])


def gather_feature_sets(part: FeatureSet, world_size: int) -> FeatureSet:
    """Every rank's part joined on every rank, ordered by key (the same FeatureSet whatever the world size).

    With world_size > 1 torch.distributed must be initialised with that many ranks; parts travel as pickled
    numpy arrays (all_gather_object; with NCCL each rank must have set its CUDA device first).
    """
    if world_size == 1:
        return FeatureSet.concatenate([part])
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"gather_feature_sets: world_size is {world_size} but torch.distributed is not "
                           "initialised")
    if dist.get_world_size() != world_size:
        raise RuntimeError(f"gather_feature_sets: world_size is {world_size} but the process group has "
                           f"{dist.get_world_size()} ranks")
    parts: list = [None] * world_size
    dist.all_gather_object(parts, part)
    joined = FeatureSet.concatenate(parts)
    if not len(joined):
        raise ValueError(f"gather_feature_sets: none of the {world_size} ranks extracted any tracklet")
    return joined
