"""Evaluate a trained model file (or the untrained model of a config) on a shard root's test protocols.

    python launcher/evaluate.py --checkpoint RUN/model.safetensors --data SHARDS --output RUN/eval [--rerank]
    python launcher/evaluate.py --untrained --config tiny.yaml --data SHARDS --output RUN/eval-untrained

Writes report.json (every metric and the CMC curves), table.md and cmc.png into OUTPUT and prints the table.
`--checkpoint RUN` (a run folder) picks RUN/model.safetensors. One process for now; issue 6 spreads extraction
over ranks.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from xfd.atomic import write_bytes_atomic
from xfd.config import load_config
from xfd.eval.evaluate import EvalOptions
from xfd.eval.model_eval import evaluate_protocols, extract_protocols
from xfd.eval.report import format_table, plot_cmc, report_payload, write_report
from xfd.eval.rerank import RerankParams


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launcher/evaluate.py", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="model file written by training, or a run folder")
    source.add_argument("--untrained", action="store_true", help="the config's model as initialised (seed train.seed)")
    parser.add_argument("--config", default="tiny.yaml", help="with --untrained: the experiment config")
    parser.add_argument("--data", required=True, type=Path, help="xfd-shard output folder with test protocols")
    parser.add_argument("--output", required=True, type=Path, help="folder for report.json, table.md, cmc.png")
    parser.add_argument("--rerank", action="store_true", help="exact k-reciprocal re-ranking (k1 20, k2 6, lambda .3)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="with --untrained: config overrides")
    return parser


def load_model(args):
    from xfd.engine.checkpoint import load_trained_model
    from xfd.model import build_model

    if args.untrained:
        cfg = load_config(args.config, args.overrides)
        torch.manual_seed(cfg.train.seed)
        return build_model(cfg).eval(), cfg, "untrained"
    path = args.checkpoint / "model.safetensors" if args.checkpoint.is_dir() else args.checkpoint
    model, cfg, _ = load_trained_model(path)
    return model, cfg, str(path)


def evaluate(args) -> dict:
    started = time.perf_counter()
    model, cfg, source = load_model(args)
    model.to(args.device)
    data = extract_protocols(model, args.data, num_frames=cfg.data.num_frames, batch_size=cfg.eval.batch_size,
                             image_size=tuple(cfg.model.backbone.image_size), device=args.device,
                             flip_tta=cfg.eval.flip_tta, num_threads=cfg.data.dali_threads)
    extracted = time.perf_counter()
    options = EvalOptions(rerank=RerankParams() if args.rerank else None)
    results, mean = evaluate_protocols(data, options)
    table = format_table(results, mean)
    settings = {"model": source, "data": str(args.data), "rerank": args.rerank, "flip_tta": cfg.eval.flip_tta,
                "num_frames": cfg.data.num_frames,
                "seconds": {"extract": extracted - started, "metrics": time.perf_counter() - extracted}}
    payload = report_payload(results, mean, settings)
    args.output.mkdir(parents=True, exist_ok=True)
    write_report(args.output / "report.json", payload)
    write_bytes_atomic(args.output / "table.md", (f"model: {source}\n\n```\n{table}\n```\n").encode())
    plot_cmc(args.output / "cmc.png", results)
    print(table, flush=True)
    return payload


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.overrides and not args.untrained:
        print("launcher/evaluate.py: key=value overrides apply to --untrained only", file=sys.stderr)
        return 2
    evaluate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
