"""Benchmark: training frames/s of the DALI pipeline fed by the ShardIndex vs a DataLoader + PIL/torchvision one.

    python bench/pipeline.py [--seconds 20] [--identities 4 --instances 4 --frames 8] [--cores 2]
    python bench/pipeline.py --gpu            # GPU ONLY: DALI mixed (nvJPEG) decode on device 0

Both sides run the same PK batches (PKSampler, seed 0) of the same shards with the same clip-consistent
augmentation — resize 256×128, flip, pad 10 + random crop, colour jitter .1/.1/.1/.05, random erasing, CLIP
normalisation — and the same draws (`FramePipeline.params_for`), on the same cores:

- DALI: `TrainLoader` (one background thread reading the ShardIndex) → `FramePipeline(augment=AugmentConfig(),
  device_id=None, num_threads=CORES)`;
- baseline: `torch.utils.data.DataLoader(num_workers=CORES)` whose workers each build a whole batch with
  PIL decode + torchvision.transforms.functional (torch at 1 thread per worker, so CORES processes in all).

Shards are built in a temporary folder from xfd-synth's dataset (8 train identities by default). Each side runs
for about `--seconds` after one warm-up batch; frames/s and the ratio DALI/baseline (measured in this run, so it
is comparable across machines) are printed.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.utils.data
import torchvision.transforms.functional as tf
from PIL import Image

from xfd.cli import shard as shard_cli
from xfd.cli import synth as synth_cli
from xfd.data.index import ShardIndex
from xfd.data.loader import TrainLoader
from xfd.config import AugmentConfig
from xfd.data.pipeline import CLIP_MEAN, CLIP_STD, FramePipeline, draw_clip_params
from xfd.data.pk import PKSampler
from xfd.data.sampling import restricted_random_indices

IMAGE_SIZE = (256, 128)  # the paper's frame size (height, width)


def build_shards(scratch: Path, ids: int) -> Path:
    """xfd-synth + xfd-shard into `scratch`; returns the train shard set."""
    source = scratch / "synthetic"
    synth_cli.main([str(source), "--ids", str(ids), "--test-ids", "2", "--seed", "0", "--no-progress"])
    shard_cli.main([str(source), str(scratch / "shards"), "--no-progress", "--shard-size", "8"])
    return scratch / "shards" / "train"


def timed(batches, seconds: float, frames_per_batch: int) -> float:
    """Frames/s over an endless batch iterator: one warm-up batch, then about `seconds` of batches."""
    next(batches)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        next(batches)
        count += 1
    return count * frames_per_batch / (time.perf_counter() - started)


def endless(loader: TrainLoader):
    """The loader's batches, epoch after epoch."""
    for epoch in range(10**9):
        yield from loader.batches(epoch)


# ---------------------------------------------------------------------- baseline: PIL + torchvision


class TorchvisionBatches(torch.utils.data.Dataset):
    """Item (epoch, step) → the same PK batch as TrainLoader's, decoded and augmented with PIL/torchvision."""

    def __init__(self, folder: Path, sampler: PKSampler, frames: int, augment: AugmentConfig):
        self.folder, self.sampler, self.frames, self.augment = folder, sampler, frames, augment
        self.index = None  # opened in each worker

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, item: int) -> torch.Tensor:
        if self.index is None:
            self.index = ShardIndex.open(self.folder)
        epoch, step = divmod(item, self.sampler.steps_per_epoch())
        (height, width), pad = IMAGE_SIZE, self.augment.pad
        # the draws FramePipeline(seed=0).params_for(epoch, step) makes
        params = draw_clip_params(np.random.default_rng([0, epoch, step]), self.sampler.batch_size, IMAGE_SIZE,
                                  self.augment)
        clips = []
        for position, key in enumerate(self.sampler.batch(epoch, step, 0)):
            rng = np.random.default_rng([0, epoch, step, 0, position])
            indices = restricted_random_indices(self.index.num_frames(key), self.frames, rng)
            top, left = (int(v) + pad for v in params["crop_anchor"][position])
            clip = []
            for data in self.index.frames(key, indices):
                image = Image.open(io.BytesIO(data)).convert("RGB").resize((width, height), Image.BILINEAR)
                image = tf.crop(tf.pad(image, pad), top, left, height, width)
                image = tf.adjust_brightness(image, float(params["brightness"][position]))
                image = tf.adjust_contrast(image, float(params["contrast"][position]))
                image = tf.adjust_saturation(image, float(params["saturation"][position]))
                image = tf.adjust_hue(image, float(params["hue"][position]) / 360.0)
                tensor = tf.normalize(tf.to_tensor(image), CLIP_MEAN, CLIP_STD)  # (3, H, W)
                if params["flip"][position]:
                    tensor = tensor.flip(-1)
                (i, j), (h, w) = params["erase_anchor"][position].astype(int), params["erase_shape"][position]
                if h > 0:
                    tensor = tf.erase(tensor, int(i), int(j), int(h), int(w), 0.0)
                clip.append(tensor)
            clips.append(torch.stack(clip))  # (L, 3, H, W)
        return torch.stack(clips)  # (B, L, 3, H, W)


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)


# ---------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time per side")
    parser.add_argument("--ids", type=int, default=8, help="xfd-synth train identities")
    parser.add_argument("--identities", type=int, default=4, help="P")
    parser.add_argument("--instances", type=int, default=4, help="K")
    parser.add_argument("--frames", type=int, default=8, help="L")
    parser.add_argument("--cores", type=int, default=2, help="DALI threads = DataLoader workers")
    parser.add_argument("--gpu", action="store_true", help="GPU ONLY: DALI mixed decode on device 0")
    args = parser.parse_args()
    augment = AugmentConfig()
    scratch = Path(tempfile.mkdtemp(prefix="xfd-bench-pipeline-"))
    try:
        folder = build_shards(scratch, args.ids)
        index = ShardIndex.open(folder)
        sampler = PKSampler(index.labels_to_keys(), args.identities, args.instances, seed=0)
        per_batch = sampler.batch_size * args.frames
        print(f"\n{len(index)} train tracklets, {len(sampler.labels_to_keys)} identities; batches of "
              f"P·K = {sampler.batch_size} tracklets × L = {args.frames} frames = {per_batch} frames")

        if args.gpu:  # GPU ONLY
            return gpu(index, sampler, augment, args, per_batch)

        dali_pipe = FramePipeline(sampler.batch_size, args.frames, IMAGE_SIZE, augment, device_id=None,
                                  num_threads=args.cores, seed=0)
        dali = timed(endless(TrainLoader(index, sampler, dali_pipe, num_frames=args.frames)), args.seconds,
                     per_batch)
        baseline_loader = torch.utils.data.DataLoader(
            TorchvisionBatches(folder, sampler, args.frames, augment), batch_size=None,
            num_workers=args.cores, worker_init_fn=_one_thread, prefetch_factor=2, persistent_workers=False)
        baseline = timed(iter(baseline_loader), args.seconds, per_batch)
        print(f"\n{'pipeline (CPU, ' + str(args.cores) + ' cores)':<48} {'frames/s':>9}")
        print(f"{'DataLoader(num_workers=' + str(args.cores) + ') + PIL/torchvision':<48} {baseline:>9.0f}")
        print(f"{'DALI cpu (' + str(args.cores) + ' threads) + ShardIndex + TrainLoader':<48} {dali:>9.0f}")
        print(f"DALI / baseline: {dali / baseline:.2f}x")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def gpu(index: ShardIndex, sampler: PKSampler, augment: AugmentConfig, args, per_batch: int) -> int:
    """GPU ONLY: DALI mixed decode on device 0, through the TrainLoader to CUDA tensors (goal ≥ 10k frames/s)."""
    if not torch.cuda.is_available():
        print("--gpu needs a CUDA device; none here")
        return 1
    pipe = FramePipeline(sampler.batch_size, args.frames, IMAGE_SIZE, augment, device_id=0,
                         num_threads=args.cores, seed=0)
    loader = TrainLoader(index, sampler, pipe, num_frames=args.frames, device=pipe.device, prefetch=3)
    batches = endless(loader)

    def synchronised():
        for batch in batches:
            torch.cuda.synchronize()
            yield batch

    rate = timed(synchronised(), args.seconds, per_batch)
    share = loader.wait_seconds / max(loader.waits, 1)
    print(f"\nDALI mixed decode on {torch.cuda.get_device_name(0)} ({args.cores} CPU threads): {rate:.0f} frames/s "
          f"(goal ≥ 10000: {'met' if rate >= 10_000 else 'NOT met'}); consumer wait {share * 1e3:.1f} ms/batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
