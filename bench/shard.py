"""Benchmark: xfd-shard against `tar cf` on the same frames and cores, at 3 sizes, with a projection to DetReIDX.

    python bench/shard.py [--sizes 16:8,32:16,64:32] [--repeats 3] [--source DETREIDX_DIR]

For each size an xfd-synth dataset is generated (or --source is used as the one size), then, in turns so that a
change of machine load hits all of them alike: `tar cf` of the split folders; `tar cf` followed by an fsync of the
archive (xfd-shard's shards are on disk when it returns); `xfd-shard --workers 1` and `--workers 2` (every check
on: name parsing, JPEG structure walk, sha256, manifests; `--max-frames 0` so that both copy every frame). Each
figure is the best of `--repeats`; the page cache is warm for all of them, and every output is deleted outside the
timed region. The ratios `tar seconds / xfd-shard seconds` (1.0 = as fast as tar) are what to compare across
machines; the load average, and how much faster two processes finish two CPU-bound loops than one (2.0 on two idle
cores), are printed before and after. CPU seconds (user + system, the pool's workers included) are printed too: on
a machine other jobs keep busy they say what idle cores would give (2 workers on 2 idle cores: about half the CPU
seconds). Finally the times are fitted as `a + b · frames` over the sizes and projected to DetReIDX's 11.75 M
frames (at the synthetic frames' size: real frames are larger, which favours neither tool). The stream's read
rate follows.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xfd.data.shard import ShardOptions, shard_dataset
from xfd.data.synth.dataset import generate
from xfd.data.synth.plan import SynthConfig

DETREIDX_FRAMES = 11_750_000


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def parallel_headroom(n: int = 2_000_000) -> float:
    """How much faster two processes finish two equal CPU-bound loops than one process: 2.0 on two idle cores,
    about 1.0 when other jobs leave this run one core's worth. It tells how to read the --workers 2 figures."""
    import multiprocessing

    serial = _timed(lambda: (_spin(n), _spin(n)))[0]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_spin, [1, 1])  # started
        parallel = _timed(lambda: pool.map(_spin, [n, n]))[0]
    return serial / parallel


def _frames(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg")]
    return len(files), sum(p.stat().st_size for p in files)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children (tar, the pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call."""
    cpu, started = _cpu_seconds(), time.perf_counter()
    function()
    return time.perf_counter() - started, _cpu_seconds() - cpu


def measure(source: Path, scratch: Path, repeats: int, shard_size: float) -> dict[str, tuple[float, float]]:
    """Best-of-`repeats` (wall, CPU) seconds of tar and xfd-shard with 1 and 2 workers, interleaved."""
    folders = sorted(p.name for p in source.iterdir() if p.is_dir())  # the dataset, not synth_truth.json
    archive, out = scratch / "all.tar", scratch / "shards"
    options = ShardOptions(max_frames=0, shard_size_mb=shard_size)

    def tar():
        subprocess.run(["tar", "cf", str(archive), "-C", str(source), *folders], check=True)

    def durable_tar():  # what xfd-shard guarantees too: the archive on disk when the command returns
        tar()
        fd = os.open(archive, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def shard(workers: int):
        return lambda: shard_dataset(source, out, options, workers=workers, progress=False)

    def clean():
        archive.unlink(missing_ok=True)
        shutil.rmtree(out, ignore_errors=True)

    runs = {"tar cf": tar, "tar cf + fsync": durable_tar, "xfd-shard --workers 1": shard(1),
            "xfd-shard --workers 2": shard(2)}
    for run in runs.values():  # warm the page cache and the code paths
        clean()
        run()
    best = {name: (float("inf"), float("inf")) for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            clean()
            best[name] = min(best[name], _timed(run))  # the fastest run, with its CPU time
    clean()
    return best


def stream_rate(folder: Path, frames: int, repeats: int, workers: int) -> tuple[float, int]:
    # imported here, after the shard measurements: a parent holding torch makes every fork of xfd-shard's pool
    # costlier than it is from the xfd-shard command, which never imports torch
    import torch.utils.data

    from xfd.data.stream import StreamOptions, tracklet_stream

    def read():
        loader = torch.utils.data.DataLoader(tracklet_stream(folder, StreamOptions(num_frames=frames)),
                                             batch_size=None, num_workers=workers)
        return sum(1 for _ in loader)

    count = read()
    return min(_timed(read)[0] for _ in range(repeats)), count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16:8,32:16,64:32",
                        help="train:test identities of the synthetic datasets (3 sizes for the projection)")
    parser.add_argument("--source", type=Path, default=None, help="a DetReIDX-layout dataset instead (one size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-size", type=float, default=8.0, metavar="MB",
                        help="shard size (several shards per split, so that the workers share the work)")
    parser.add_argument("--frames", type=int, default=16, help="frames sampled per tracklet by the stream")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    scratch = Path(tempfile.mkdtemp(prefix="xfd-bench-shard-"))
    print(f"{cores} cores; load average before: {_load()}; parallel headroom of 2 processes: "
          f"{parallel_headroom():.2f}x (2.00 = two idle cores)")
    try:
        sources = []
        if args.source:
            sources.append(args.source)
        else:
            for size in args.sizes.split(","):
                ids, test_ids = (int(v) for v in size.split(":"))
                folder = scratch / f"synthetic-{ids}-{test_ids}"
                generate(SynthConfig(ids=ids, test_ids=test_ids), folder, workers=cores, progress=False)
                sources.append(folder)

        rows = []
        print(f"\n{'frames':>8} {'MB':>7} {'tool':<24} {'seconds':>8} {'MB/s':>7} {'frames/s':>9} {'vs tar':>7} "
              f"{'CPU s':>7} {'CPU vs tar':>10}")
        for source in sources:
            frames, size = _frames(source)
            best = measure(source, scratch, args.repeats, args.shard_size)
            rows.append((frames, {name: wall for name, (wall, _) in best.items()}))
            tar_wall, tar_cpu = best["tar cf"]
            for name, (seconds, cpu) in best.items():
                print(f"{frames:>8} {size / 1e6:>7.1f} {name:<24} {seconds:>8.3f} {size / 1e6 / seconds:>7.1f} "
                      f"{frames / seconds:>9.0f} {tar_wall / seconds:>6.2f}x {cpu:>7.3f} {tar_cpu / cpu:>9.2f}x")

        if len(rows) >= 2:
            print(f"\nprojection to DetReIDX's {DETREIDX_FRAMES / 1e6:.2f} M frames (least squares a + b·frames over "
                  f"{len(rows)} sizes, at the synthetic frames' size):")
            frames = np.array([r[0] for r in rows], dtype=float)
            projected = {}
            for name in rows[0][1]:
                if name == "tar cf + fsync":
                    continue
                seconds = np.array([r[1][name] for r in rows])
                slope, intercept = np.polyfit(frames, seconds, 1)
                projected[name] = intercept + slope * DETREIDX_FRAMES
                print(f"  {name:<24} {projected[name]:>8.0f} s  ({1e6 * slope:.1f} µs a frame, "
                      f"{intercept:.2f} s fixed)")
            for name in projected:
                if name != "tar cf":
                    print(f"  {name:<24} {projected['tar cf'] / projected[name]:.2f}x tar cf")

        folder = scratch / "stream"
        shard_dataset(sources[-1], folder, ShardOptions(max_frames=0, shard_size_mb=args.shard_size), workers=cores,
                      progress=False)
        print(f"\n{'stream (train split, in order)':<34} {'tracklets/s':>11} {'frames/s':>9}")
        for workers in sorted({0, cores}):
            seconds, count = stream_rate(folder / "train", args.frames, args.repeats, workers)
            rate = count / seconds
            print(f"{f'DataLoader workers={workers}':<34} {rate:>11.0f} {rate * args.frames:>9.0f}")
        print(f"\nload average after: {_load()}; parallel headroom of 2 processes: {parallel_headroom():.2f}x")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
