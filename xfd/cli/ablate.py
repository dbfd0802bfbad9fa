"""`make ablate` / `xfd-ablate`: the paper's Table 6 ablation, re-run on the synthetic benchmark.

Each row adds one component to the row above it (cumulative, as in paper 001's Table 6), is trained with the
documented command (`deepspeed --num_gpus R launcher/train.py --deepspeed ds_configs/zero2.json`) and evaluated
with `launcher/evaluate.py --rerank` (which reports plain and re-ranked metrics, so the re-ranking rows need no
training of their own). The table gives every row's per-protocol mAP, the mean of the three and the change
against the baseline; OUT/ablation.md and OUT/ablation.json keep it with the date and settings.

    baseline             ViT-B-like: PBP of length 1, no metadata, mean pooling, BNNeck, IFA + CFAA adapters;
                         the pretrained recipe's optimisation (stage-2 LR 3e-4, backbone at 0.1x)
    + optimisation       the random-init tiny model's optimisation (stage-2 LR 1e-3, backbone at 1x)
    + re-ranking         the same model, k-reciprocal re-ranking (k1 28, k2 6, lambda 0.28)
    + temporal attention attention pooling over frames
    + metadata           altitude / distance / angle embeddings on the prompts and the CLS token
    + QATW               quality-aware temporal weighting (metadata-gated attention)
    full                 PBP of length 2: the config as given (tiny.yaml)

On GPUs the same command scales by config: `xfd-ablate --data SHARDS --config xfd_vitl14.yaml --ranks 8` with the
rows' overrides applied on top of it (the baseline row's overrides then describe its ViT-B-like departures).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from xfd.atomic import write_bytes_atomic, write_json_atomic

from . import demo
from . import evaluate as evaluate_cli


@dataclass(frozen=True)
class Variant:
    """One row of the table: the training run it reads (`run`) and whether its metrics are re-ranked."""

    name: str
    run: str  # folder name under OUT/runs; rows that only change evaluation share the run of the row above
    overrides: tuple[str, ...]  # training config overrides, cumulative (everything of the rows above)
    reranked: bool


_BASELINE = ("model.prompts.length=1", "model.metadata.enabled=false", "model.temporal.pooling=mean",
             "model.head.neck=bnneck", "train.stage2.lr=3e-4", "model.finetune.backbone_lr_scale=0.1")


def variants() -> list[Variant]:
    """Table 6's rows, each adding one change to the one above."""
    rows, overrides = [], list(_BASELINE)

    def add(name: str, run: str, changes: tuple[str, ...] = (), reranked: bool = True) -> None:
        overrides.extend(changes)
        rows.append(Variant(name, run, tuple(overrides), reranked))

    add("baseline", "baseline", reranked=False)
    add("+ optimisation", "optimisation", ("train.stage2.lr=1e-3", "model.finetune.backbone_lr_scale=1.0"),
        reranked=False)
    add("+ re-ranking", "optimisation")
    add("+ temporal attention", "temporal_attention", ("model.temporal.pooling=attention",))
    add("+ metadata", "metadata", ("model.metadata.enabled=true",))
    add("+ QATW", "qatw", ("model.temporal.pooling=qatw",))
    add("full", "full", ("model.prompts.length=2",))
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xfd-ablate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("ablation_out"), help="output folder")
    parser.add_argument("--data", type=Path, default=None,
                        help="an existing xfd-shard folder (default: synthesise one as the demo does, in OUT/shards)")
    demo.add_data_arguments(parser)
    parser.add_argument("--ranks", type=int, default=2, help="training processes (GPUs, or CPU ranks)")
    parser.add_argument("--deepspeed-config", default="ds_configs/zero2.json")
    parser.add_argument("--config", default="tiny.yaml", help="experiment config every row starts from")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the runs of OUT/runs that finished (their eval/report.json exists)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"overrides for every row, before the row's own (default: "
                             f"{' '.join(demo.DEMO_OVERRIDES)})")
    return parser


def train_and_evaluate(args, variant: Variant, shards: Path, run: Path) -> dict[str, float]:
    """Train `variant` into RUN and evaluate it (plain and re-ranked); returns the seconds of each part."""
    if args.reuse and (run / "eval" / "report.json").is_file():
        print(f"\n== {variant.run}: reusing {run}", flush=True)
        return {}
    seconds = {}
    if not (args.reuse and (run / "summary.json").is_file()):  # summary.json: the training finished
        if run.exists():
            shutil.rmtree(run)
        settings = argparse.Namespace(ranks=args.ranks, deepspeed_config=args.deepspeed_config, config=args.config,
                                      overrides=[*args.overrides, *variant.overrides])
        seconds["train"] = demo.train(settings, shards, run)
    started = time.perf_counter()
    status = evaluate_cli.main(["--checkpoint", str(run / "model.safetensors"), "--data", str(shards),
                                "--output", str(run / "eval"), "--rerank"])
    if status:
        raise SystemExit(f"xfd-ablate: evaluating {run} failed with status {status}")
    seconds["evaluate"] = time.perf_counter() - started
    return seconds


def row_metrics(report: dict, reranked: bool) -> dict[str, float]:
    """Per-protocol mAP and their mean, in percent, from a launcher/evaluate.py report."""
    source = report["reranked"] if reranked else report
    row = {name: 100.0 * metrics["mAP"] for name, metrics in source["protocols"].items()}
    row["mean"] = 100.0 * source["mean"]["mAP"]
    return row


def ablation_table(rows: list[dict]) -> str:
    """Markdown: one line per variant, per-protocol mAP, the mean and its change against the first row."""
    protocols = [name for name in rows[0]["mAP"] if name != "mean"]
    header = "| variant | " + " | ".join(f"{p} mAP" for p in protocols) + " | mean mAP | Δ |"
    lines = [header, "|---|" + "---:|" * (len(protocols) + 2)]
    base = rows[0]["mAP"]["mean"]
    for row in rows:
        cells = " | ".join(f"{row['mAP'][p]:.2f}" for p in protocols)
        lines.append(f"| {row['variant']} | {cells} | {row['mAP']['mean']:.2f} | {row['mAP']['mean'] - base:+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.overrides = args.overrides or list(demo.DEMO_OVERRIDES)
    started = time.perf_counter()
    demo.claim_output(args.out, "xfd-ablate")  # absent, empty or an earlier ablation: nothing else is touched
    timings: dict[str, float] = {}
    if args.data is None:
        shards = args.out / "shards"
        if not (args.reuse and (shards / "dataset.json").is_file()):
            timings.update(demo.prepare_shards(args, args.out))
    else:
        shards = args.data
    rows = []
    for variant in variants():
        run = args.out / "runs" / variant.run
        if variant.run not in {r["run"] for r in rows}:  # the re-ranking row reads the run above it
            for part, seconds in train_and_evaluate(args, variant, shards, run).items():
                timings[f"{variant.run} {part}"] = seconds
        report = json.loads((run / "eval" / "report.json").read_text())
        rows.append({"variant": variant.name, "run": variant.run, "reranked": variant.reranked,
                     "overrides": list(variant.overrides), "mAP": row_metrics(report, variant.reranked)})
    table = ablation_table(rows)
    settings = {"date": dt.date.today().isoformat(), "config": args.config, "common_overrides": args.overrides,
                "data": str(shards), "ranks": args.ranks, "deepspeed_config": args.deepspeed_config,
                "synthetic": None if args.data else {"ids": args.ids, "test_ids": args.test_ids,
                                                      "val_ids": args.val_ids, "max_frames": args.max_frames,
                                                      "seed": args.seed},
                "seconds": {**timings, "total": time.perf_counter() - started}}
    write_json_atomic(args.out / "ablation.json", {"settings": settings, "rows": rows})
    heading = (f"Ablation ({settings['date']}; {args.config} + {' '.join(args.overrides)}; {args.ranks} ranks, "
               f"{args.deepspeed_config}; data {shards}; test protocols, mAP %)")
    write_bytes_atomic(args.out / "ablation.md", f"{heading}\n\n{table}\n".encode())
    print(f"\n== {heading}\n{table}\n\nablation finished in {settings['seconds']['total']:.0f} s; "
          f"{args.out / 'ablation.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
