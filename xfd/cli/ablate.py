"""`make ablate` / `xfd-ablate`: the paper's Table 6 ablation, re-run on the synthetic benchmark.

Each row adds one component to the row above it (cumulative, as in paper 001's Table 6), is trained with the
documented command (`deepspeed --num_gpus R launcher/train.py --deepspeed ds_configs/zero2.json`) and evaluated
with `launcher/evaluate.py --rerank` (which reports plain and re-ranked metrics, so the re-ranking rows need no
training of their own). The table gives every row's per-protocol mAP, the mean of the three with its 95 %
bootstrap interval over queries, the change against the baseline, and the change against the row above with its
interval and p-value from a paired bootstrap over the same test queries (`xfd.eval.compare`): a row whose change
is significant (p < 0.05) is marked *. `--seeds N` repeats the whole ablation with training seeds 0..N-1 and adds
a table across seeds (mean ± standard deviation, and in how many seeds each change was significant).
OUT/ablation.md and OUT/ablation.json keep the tables with the date and settings.

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

import numpy as np

from xfd.atomic import write_bytes_atomic, write_json_atomic
from xfd.eval.bootstrap import BootstrapOptions
from xfd.eval.compare import SIGNIFICANCE, compare_sections

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
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="repeat the ablation with training seeds 0..N-1 (train.seed) and report across them")
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


def row_section(report: dict, reranked: bool) -> dict:
    """The results a row reads from a launcher/evaluate.py report: re-ranked or plain."""
    return report["reranked" if reranked else "plain"]


def row_metrics(section: dict) -> dict[str, float]:
    """Per-protocol mAP and their mean, in percent, with the mean's 95 % interval (`mean_ci`)."""
    row = {name: 100.0 * m["mAP"] for name, m in section["protocols"].items() if m.get("scored", True)}
    row["mean"] = 100.0 * section["mean"]["mAP"]
    row["mean_ci"] = [100.0 * v for v in section["mean"]["ci"]["mAP"]]
    return row


def change_to_above(above: dict, section: dict) -> dict:
    """The paired bootstrap of this row's mean mAP against the row above's (percent): Δ, its interval, p."""
    comparisons = compare_sections(above, section, BootstrapOptions())
    overall = [c for c in comparisons if c.name.startswith("mean of")]
    diff = (overall or comparisons)[0].diffs["mAP"]  # the mean of the protocols; one protocol: its own
    return {"delta": 100.0 * diff.delta, "ci": [100.0 * diff.interval.low, 100.0 * diff.interval.high],
            "p_value": diff.p_value, "significant": diff.p_value < SIGNIFICANCE}


def ablation_table(rows: list[dict]) -> str:
    """Markdown: one line per variant — per-protocol mAP, the mean with its interval, the change against the
    first row, and the change against the row above with its interval and p-value (* when p < 0.05)."""
    protocols = [name for name in rows[0]["mAP"] if name not in ("mean", "mean_ci")]
    header = ("| variant | " + " | ".join(f"{p} mAP" for p in protocols)
              + " | mean mAP (95% CI) | Δ vs baseline | Δ vs row above (95% CI) | p |")
    lines = [header, "|---|" + "---:|" * (len(protocols) + 4)]
    base = rows[0]["mAP"]["mean"]
    for row in rows:
        cells = " | ".join(f"{row['mAP'][p]:.2f}" for p in protocols)
        low, high = row["mAP"]["mean_ci"]
        change = row.get("above")
        above = "–" if change is None else (f"{change['delta']:+.2f} ({change['ci'][0]:+.2f}, {change['ci'][1]:+.2f})"
                                            + (" *" if change["significant"] else ""))
        p_value = "–" if change is None else f"{change['p_value']:.3f}"
        lines.append(f"| {row['variant']} | {cells} | {row['mAP']['mean']:.2f} ({low:.2f}–{high:.2f}) | "
                     f"{row['mAP']['mean'] - base:+.2f} | {above} | {p_value} |")
    lines.append(f"\n* the change against the row above is significant (p < {SIGNIFICANCE}; paired bootstrap over "
                 "the same test queries, 1,000 resamples).")
    return "\n".join(lines)


def seeds_table(per_seed: list[list[dict]]) -> str:
    """Markdown across seeds: each row's mean mAP and its change against the row above as mean ± standard
    deviation over the seeds, and in how many seeds that change was significant."""
    n = len(per_seed)
    lines = [f"| variant | mean mAP (mean ± sd, {n} seeds) | Δ vs row above (mean ± sd) | significant Δ (seeds) |",
             "|---|---:|---:|---:|"]
    for i, row in enumerate(per_seed[0]):
        means = np.array([rows[i]["mAP"]["mean"] for rows in per_seed])
        cells = [f"{means.mean():.2f} ± {means.std(ddof=1) if n > 1 else 0.0:.2f}"]
        if i == 0:
            cells += ["–", "–"]
        else:
            deltas = np.array([rows[i]["above"]["delta"] for rows in per_seed])
            significant = sum(rows[i]["above"]["significant"] for rows in per_seed)
            cells += [f"{deltas.mean():+.2f} ± {deltas.std(ddof=1) if n > 1 else 0.0:.2f}", f"{significant}/{n}"]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_ablation(args, shards: Path, runs: Path, seed_overrides: list[str], timings: dict) -> list[dict]:
    """Every row of one ablation (one training seed), with its change against the row above."""
    rows, sections = [], []
    for variant in variants():
        run = runs / variant.run
        if variant.run not in {r["run"] for r in rows}:  # the re-ranking row reads the run above it
            row_args = argparse.Namespace(**{**vars(args), "overrides": [*args.overrides, *seed_overrides]})
            for part, seconds in train_and_evaluate(row_args, variant, shards, run).items():
                timings[f"{run.relative_to(args.out)} {part}"] = seconds
        report = json.loads((run / "eval" / "report.json").read_text())
        section = row_section(report, variant.reranked)
        rows.append({"variant": variant.name, "run": variant.run, "reranked": variant.reranked,
                     "overrides": [*variant.overrides, *seed_overrides], "mAP": row_metrics(section),
                     "above": change_to_above(sections[-1], section) if sections else None})
        sections.append(section)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seeds < 1:
        raise SystemExit("xfd-ablate: --seeds must be >= 1")
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
    if args.seeds == 1:  # the single ablation trains with the config's own seed, in OUT/runs
        per_seed = [run_ablation(args, shards, args.out / "runs", [], timings)]
    else:
        per_seed = [run_ablation(args, shards, args.out / "runs" / f"seed{seed}", [f"train.seed={seed}"], timings)
                    for seed in range(args.seeds)]
    tables = [ablation_table(rows) for rows in per_seed]
    settings = {"date": dt.date.today().isoformat(), "config": args.config, "common_overrides": args.overrides,
                "data": str(shards), "ranks": args.ranks, "deepspeed_config": args.deepspeed_config,
                "seeds": args.seeds,
                "synthetic": None if args.data else {"ids": args.ids, "test_ids": args.test_ids,
                                                      "val_ids": args.val_ids, "max_frames": args.max_frames,
                                                      "seed": args.seed},
                "seconds": {**timings, "total": time.perf_counter() - started}}
    payload = {"settings": settings, "rows": per_seed[0]} if args.seeds == 1 else \
        {"settings": settings, "seeds": [{"train.seed": s, "rows": rows} for s, rows in enumerate(per_seed)]}
    write_json_atomic(args.out / "ablation.json", payload)
    heading = (f"Ablation ({settings['date']}; {args.config} + {' '.join(args.overrides)}; {args.ranks} ranks, "
               f"{args.deepspeed_config}; data {shards}; test protocols, mAP %)")
    if args.seeds == 1:
        text = f"{heading}\n\n{tables[0]}\n"
    else:
        text = (f"{heading}\n\n## Across {args.seeds} training seeds\n\n{seeds_table(per_seed)}\n"
                + "".join(f"\n## train.seed={s}\n\n{table}\n" for s, table in enumerate(tables)))
    write_bytes_atomic(args.out / "ablation.md", text.encode())
    print(f"\n== {text}\nablation finished in {settings['seconds']['total']:.0f} s; {args.out / 'ablation.md'}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
