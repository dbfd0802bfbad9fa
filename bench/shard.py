"""Benchmark: xfd-shard throughput vs `tar cf` on the same frames, and the xfd.data stream's read rate.

    python bench/shard.py [--source DETREIDX_DIR] [--ids 64 --test-ids 32] [--repeats 3]

Without --source, the demo-size synthetic dataset is generated first (xfd-synth). Every figure is measured in
this run on this machine; the ratios are what to compare across machines (absolute times are noisy here).
Both tools read the same files from a warm page cache; `tar cf` is single-threaded, so xfd-shard is reported
with 1 worker (same cores) and with all cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch.utils.data

from xfd.cli import synth as synth_cli
from xfd.data.shard import ShardOptions, shard_dataset
from xfd.data.stream import StreamOptions, tracklet_stream


def _best_of(repeats: int, function) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def _source_bytes(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*.jpg")]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--ids", type=int, default=64)
    parser.add_argument("--test-ids", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16, help="frames sampled per tracklet by the stream")
    parser.add_argument("--shard-size", type=float, default=8.0, metavar="MB",
                        help="shard size (several shards per split, so that workers share the work)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    scratch = Path(tempfile.mkdtemp(prefix="xfd-bench-"))
    try:
        source = args.source
        if source is None:
            source = scratch / "synthetic"
            synth_cli.main([str(source), "--ids", str(args.ids), "--test-ids", str(args.test_ids), "--seed", "0"])
        files, size = _source_bytes(source)
        print(f"\nsource: {files} frames, {size / 1e6:.1f} MB, {cores} cores")

        def run_tar():
            subprocess.run(["tar", "cf", str(scratch / "all.tar"), "-C", str(source), "."], check=True)

        def run_shard(workers: int):
            options = ShardOptions(max_frames=0, shard_size_mb=args.shard_size)
            return lambda: shard_dataset(source, scratch / "shards", options, workers=workers,
                                         overwrite=True, progress=False)

        run_tar()  # warm the page cache for both
        tar_seconds = _best_of(args.repeats, run_tar)
        rows = [("tar cf (1 core)", tar_seconds)]
        for workers in sorted({1, cores}):
            rows.append((f"xfd-shard --workers {workers}", _best_of(args.repeats, run_shard(workers))))
        print(f"\n{'writer':<26} {'seconds':>8} {'MB/s':>8} {'frames/s':>9} {'vs tar':>7}")
        for name, seconds in rows:
            print(f"{name:<26} {seconds:>8.3f} {size / 1e6 / seconds:>8.1f} {files / seconds:>9.0f} "
                  f"{tar_seconds / seconds:>6.2f}x")

        train = scratch / "shards" / "train"
        print(f"\n{'stream (train split, eval mode)':<34} {'tracklets/s':>11} {'frames/s':>9}")
        for workers in sorted({0, cores}):
            def read():
                loader = torch.utils.data.DataLoader(
                    tracklet_stream(train, StreamOptions(num_frames=args.frames)), batch_size=None,
                    num_workers=workers)
                return sum(1 for _ in loader)

            count = read()
            seconds = _best_of(args.repeats, read)
            print(f"{f'DataLoader workers={workers}':<34} {count / seconds:>11.0f} {count * args.frames / seconds:>9.0f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
