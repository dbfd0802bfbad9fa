"""`make demo` / `xfd-demo`: the main job end to end on the built-in synthetic dataset.

synthesise an aerial-ground video ReID dataset (xfd-synth) → shard it (xfd-shard, with a held-out val split) →
verify every shard and frame → train the tiny config with 2 ranks under ZeRO-2 (`deepspeed --num_gpus 2
launcher/train.py --deepspeed ds_configs/zero2.json`, gloo on CPU when there is no GPU) → evaluate the untrained
and the trained model on the A2G / G2A / A2A test protocols → print both tables; the run folder keeps the
checkpoints, model files, curves (plots/*.png), TensorBoard/CSV monitor logs and the evaluation reports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..atomic import write_json_atomic
from . import evaluate as evaluate_cli
from . import shard as shard_cli
from . import synth as synth_cli

REPO_LAUNCHER = Path(__file__).resolve().parents[2] / "launcher" / "train.py"
# The tiny model starts from random weights: freezing its backbone blocks would freeze noise.
DEMO_OVERRIDES = ["model.finetune.freeze_backbone=false"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xfd-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"),
                        help="output folder: absent, empty or an earlier demo output (then replaced; with "
                             "--skip-training its trained run/ is kept); anything else is refused")
    add_data_arguments(parser)
    parser.add_argument("--ranks", type=int, default=2, help="training processes (GPUs, or CPU ranks)")
    parser.add_argument("--deepspeed-config", default="ds_configs/zero2.json")
    parser.add_argument("--config", default="tiny.yaml", help="experiment config of the training step")
    parser.add_argument("--skip-training", action="store_true", help="stop after sharding (the data steps only)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"training config overrides (default: {' '.join(DEMO_OVERRIDES)})")
    return parser


def _step(title: str, function, argv: list[str]) -> float:
    print(f"\n== {title}: {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    status = function(argv)
    if status:
        raise SystemExit(f"xfd-demo: step '{title}' failed with status {status}")
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def training_command(args, shards: Path, run: Path) -> list[str]:
    """The documented command; `--module xfd.cli.train` where xfd is installed without its launcher/ folder."""
    launcher = Path(sys.executable).parent / "deepspeed"
    entry = [str(REPO_LAUNCHER)] if REPO_LAUNCHER.is_file() else ["--module", "xfd.cli.train"]
    return [str(launcher) if launcher.is_file() else "deepspeed", "--num_gpus", str(args.ranks),
            "--master_port", str(free_port()), *entry, "--deepspeed", args.deepspeed_config,
            "--config", args.config, "--data", str(shards), "--output", str(run), *args.overrides]


def train(args, shards: Path, run: Path) -> float:
    command = training_command(args, shards, run)
    print(f"\n== train: {' '.join(command)}", flush=True)
    env = dict(os.environ)
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        cuda = False
    if not cuda:
        env.setdefault("DS_ACCELERATOR", "cpu")
    started = time.perf_counter()
    status = subprocess.run(command, env=env).returncode
    if status:
        raise SystemExit(f"xfd-demo: training failed with status {status} (see the output above; the run folder "
                         f"is {run})")
    return time.perf_counter() - started


def compare(untrained: dict, trained: dict) -> tuple[str, bool]:
    """A per-protocol mAP comparison of two reports' plain results (report.json["plain"]) and whether training
    beat the untrained model on every protocol."""
    lines = [f"{'protocol':<12}{'untrained mAP':>15}{'trained mAP':>13}{'gain':>8}"]
    better = True
    for name, metrics in trained["protocols"].items():
        if metrics.get("scored") is False:
            continue
        before, after = 100 * untrained["protocols"][name]["mAP"], 100 * metrics["mAP"]
        better &= after > before
        lines.append(f"{name:<12}{before:>15.2f}{after:>13.2f}{after - before:>+8.2f}")
    before, after = 100 * untrained["mean"]["mAP"], 100 * trained["mean"]["mAP"]
    lines.append(f"{'mean':<12}{before:>15.2f}{after:>13.2f}{after - before:>+8.2f}")
    return "\n".join(lines), better


def stage2_id_accuracy(run: Path) -> tuple[float, int]:
    """The ID classifier's mean batch accuracy over stage 2's last epoch (scalars.csv) and the number of classes,
    to read against chance (1 / classes)."""
    from ..config import load_config
    from ..plots import read_scalar_rows

    rows = [row for row in read_scalar_rows(run / "scalars.csv") if row["stage"] == 2 and row["name"] == "acc"]
    if not rows:
        raise ValueError(f"{run / 'scalars.csv'}: no stage-2 accuracy logged")
    last = max(row["epoch"] for row in rows)
    values = [row["value"] for row in rows if row["epoch"] == last]
    return sum(values) / len(values), load_config(run / "config.yaml").model.num_classes


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The synthetic dataset's options (shared with xfd-ablate)."""
    parser.add_argument("--ids", type=int, default=256,
                        help="training identities to synthesise (a random-init model needs many to generalise)")
    parser.add_argument("--test-ids", type=int, default=32, help="test identities (query/gallery of each case)")
    parser.add_argument("--val-ids", type=int, default=16, help="train identities held out as the val split")
    parser.add_argument("--max-frames", type=int, default=48, help="longest synthetic tracklet (frames)")
    parser.add_argument("--train-aerial", type=int, default=2,
                        help="aerial tracklets per train identity and session (distinct capture points)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--shard-size", type=float, default=16.0, metavar="MB",
                        help="small shards so that ranks and loader workers each get several")


def claim_output(out: Path, tool: str = "xfd-demo") -> None:
    """Make `out` the output folder of `tool`: it must be absent, empty or an earlier output of the same tool
    (its marker file `.<tool>`, written here first); anything else — a trained run, a clone, a home folder — is
    refused, naming the folder, and left untouched."""
    marker = out / f".{tool}"
    if out.exists() and not out.is_dir():
        raise SystemExit(f"{tool}: error: {out} exists and is not a folder; pass another --out")
    if out.exists() and any(out.iterdir()) and not marker.is_file():
        raise SystemExit(f"{tool}: error: {out} is not empty and is not an earlier {tool} output (no {marker.name} "
                         "file): refusing to replace anything in it; pass another --out (or empty it yourself)")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, {"tool": tool})


def prepare_shards(args, out: Path) -> dict[str, float]:
    """Synthesise OUT/synthetic, shard it into OUT/shards (with the val split) and verify every frame;
    returns each step's seconds. An earlier demo's data is replaced by the tools themselves (`--overwrite`
    replaces only their own outputs)."""
    raw, shards, workers = out / "synthetic", out / "shards", str(args.workers)
    return {
        "synthesise": _step("synthesise", synth_cli.main, [
            str(raw), "--ids", str(args.ids), "--test-ids", str(args.test_ids), "--seed", str(args.seed),
            "--min-frames", str(min(24, args.max_frames)), "--max-frames", str(args.max_frames),
            "--train-aerial", str(args.train_aerial), "--workers", workers, "--no-progress", "--overwrite"]),
        "shard": _step("shard", shard_cli.main, [
            str(raw), str(shards), "--val-ids", str(args.val_ids), "--shard-size", str(args.shard_size),
            "--workers", workers, "--overwrite"]),
        "verify": _step("verify", shard_cli.main, ["--verify", str(shards), "--workers", workers]),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.overrides = args.overrides or list(DEMO_OVERRIDES)
    claim_output(args.out)
    shards, run = args.out / "shards", args.out / "run"
    timings = prepare_shards(args, args.out)
    if args.skip_training and run.exists():
        print(f"\n== kept the earlier trained run {run} (--skip-training does not touch it)", flush=True)
    if not args.skip_training:
        if run.exists():
            shutil.rmtree(run)  # an earlier demo's run, inside a folder claim_output showed to be the demo's
        timings["train"] = train(args, shards, run)
        timings["evaluate untrained"] = _step("evaluate the untrained model", evaluate_cli.main, [
            "--untrained", "--config", args.config, "--data", str(shards), "--output", str(run / "eval-untrained"),
            *args.overrides])
        timings["evaluate trained"] = _step("evaluate the trained model", evaluate_cli.main, [
            "--checkpoint", str(run / "model.safetensors"), "--data", str(shards), "--output", str(run / "eval"),
            "--rerank"])
        untrained = json.loads((run / "eval-untrained" / "report.json").read_text())["plain"]
        trained = json.loads((run / "eval" / "report.json").read_text())["plain"]
        table, better = compare(untrained, trained)
        accuracy, classes = stage2_id_accuracy(run)
        print(f"\n== stage-2 ID accuracy over the last epoch: {accuracy:.3f} ({classes} identities: chance "
              f"{1 / classes:.4f})")
        print("\n== trained vs untrained (test protocols, no re-ranking)\n" + table)
        if not better:
            print("xfd-demo: WARNING: training did not beat the untrained model on every protocol", flush=True)
        print(f"\nreport: {run / 'eval'} (table.md, report.json, per_query.npz, cmc.png, conditions.png, ranklist.png, "
              "submission.csv, features/); "
              f"curves: {run / 'plots'}; TensorBoard: tensorboard --logdir {run / 'monitor'}")
    print("\n== demo finished: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
          + f"; total {sum(timings.values()):.1f} s; output in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
