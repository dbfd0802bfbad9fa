"""The training entry point that `launcher/train.py` (what `deepspeed` runs) calls.

    deepspeed --num_gpus 2 launcher/train.py --deepspeed ds_configs/zero2.json \\
        --config xfd_vitl14.yaml --data data_shards/detreidx --output runs/vitl14 [--resume] [key=value ...]

`--deepspeed PATH` is ours (docs/design.md, decision 7): DeepSpeed's own `add_config_arguments` makes
`--deepspeed` a switch, so the documented command would not parse with it. `--local_rank`, which the launcher
appends, is accepted (ranks are read from the environment the launcher sets). Trailing `key=value` pairs are
dotted overrides of the experiment config (`train.stage2.epochs=10`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xfd.config import ConfigError, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launcher/train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--deepspeed", required=True, metavar="PATH",
                        help="DeepSpeed engine JSON (ds_configs/zero1.json, zero2.json, zero3.json, zero2_offload.json)")
    parser.add_argument("--config", default="xfd_vitl14.yaml",
                        help="experiment YAML: a path or a packaged name (tiny.yaml, baseline_vitb16.yaml, xfd_vitl14.yaml)")
    parser.add_argument("--data", help="xfd-shard output folder (sets data.root)")
    parser.add_argument("--output", required=True, type=Path, help="run folder: checkpoints, logs, plots, model files")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/latest")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
    try:
        cfg = load_config(args.config, overrides)
    except (ConfigError, FileNotFoundError) as err:
        print(f"launcher/train.py: {err}", file=sys.stderr)
        return 2
    from xfd.engine.train import run_training  # after argument errors, which need no torch/deepspeed import

    run_training(cfg, args.deepspeed, args.output, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
