"""Benchmark: xfd-synth's default-size dataset against the JPEG codec floor for the same frames, in the same run.

    python bench/synth.py [--ids 64 --test-ids 32] [--workers N]

xfd-synth renders every frame (a posed 3-D figure, camera, degradations) and encodes it as JPEG. The baseline is
what no renderer can avoid: decoding and re-encoding the very frames it wrote, at the same quality, in one process
(PIL). The ratio `synth seconds / codec seconds` says how much the rendering costs on top of the codec; absolute
seconds are printed too (they depend on the machine and its load, which is printed with them).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from xfd.data.synth.dataset import generate
from xfd.data.synth.plan import SynthConfig


def codec_seconds(root: Path, quality: int) -> tuple[float, int]:
    """Seconds to decode and re-encode every frame under `root` at `quality`; the number of frames."""
    frames = sorted(root.rglob("*.jpg"))
    started = time.perf_counter()
    for path in frames:
        with Image.open(path) as image:
            image.load()
            image.save(io.BytesIO(), format="JPEG", quality=quality)
    return time.perf_counter() - started, len(frames)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=64)
    parser.add_argument("--test-ids", type=int, default=32)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    config = SynthConfig(ids=args.ids, test_ids=args.test_ids)
    scratch = Path(tempfile.mkdtemp(prefix="xfd-bench-synth-"))
    try:
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        rows = []
        for workers in sorted({1, args.workers}):
            out = scratch / f"w{workers}"
            started = time.perf_counter()
            summary = generate(config, out, workers=workers, progress=False)
            rows.append((workers, time.perf_counter() - started, summary))
        codec, frames = codec_seconds(scratch / f"w{rows[0][0]}", config.jpeg_quality)
        print(f"{frames} frames, {rows[0][2].bytes / 1e6:.1f} MB; codec floor (decode + encode, 1 process): "
              f"{codec:.2f} s")
        print(f"{'xfd-synth':<22} {'seconds':>8} {'frames/s':>9} {'vs codec':>9}")
        for workers, seconds, summary in rows:
            print(f"{f'--workers {workers}':<22} {seconds:>8.2f} {summary.frames / seconds:>9.0f} "
                  f"{seconds / codec:>8.2f}x")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
