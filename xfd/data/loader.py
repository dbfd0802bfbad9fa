"""Training batches: PK keys → frame bytes from the ShardIndex → DALI → tensors, built ahead in a thread.

For each micro-step the `PKSampler` names this rank's P·K tracklets; L frames of each are chosen by
restricted random sampling with `np.random.default_rng([seed, epoch, step, rank, position])`, read from the
shards, checked (`check_jpeg_structure`, so a broken frame is an error naming it rather than a DALI crash),
decoded and augmented by `FramePipeline.run(frames, epoch, step)` and joined with their metadata by the one
`collate` (xfd/data/encoding.py) that extraction uses too. Every draw is a pure function of
(seed, epoch, step, rank), so `batches(epoch, start_step=s)` after a restart yields exactly the batches a full
pass would have yielded from step s on.

A background thread keeps up to `prefetch` batches ready; the time the consumer spends blocked on it adds up in
`wait_seconds` (and `waits` counts the batches handed out), so the trainer can report the share of time spent
waiting for data. An exception in the thread is re-raised in the consumer; stopping the iteration early (break,
close, garbage collection) stops and joins the thread.

On a GPU the thread works on this rank's device: torch keeps the current CUDA device per thread and a new thread
starts on GPU 0, so the producer first makes the loader's device (`cuda:{local_rank}`) its own
(`use_device_in_this_thread`; `producer_device` records what it set). It builds each batch on a side stream of
that device and waits for that stream before handing the batch over, and the consumer registers its own stream
with the batch's tensors, so the caching allocator never reuses their memory while the training step reads it.

Bad frames under `on_error="skip"`: the tracklet is replaced by another of the same identity (chosen by a seeded
draw among the identity's tracklets not yet found bad for that batch slot) and the skip is recorded in `.skips`; an
identity with no readable tracklet left is an error under either policy.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from .encoding import Batch, collate
from .errors import DataError, SkipLog
from .index import ShardIndex
from .jpeg import check_jpeg_structure
from .pipeline import FramePipeline
from .pk import PKSampler
from .sampling import restricted_random_indices

_POLL_SECONDS = 0.1  # how often a blocked producer looks at the stop flag


def use_device_in_this_thread(device: torch.device) -> torch.device:
    """Make `device` the calling thread's current device and return the device the thread now reports.

    torch keeps the current CUDA device per thread, and a new thread starts on GPU 0: without this a loader
    thread would create a CUDA context, pinned buffers and streams on GPU 0 whatever its rank."""
    if device.type != "cuda":
        return torch.device("cpu")
    torch.cuda.set_device(device)
    return torch.device("cuda", torch.cuda.current_device())


@dataclass(frozen=True)
class _Failure:
    """An exception raised in the producer thread, carried to the consumer."""

    error: BaseException


_DONE = object()


class TrainLoader:
    """Iterate one rank's PK micro-batches of an epoch, prefetched in a background thread."""

    def __init__(self, index: ShardIndex, sampler: PKSampler, pipeline: FramePipeline, rank: int = 0,
                 num_frames: int = 16, seed: int = 0, on_error: str = "raise", prefetch: int = 2,
                 device: str | torch.device = "cpu"):
        if pipeline.tracklets != sampler.batch_size or pipeline.frames != num_frames:
            raise ValueError(f"pipeline takes {pipeline.tracklets} tracklets × {pipeline.frames} frames, but the "
                             f"sampler gives P·K = {sampler.batch_size} tracklets × num_frames = {num_frames}")
        if not 0 <= rank < sampler.world_size:
            raise ValueError(f"rank {rank} outside world of size {sampler.world_size}")
        if prefetch < 1:
            raise ValueError("prefetch must be >= 1")
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda": the pipeline's GPU, else the current one
            on_gpu = pipeline.device.type == "cuda"
            device = pipeline.device if on_gpu else torch.device("cuda", torch.cuda.current_device())
        if pipeline.device.type == "cuda" and device != pipeline.device:
            raise ValueError(f"the pipeline decodes on {pipeline.device} but the loader was asked for {device}; "
                             "a rank's loader and pipeline use the same device (xfd.distributed.rank_device(local_rank, cuda))")
        self.index, self.sampler, self.pipeline = index, sampler, pipeline
        self.rank, self.num_frames, self.seed, self.prefetch = rank, num_frames, seed, prefetch
        self.device = device
        self.producer_device: torch.device | None = None  # what the producer thread made its current device
        self.skips = SkipLog(on_error)
        self.wait_seconds = 0.0  # consumer time blocked on the producer, over all batches handed out
        self.waits = 0  # batches handed out
        self._running = threading.Lock()  # one epoch iteration at a time: the DALI pipeline is stateful

    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch()

    # ------------------------------------------------------------------ building one batch (producer side)

    def _read_checked(self, key: str, rng: np.random.Generator) -> list[bytes]:
        """L frames of a tracklet, each structure-checked; DataError names shard, key and frame."""
        indices = restricted_random_indices(self.index.num_frames(key), self.num_frames, rng)
        frames = self.index.frames(key, indices)
        for i, data in zip(indices, frames):
            check_jpeg_structure(data, f"{self.index.shard_of(key)} [{key}] frame {i}")
        return frames

    def _tracklet(self, key: str, label: int, epoch: int, step: int, position: int) -> tuple[str, list[bytes]]:
        """(key used, its L frames); under `skip`, bad tracklets are replaced within the identity."""
        stream = [self.seed, epoch, step, self.rank, position]
        bad: set[str] = set()
        attempt = 0
        while True:
            try:
                return key, self._read_checked(key, np.random.default_rng(stream))
            except DataError as error:
                self.skips.handle(error, self.index.meta(key).get("split"))  # re-raises under "raise"
            bad.add(key)
            candidates = [k for k in sorted(self.sampler.labels_to_keys[label]) if k not in bad]
            if not candidates:
                raise DataError(f"{self.index.folder} identity {label}",
                                f"no readable tracklet left (all of {sorted(bad)} have bad frames)")
            attempt += 1
            key = candidates[np.random.default_rng(stream + [attempt]).integers(len(candidates))]

    def _build(self, epoch: int, step: int) -> Batch:
        keys = self.sampler.batch(epoch, step, self.rank)
        used, frames = [], []
        for position, key in enumerate(keys):
            label = int(self.index.meta(key)["label"])
            key, clip = self._tracklet(key, label, epoch, step, position)
            used.append(key)
            frames.append(clip)
        images, _ = self.pipeline.run(frames, epoch, step)  # (B, L, 3, H, W) on the pipeline's device
        batch = collate(images, used, [self.index.meta(key) for key in used],
                        [self.index.shard_of(key) for key in used], with_labels=True)
        return batch.to(self.device)

    # ------------------------------------------------------------------ iteration (consumer side)

    def _produce(self, epoch: int, start_step: int, ready: queue.Queue, stop: threading.Event) -> None:
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=_POLL_SECONDS)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            self.producer_device = use_device_in_this_thread(self.device)
            cuda = self.device.type == "cuda"
            side = torch.cuda.Stream(self.device) if cuda else None
            for step in range(start_step, self.steps_per_epoch()):
                if stop.is_set():
                    return
                with torch.cuda.stream(side) if cuda else nullcontext():
                    batch = self._build(epoch, step)
                if cuda:
                    side.synchronize()  # the batch is complete before another thread reads it
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as error:  # carried to the consumer and re-raised there
            put(_Failure(error))

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """The rank's batches of `epoch` from `start_step` on (a resume yields exactly a full pass's tail)."""
        if not 0 <= start_step <= self.steps_per_epoch():
            raise ValueError(f"start_step {start_step} outside 0..{self.steps_per_epoch()}")
        return self._iterate(epoch, start_step)

    def _iterate(self, epoch: int, start_step: int) -> Iterator[Batch]:
        if not self._running.acquire(blocking=False):
            raise RuntimeError("this TrainLoader is already iterating an epoch; finish or close that one first")
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        thread = threading.Thread(target=self._produce, args=(epoch, start_step, ready, stop),
                                  name=f"xfd-train-loader-rank{self.rank}", daemon=True)
        thread.start()
        try:
            while True:
                started = time.perf_counter()
                item = ready.get()
                self.wait_seconds += time.perf_counter() - started
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                self.waits += 1
                if self.device.type == "cuda":
                    item.record_stream(torch.cuda.current_stream(self.device))
                yield item
        finally:
            stop.set()
            thread.join()
            self._running.release()
