"""Benchmark: the training step breakdown of the tiny config — how much of a step waits for data.

    python bench/train_step.py [--ids 24] [--epochs 3] [--ranks 2]

Builds a small synthetic shard set, then runs the real training command (`deepspeed --num_gpus RANKS
launcher/train.py --deepspeed ds_configs/zero2.json --config tiny.yaml`, gloo on CPU) with stage 1 cut to one
epoch and validation off, and reads the run's `scalars.csv` / `summary.json`. Baseline measured in the same run:
the loader alone (the same PK batches through the same DALI pipeline, no model) — the time a step would wait per
batch if nothing were prefetched. Printed: step time, data wait per step with prefetching, loader time per batch
without it, and their ratio to the step time (goal: wait <= 5 % of the step on CPU).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from xfd.cli import shard as shard_cli
from xfd.cli import synth as synth_cli
from xfd.cli.demo import free_port
from xfd.config import load_config
from xfd.data.index import ShardIndex
from xfd.data.loader import TrainLoader
from xfd.data.pipeline import FramePipeline
from xfd.data.pk import PKSampler
from xfd.engine.batching import stage_batch

REPO = Path(__file__).resolve().parents[1]


def loader_seconds_per_batch(shards: Path, ranks: int, batches: int) -> float:
    """The baseline: rank 0's batches produced one after another with nothing to overlap."""
    cfg = load_config("tiny.yaml")
    index = ShardIndex.open(shards / "train")
    plan = stage_batch(cfg.train, 2, ranks)
    sampler = PKSampler(index.labels_to_keys(), cfg.train.identities, cfg.train.instances, ranks, cfg.train.seed,
                        accumulation=plan.accumulation)
    pipe = FramePipeline(plan.micro, cfg.data.num_frames, tuple(cfg.model.backbone.image_size),
                         cfg.data.augment, num_threads=cfg.data.dali_threads)
    loader = TrainLoader(index, sampler, pipe, rank=0, num_frames=cfg.data.num_frames, prefetch=1)
    done, started = 0, None
    for epoch in range(1000):
        for _ in loader.batches(epoch):
            done += 1
            if done == 1:
                started = time.perf_counter()  # the first batch warms DALI up
            if done > batches:
                return (time.perf_counter() - started) / batches
    raise RuntimeError("not enough batches")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="xfd-bench-train-"))
    try:
        synth_cli.main([str(work / "raw"), "--ids", str(args.ids), "--test-ids", "2", "--no-progress"])
        shard_cli.main([str(work / "raw"), str(work / "shards"), "--shard-size", "4"])
        run = work / "run"
        env = {**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}
        command = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(args.ranks), "--master_port",
                   str(free_port()), str(REPO / "launcher/train.py"), "--deepspeed", str(REPO / "ds_configs/zero2.json"),
                   "--config", "tiny.yaml", "--data", str(work / "shards"), "--output", str(run),
                   "train.stage1.epochs=1", f"train.stage2.epochs={args.epochs}", "train.validate_every=0",
                   "train.log_every=1", "data.val_split=null"]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        rows = [r for r in csv.DictReader(open(run / "scalars.csv")) if r["stage"] == "2"]
        speed = [float(r["value"]) for r in rows if r["name"] == "speed/tracklets_per_s"][1:]  # skip warm-up
        wait_pct = [float(r["value"]) for r in rows if r["name"] == "speed/data_wait_pct"][1:]
        micro = stage_batch(load_config("tiny.yaml").train, 2, args.ranks).micro
        step_s = micro / (sum(speed) / len(speed))
        wait_s = step_s * (sum(wait_pct) / len(wait_pct)) / 100
        torch.set_num_threads(1)
        baseline_s = loader_seconds_per_batch(work / "shards", args.ranks, 8)
        summary = json.loads((run / "summary.json").read_text())
        print(f"tiny config, {args.ranks} ranks, ZeRO-2, {len(speed)} stage-2 steps measured")
        print(f"step time                       {step_s * 1000:8.1f} ms")
        print(f"data wait per step (prefetch)   {wait_s * 1000:8.1f} ms  = {100 * wait_s / step_s:5.1f} % of the step "
              f"(run summary: {100 * summary['data_wait_share']:.1f} %)")
        print(f"loader alone per batch (no overlap, baseline) {baseline_s * 1000:8.1f} ms  = "
              f"{100 * baseline_s / step_s:5.1f} % of the step")
        print(f"ratio: prefetched wait / unprefetched loader time = {wait_s / baseline_s:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
