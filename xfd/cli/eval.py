"""xfd-eval: ReID metrics (and k-reciprocal re-ranking) on saved features, per protocol and their mean.

    xfd-eval FEATURES.npz [--rerank] [--k1 28 --k2 6 --lambda 0.28] [--device auto|cpu|cuda]
             [--json OUT.json] [--csv submission.csv] [--plot cmc.png]
    xfd-eval --protocol A2G=a.npz --protocol G2A=b.npz --protocol A2A=c.npz ...

The npz format is documented in README.md ("Evaluation (xfd-eval)"). All logic lives in xfd.eval; this file only
parses arguments and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from xfd.eval.evaluate import EvalOptions, evaluate_protocol, mean_of_protocols
from xfd.eval.protocol import load_npz
from xfd.eval.metrics import AP_MODES, DEFAULT_MAX_RANK
from xfd.eval.report import format_table, plot_cmc, report_payload, submission_csv, write_report
from xfd.eval.rerank import RerankParams
from xfd.kernels.backend import DEVICES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xfd-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("features", nargs="?", help="one protocol's features (.npz); named after the file")
    p.add_argument("--protocol", action="append", default=[], metavar="NAME=PATH",
                   help="a named protocol's features (repeatable), e.g. A2G=a2g.npz")
    p.add_argument("--rerank", action="store_true", help="exact k-reciprocal re-ranking (docs/reranking.md)")
    p.add_argument("--k1", type=int, default=RerankParams.k1, help="k-reciprocal list length (default: %(default)s)")
    p.add_argument("--k2", type=int, default=RerankParams.k2, help="local query expansion (default: %(default)s)")
    p.add_argument("--lambda", dest="lam", type=float, default=RerankParams.lam,
                   help="weight of the original distance (default: %(default)s)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda if CuPy sees a GPU, else cpu")
    p.add_argument("--normalize", action="store_true", help="L2-normalise features (otherwise they must be)")
    p.add_argument("--ap", choices=AP_MODES, default="noninterpolated", help="AP definition (default: %(default)s)")
    p.add_argument("--max-rank", type=int, default=DEFAULT_MAX_RANK, help="CMC length (default: %(default)s)")
    p.add_argument("--block-rows", type=int, default=None, help="query rows per streamed block (default: auto)")
    p.add_argument("--json", metavar="OUT", help="write the report as JSON")
    p.add_argument("--csv", metavar="OUT", help="write the challenge submission CSV (needs q_names/g_names)")
    p.add_argument("--csv-top", type=int, default=None, metavar="N",
                   help="gallery names per CSV row (default: the whole ranked gallery)")
    p.add_argument("--plot", metavar="OUT.png",
                   help="write the CMC curves as PNG (default with --json: beside it, <json stem>_cmc.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        protocols = _load_protocols(args)
        results = _evaluate_all(protocols, args)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"xfd-eval: error: {error}", file=sys.stderr)
        return 2
    mean = mean_of_protocols(results)
    print(format_table(results, mean))
    if args.json:
        write_report(args.json, report_payload(results, mean, _settings(args)))
    plot_path = args.plot or (_beside(args.json, "_cmc.png") if args.json else None)
    if plot_path:
        plot_cmc(plot_path, results)
    return 0


def _load_protocols(args) -> list:
    sources = [(None, args.features)] if args.features else []
    for spec in args.protocol:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--protocol takes NAME=PATH, got {spec!r}")
        sources.append((name, path))
    if not sources:
        raise ValueError("give a features file or at least one --protocol NAME=PATH")
    protocols = [load_npz(path, name) for name, path in sources]
    names = [p.name for p in protocols]
    if len(set(names)) != len(names):
        raise ValueError(f"protocol names must be distinct, got {names}")
    if args.csv and not all(p.has_names for p in protocols):
        raise ValueError("--csv needs q_names and g_names in every features file")
    if args.csv_top is not None and args.csv_top < 1:
        raise ValueError(f"--csv-top must be >= 1, got {args.csv_top}")
    return protocols


def _evaluate_all(protocols, args) -> dict:
    options = EvalOptions(
        rerank=RerankParams(args.k1, args.k2, args.lam) if args.rerank else None,
        device=args.device, normalize=args.normalize, ap_mode=args.ap, max_rank=args.max_rank,
        block_rows=args.block_rows, progress=not args.no_progress)
    csv_context = submission_csv(args.csv, args.csv_top) if args.csv else contextlib.nullcontext()
    results = {}
    with csv_context as writer:
        for data in protocols:
            on_block = None
            if writer is not None:
                def on_block(indices, block, data=data):
                    writer.add_block(data.name, data.q_names[indices], data.g_names, block)
            results[data.name] = evaluate_protocol(data, options, on_block)
    return results


def _beside(path: str, suffix: str) -> Path:
    path = Path(path)
    return path.with_name(path.stem + suffix)


def _settings(args) -> dict:
    return {
        "rerank": {"k1": args.k1, "k2": args.k2, "lambda": args.lam} if args.rerank else None,
        "device": args.device, "normalize": args.normalize, "ap_mode": args.ap, "max_rank": args.max_rank,
        "distance": "k-reciprocal (squared Euclidean base)" if args.rerank else "cosine (1 - cos)",
    }


if __name__ == "__main__":
    sys.exit(main())
