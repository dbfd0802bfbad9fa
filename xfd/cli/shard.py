"""`xfd-shard`: turn a dataset (DetReIDX, MARS, G2A-VReID v1/v2) into WebDataset shard sets, or verify them."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..data.errors import ON_ERROR_POLICIES, DataError
from ..data.layouts import LAYOUTS
from ..data.metadata import CAMID_RULES
from ..data.output import DiskFullError
from ..data.shard import ShardOptions, shard_dataset
from ..data.summary import format_summary, rows_from_manifests
from ..data.verify import verify_dataset


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 256x128, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError("resize dimensions must be positive")
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xfd-shard",
        description="Write one WebDataset shard set per split (one sample per tracklet), or --verify shard sets.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="SRC OUT to shard; OUT alone with --verify")
    parser.add_argument("--verify", action="store_true", help="re-check sha256s and every frame's JPEG validity")
    parser.add_argument("--layout", choices=("auto",) + LAYOUTS, default="auto")
    parser.add_argument("--val-ids", type=int, default=0, help="hold out N train identities as a val/ split")
    parser.add_argument("--val-seed", type=int, default=0, help="seed choosing the held-out identities")
    parser.add_argument("--max-frames", type=int, default=64,
                        help="subsample longer tracklets evenly to this many frames (0 keeps all)")
    parser.add_argument("--shard-size", type=float, default=256.0, metavar="MB", help="target shard size")
    parser.add_argument("--shard-samples", type=int, default=None, metavar="N", help="at most N tracklets a shard")
    parser.add_argument("--resize", type=_size, default=None, metavar="HxW",
                        help="re-encode frames at this size (default: copy JPEG bytes unchanged)")
    parser.add_argument("--camid-rule", choices=CAMID_RULES, default="capture-point",
                        help="DetReIDX camera ids for the junk rule (see data_shards/README.md)")
    parser.add_argument("--aerial-camera", type=int, default=2, help="G2A-VReID camera number of the UAV")
    parser.add_argument("--on-error", choices=ON_ERROR_POLICIES, default="raise",
                        help="raise: stop at the first bad item; skip: leave it out, count and list it in the manifest")
    parser.add_argument("--unlabelled", action="store_true",
                        help="the query/gallery splits are anonymised (e.g. a challenge test set): accept any tracklet "
                             "folder names, record the pid as unknown (null), keep whatever the frame names say and "
                             "count what they do not; train is always read as labelled")
    parser.add_argument("--follow-symlinks", action="store_true",
                        help="read frames and folders that are links leading out of SRC (refused by default); the "
                             "manifests record each resolved path")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--resume", action="store_true", help="keep shards whose sha256 and plan match the manifest")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT when it is an earlier xfd-shard output (only xfd-shard's files are deleted); "
                             "OUT may never be, contain or lie inside SRC")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    try:
        if args.verify:
            if len(args.paths) != 1:
                parser.error("--verify takes one path: the output folder of xfd-shard")
            return _verify(Path(args.paths[0]), args)
        if len(args.paths) != 2:
            parser.error("expected SRC OUT")
        options = ShardOptions(
            layout=args.layout, max_frames=args.max_frames, shard_size_mb=args.shard_size,
            shard_samples=args.shard_samples, resize=args.resize, camid_rule=args.camid_rule,
            aerial_camera=args.aerial_camera, val_ids=args.val_ids, val_seed=args.val_seed, on_error=args.on_error,
            unlabelled=args.unlabelled, follow_symlinks=args.follow_symlinks,
        )
        started = time.perf_counter()
        result = shard_dataset(Path(args.paths[0]), Path(args.paths[1]), options, workers=args.workers,
                               resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except (DataError, ValueError, FileExistsError, DiskFullError) as error:
        print(f"xfd-shard: error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    print(format_summary(rows_from_manifests(result.manifests)))
    print(f"layout {result.layout}: {result.written} shards written, {result.reused} reused, {seconds:.1f} s")
    return 0


def _verify(root: Path, args) -> int:
    try:
        reports = verify_dataset(root, workers=args.workers, progress=not args.no_progress)
    except DataError as error:
        print(f"xfd-shard: error: {error}", file=sys.stderr)
        return 2
    print(format_summary(reports))
    problems = [p for report in reports for p in report.problems]
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    print("verify: all shards match their manifests and every frame decodes" if not problems
          else f"verify: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
