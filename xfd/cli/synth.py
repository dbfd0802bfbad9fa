"""`xfd-synth OUT`: write the built-in synthetic aerial-ground video ReID dataset in the DetReIDX layout.

The demo, the tests and early model work run on it where no real dataset can be downloaded. See
`xfd.data.synth` for what it models and README "Synthetic dataset (xfd-synth)" for the layout.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..data.synth.dataset import OutputExistsError, Summary, generate
from ..data.synth.plan import SynthConfig


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xfd-synth",
        description="Write a synthetic aerial-ground video person ReID dataset in the DetReIDX layout "
                    "(train/ and case1-3 query/gallery folders of JPEG tracklets, plus synth_truth.json).",
    )
    parser.add_argument("out", help="output folder (must not exist or be empty, unless --overwrite)")
    parser.add_argument("--ids", type=_int_at_least(2), default=64, help="train identities (default 64)")
    parser.add_argument("--test-ids", type=_int_at_least(2), default=32, help="test identities (default 32)")
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=_int_at_least(1), default=_default_workers(),
                        help="rendering processes (default: the CPU cores available); output does not depend on it")
    parser.add_argument("--min-frames", type=_int_at_least(1), default=24, help="shortest tracklet (default 24)")
    parser.add_argument("--max-frames", type=_int_at_least(1), default=80, help="longest tracklet (default 80)")
    parser.add_argument("--quality", type=_int_at_least(1), default=90,
                        help="JPEG quality of clean frames, 1-100 (default 90); degraded frames may use less")
    parser.add_argument("--degraded-fraction", type=_fraction, default=0.2,
                        help="expected fraction of degraded frames: blur, occlusion, low resolution, heavy JPEG, "
                             "misaligned box (default 0.2)")
    parser.add_argument("--train-aerial", type=_int_at_least(1), default=1,
                        help="aerial tracklets per train identity and session, from distinct capture points "
                             "(default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it holds a previous xfd-synth output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def format_summary(out: str, summary: Summary) -> str:
    rate = summary.frames / max(summary.seconds, 1e-9)
    lines = [
        f"xfd-synth: wrote {out} in {summary.seconds:.1f} s (CPU {summary.cpu_seconds:.1f} s, "
        f"{summary.workers} worker{'s' if summary.workers > 1 else ''}): {summary.tracklets} tracklets, "
        f"{summary.frames} frames ({rate:.0f} frames/s), {summary.bytes / 1e6:.1f} MB",
        f"  {'split':<32} {'ids':>5} {'tracklets':>9} {'frames':>8} {'MB':>7}",
    ]
    for name, stats in sorted(summary.splits.items()):
        lines.append(f"  {name:<32} {len(stats.identities):>5} {stats.tracklets:>9} {stats.frames:>8} "
                     f"{stats.bytes / 1e6:>7.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # cross-argument rules live in SynthConfig, for library callers too
        config = SynthConfig(ids=args.ids, test_ids=args.test_ids, seed=args.seed, min_frames=args.min_frames,
                             max_frames=args.max_frames, jpeg_quality=args.quality,
                             degraded_fraction=args.degraded_fraction, train_aerial=args.train_aerial)
    except ValueError as error:
        parser.error(str(error))
    try:
        summary = generate(config, args.out, workers=args.workers, overwrite=args.overwrite,
                           progress=not args.no_progress)
    except OutputExistsError as error:
        print(f"xfd-synth: error: {error}", file=sys.stderr)
        return 1
    print(format_summary(args.out, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
