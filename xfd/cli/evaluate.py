"""Evaluate a trained model file (or the untrained model of a config) on a shard root's test protocols, on one
device or on every rank of a `deepspeed` launch.

    deepspeed --num_gpus 2 launcher/evaluate.py --checkpoint RUN --data SHARDS --output RUN/eval [--rerank]
    python launcher/evaluate.py --checkpoint RUN/model.safetensors --data SHARDS --output RUN/eval [--rerank]
    python launcher/evaluate.py --untrained --config tiny.yaml --data SHARDS --output RUN/eval-untrained

Every rank extracts its shards of each protocol's query and gallery splits (DALI in evaluation mode: evenly
spaced L = data.num_frames frames a tracklet, or with --frames clips every frame in clips of L with the clips'
features averaged; flip TTA per eval.flip_tta) and the parts are gathered, so N ranks give exactly the features
of one process. Every rank then scores them through the evaluation API (`xfd.eval.score`, the work shared over
the ranks: distances on CuPy or NumPy, --distance-device, each rank on its own GPU; with --rerank also exact
k-reciprocal re-ranking; metrics with bootstrap intervals; the mean and the pooled figures; per-condition rows),
identically to one process. Rank 0 alone saves the features (OUTPUT/features/<protocol>.npz, the xfd-eval
format) and writes report.json, table.md, per_query.npz, submission.csv, cmc.png, conditions.png and ranklist.png
(xfd.eval.model_report), printing the tables and a one-line timing split with each rank's re-ranking seconds; the
other ranks leave once the scores are gathered. On an unlabelled split (identities unknown) it writes the
features, rankings and submission and says that metrics are unavailable. The ranks' exchanges during scoring run
over a gloo group of their own with its own timeout (`xfd.eval.rerank_team`): a rank that fails, dies or stalls
ends the run on every rank with a message naming it and the step (exit status 3). `--checkpoint RUN` (a run
folder) picks RUN/model.safetensors. `--local_rank`, which the launcher appends, is accepted (ranks come from the
environment).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from xfd.config import EVAL_FRAMES, load_config
from xfd.distributed import default_device, gather_objects, launched_as_ranks, rank_label
from xfd.eval.bootstrap import BootstrapOptions
from xfd.eval.model_report import FRAME_SAMPLING, ReportOptions, evaluate_protocols, write_model_report
from xfd.eval.rerank import RerankParams
from xfd.eval.rerank_team import RankFailure, RankTeam
from xfd.eval.shard_protocols import extract_protocols, find_protocols
from xfd.kernels.backend import DEVICES, use_gpu


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launcher/evaluate.py", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="model file written by training, or a run folder")
    source.add_argument("--untrained", action="store_true", help="the config's model as initialised (seed train.seed)")
    parser.add_argument("--config", default="tiny.yaml", help="with --untrained: the experiment config")
    parser.add_argument("--data", required=True, type=Path, help="xfd-shard output folder with test protocols")
    parser.add_argument("--output", required=True, type=Path, help="folder for the report and features/")
    parser.add_argument("--rerank", action="store_true",
                        help="also evaluate with exact k-reciprocal re-ranking; the CSV and rank list then use the "
                             "re-ranked distances")
    parser.add_argument("--k1", type=int, default=RerankParams.k1,
                        help="k-reciprocal list length (default: %(default)s)")
    parser.add_argument("--k2", type=int, default=RerankParams.k2, help="local query expansion (default: %(default)s)")
    parser.add_argument("--lambda", dest="lam", type=float, default=RerankParams.lam,
                        help="weight of the original distance (default: %(default)s)")
    parser.add_argument("--device", default=None,
                        help="plain runs: model device (default cuda when present, else cpu); not under deepspeed")
    parser.add_argument("--frames", choices=EVAL_FRAMES, default=None,
                        help="even: L evenly spaced frames a tracklet; clips: every frame in clips of L, the clips' "
                             "features averaged (default: the model config's eval.frames)")
    parser.add_argument("--distance-device", choices=DEVICES, default="auto",
                        help="distances and re-ranking (auto: CuPy on a GPU when present)")
    parser.add_argument("--ranklist-queries", type=int, default=6, help="queries in ranklist.png (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rank list's query sample")
    parser.add_argument("--csv-top", type=int, default=10, metavar="N",
                        help="gallery names per submission.csv row (default: %(default)s, the challenge's)")
    parser.add_argument("--bootstrap-resamples", type=int, default=1000, metavar="B",
                        help="resamples of the queries for the 95%% intervals (default: %(default)s)")
    parser.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="with --untrained: config overrides")
    return parser


@contextmanager
def evaluation_context(output: str | Path, device: str | None = None) -> Iterator:
    """This process's rank, world and device (an `xfd.engine.context.RunContext`) for the duration of an evaluation.

    Under the launcher (RANK / WORLD_SIZE in the environment) torch.distributed starts exactly as in training
    (`start_distributed`: NCCL on GPUs, gloo on CPU; no DeepSpeed engine, evaluation only needs the process group
    for gathering features and sharing the scoring); each rank's CuPy work runs on its own GPU; the group is
    destroyed on exit. A plain run is a world of one without a process group, on `device` (default CUDA when
    present). Both use training's CPU numerics (strict MKL reproducibility, plain CPU kernels), so one process
    gives bit-identical features to N ranks; a plain run puts the previous settings back. xfd-eval starts its
    ranks here too.
    """
    from xfd.engine.context import RunContext, start_distributed, use_reproducible_cpu_numerics

    if launched_as_ranks():
        if device is not None:
            raise ValueError(f"--device {device}: under the deepspeed launcher each rank uses its local GPU (or "
                             "the CPU with DS_ACCELERATOR=cpu); leave --device out")
        context = start_distributed(output)
        if context.cuda:
            use_gpu(context.local_rank)
        try:
            yield context
        finally:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        return
    chosen = torch.device(device) if device is not None else default_device()
    restore = use_reproducible_cpu_numerics(cpu=chosen.type == "cpu")
    try:
        yield RunContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=chosen, run_dir=Path(output))
    finally:
        restore()


def load_model(args):
    """(model, config, where it came from); a model file that does not fit its config is a ValueError."""
    from xfd.engine.checkpoint import load_trained_model
    from xfd.model import build_model

    if args.untrained:
        cfg = load_config(args.config, args.overrides)
        torch.manual_seed(cfg.train.seed)
        return build_model(cfg).eval(), cfg, f"the untrained {args.config} model"
    path = args.checkpoint / "model.safetensors" if args.checkpoint.is_dir() else args.checkpoint
    try:
        model, cfg, _ = load_trained_model(path)
    except RuntimeError as error:  # torch's strict loading: wrong shapes, named key by key
        raise ValueError(f"{path}: weights do not fit the embedded config: {error}") from error
    return model, cfg, str(path)


def evaluate(args) -> dict | None:
    """The whole evaluation on this rank; rank 0 returns the report payload, the other ranks None."""
    started = time.perf_counter()
    with evaluation_context(args.output, args.device) as ctx:
        ready = time.perf_counter()
        model, cfg, source = load_model(args)
        if args.frames is not None:
            cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, frames=args.frames))
        model.to(ctx.device)
        loaded = time.perf_counter()
        extraction = extract_protocols(
            model, args.data, num_frames=cfg.data.num_frames, batch_size=cfg.eval.batch_size,
            image_size=tuple(cfg.model.backbone.image_size), device=ctx.device, flip_tta=cfg.eval.flip_tta,
            num_threads=cfg.data.dali_threads, rank=ctx.rank, world_size=ctx.world_size, progress=ctx.is_main,
            clips=cfg.eval.frames == "clips")
        extracted = time.perf_counter()
        del model  # its memory goes to the scoring (CuPy's, on a GPU)
        if ctx.cuda:
            torch.cuda.empty_cache()
        own, busy = extraction.rank_tracklets, extraction.rank_seconds
        per_rank = gather_objects({"rank": ctx.rank, "device": str(ctx.device), "tracklets": own, "seconds": busy,
                                   "tracklets_per_s": own / busy if busy else 0.0}, ctx.world_size)
        settings = {"model": source, "data": str(args.data), "world_size": ctx.world_size,
                    "flip_tta": cfg.eval.flip_tta, "num_frames": cfg.data.num_frames,
                    "frame_sampling": FRAME_SAMPLING[cfg.eval.frames], "batch_size": cfg.eval.batch_size,
                    "image_size": list(cfg.model.backbone.image_size)}
        options = ReportOptions(rerank=RerankParams(args.k1, args.k2, args.lam) if args.rerank else None,
                                device=args.distance_device, ranklist_queries=args.ranklist_queries,
                                ranklist_seed=args.seed, csv_top=args.csv_top,
                                bootstrap=BootstrapOptions(args.bootstrap_resamples, args.bootstrap_seed))
        team = RankTeam() if ctx.world_size > 1 else None  # collective: the scoring's own gloo group
        evaluation, scoring = evaluate_protocols(extraction.protocols, options, settings, team)
        if not ctx.is_main:
            return None
    # Rank 0 alone from here (the scores are gathered; the process group is gone): the report files.
    folders = {p.name: (args.data / p.query, args.data / p.gallery) for p in find_protocols(args.data)}
    seconds = {"startup": ready - started, "load_model": loaded - ready, "extraction": extracted - loaded,
               **scoring}
    payload = write_model_report(args.output, evaluation, folders, options, seconds, per_rank, started)
    print((args.output / "table.md").read_text(), flush=True)
    for warning in payload["warnings"]:
        print(f"launcher/evaluate.py: warning: {warning}", file=sys.stderr, flush=True)
    return payload


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.overrides and not args.untrained:
        print("launcher/evaluate.py: key=value overrides apply to --untrained only", file=sys.stderr)
        return 2
    if args.ranklist_queries < 0 or args.csv_top < 1 or args.bootstrap_resamples < 1:
        print("launcher/evaluate.py: --ranklist-queries must be >= 0, --csv-top and --bootstrap-resamples >= 1",
              file=sys.stderr)
        return 2
    try:
        evaluate(args)
    except (ValueError, OSError, RankFailure) as error:  # bad model file, config or data (DataError), or another
        # rank that failed, died or stalled: each named in the message
        print(f"launcher/evaluate.py: error{rank_label()}: {error}", file=sys.stderr)
        return 3 if isinstance(error, RankFailure) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
