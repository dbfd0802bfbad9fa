"""`make demo` / `xfd-demo`: the main job end to end on the built-in synthetic dataset.

Today: synthesise an aerial-ground video ReID dataset (xfd-synth) → shard it (xfd-shard, with a held-out val
split) → verify every shard and frame → print the per-split summary. Training and evaluation steps join here as
they land; the command's name does not change.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from . import shard as shard_cli
from . import synth as synth_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xfd-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="run folder (replaced on each run)")
    parser.add_argument("--ids", type=int, default=64, help="training identities to synthesise")
    parser.add_argument("--test-ids", type=int, default=32, help="test identities (query/gallery of each case)")
    parser.add_argument("--val-ids", type=int, default=8, help="train identities held out as the val split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--shard-size", type=float, default=16.0, metavar="MB",
                        help="small shards so that ranks and loader workers each get several")
    return parser


def _step(title: str, function, argv: list[str]) -> float:
    print(f"\n== {title}: {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    status = function(argv)
    if status:
        raise SystemExit(f"xfd-demo: step '{title}' failed with status {status}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    raw, shards = args.out / "synthetic", args.out / "shards"
    workers = str(args.workers)
    timings = {
        "synthesise": _step("synthesise", synth_cli.main, [
            str(raw), "--ids", str(args.ids), "--test-ids", str(args.test_ids), "--seed", str(args.seed),
            "--workers", workers]),
        "shard": _step("shard", shard_cli.main, [
            str(raw), str(shards), "--val-ids", str(args.val_ids), "--shard-size", str(args.shard_size),
            "--workers", workers]),
        "verify": _step("verify", shard_cli.main, ["--verify", str(shards), "--workers", workers]),
    }
    print("\n== demo finished: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
          + f"; shards in {shards}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
