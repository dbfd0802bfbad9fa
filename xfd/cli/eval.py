"""xfd-eval: ReID metrics (and k-reciprocal re-ranking) on saved features, per protocol, their mean and pooled.

    xfd-eval FEATURES.npz [--rerank] [--k1 28 --k2 6 --lambda 0.28] [--device auto|cpu|cuda]
             [--json OUT.json] [--csv submission.csv] [--plot cmc.png] [--per-query OUT.npz]
    xfd-eval --protocol A2G=a.npz --protocol G2A=b.npz --protocol A2A=c.npz ...
    xfd-eval --check-submission submission.csv (--protocol NAME=PATH ... | --data SHARDS) [--csv-top 10]
    xfd-eval compare A.json B.json [--ranking final|plain|reranked] [--resamples 1000] [--seed 0]
    torchrun --nproc_per_node N --no-python xfd-eval --protocol ... --rerank ...   # scoring shared over N ranks

The npz format and the outputs are documented in README.md ("Evaluation (xfd-eval)"). All logic lives in xfd.eval
(one API: `xfd.eval.score`; one report writer: `xfd.eval.report`); this file only parses arguments and prints.
Launched as ranks (`torchrun`, `deepspeed`), every rank reads the same features files and takes its share of the
distances, the re-ranking and the metrics (the process group starts as in launcher/evaluate.py); the results are
those of one process, and rank 0 alone prints and writes the outputs.
Exit status: 0 done (or a valid submission), 1 an invalid submission, 2 bad input or options (ranks given
different features or parameters included), 3 another rank failed, died or stalled (the message names it).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from xfd.distributed import launched_as_ranks, rank_label
from xfd.eval.bootstrap import BootstrapOptions
from xfd.eval.compare import RANKINGS, compare_sections, comparison_table, report_section
from xfd.eval.metrics import AP_MODES, DEFAULT_MAX_RANK
from xfd.eval.protocol import load_npz
from xfd.eval.report import Evaluation, ReportFiles, markdown_report, write_outputs, write_summaries
from xfd.eval.rerank import RerankParams
from xfd.eval.rerank_team import RankFailure, RankTeam
from xfd.eval.score import DEFAULT_TOP, ScoreOptions, score
from xfd.eval.submission import SubmissionCase, check_submission, ordered_cases
from xfd.kernels.backend import DEVICES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xfd-eval", description=__doc__.split("\n\n")[0],
                                epilog="xfd-eval compare A.json B.json --help: the paired comparison's options")
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
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the queries for the 95%% "
                                                                "intervals (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.add_argument("--json", metavar="OUT", help="write the report as JSON (with per-query values)")
    p.add_argument("--markdown", metavar="OUT.md", help="write the printed tables as markdown")
    p.add_argument("--csv", metavar="OUT", help="write the challenge submission CSV (needs q_names/g_names)")
    p.add_argument("--csv-top", type=int, default=DEFAULT_TOP, metavar="N",
                   help="gallery names per CSV row (default: %(default)s, the challenge's)")
    p.add_argument("--per-query", metavar="OUT.npz", help="write per-query AP / INP / first-match rank / best rows")
    p.add_argument("--plot", metavar="OUT.png",
                   help="write the CMC curves as PNG (default with --json: beside it, <json stem>_cmc.png)")
    p.add_argument("--conditions-plot", metavar="OUT.png",
                   help="write mAP against the query's distance and altitude (needs metadata columns)")
    p.add_argument("--check-submission", metavar="CSV",
                   help="validate a submission against the --protocol files or --data SHARDS, then exit")
    p.add_argument("--data", type=Path, metavar="SHARDS",
                   help="with --check-submission: an xfd-shard folder (its test protocols' names)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def build_compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xfd-eval compare",
                                description="Paired bootstrap of B − A over the same queries: Δ mAP and Δ rank-1 "
                                            "with 95%% intervals and p-values per protocol, the mean and pooled.")
    p.add_argument("a", type=Path, help="report.json A (xfd-eval --json or launcher/evaluate.py)")
    p.add_argument("b", type=Path, help="report.json B, of the same queries")
    p.add_argument("--ranking", choices=RANKINGS, default="final",
                   help="which results of each report: final (re-ranked when there is one), plain or reranked")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.add_argument("--json", metavar="OUT", help="write the comparison as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.check_submission:
            return _check(args)
        with _ranks() as team:
            protocols = _load_protocols(args)
            evaluation = _evaluate(protocols, args, team)
        if team is not None and team.rank != 0:
            return 0  # rank 0 prints and writes
        files = ReportFiles(json=_path(args.json), markdown=_path(args.markdown), per_query=_path(args.per_query),
                            submission=_path(args.csv), cmc=_path(args.plot or (_beside(args.json, "_cmc.png")
                                                                                if args.json else None)),
                            conditions=_path(args.conditions_plot))
        written = write_outputs(files, evaluation, args.csv_top)
        payload = write_summaries(files, evaluation, title="xfd-eval", notes=written.warnings)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"xfd-eval: error{rank_label()}: {error}", file=sys.stderr)
        return 3 if isinstance(error, RankFailure) else 2
    print(markdown_report(evaluation, "xfd-eval", "", payload["warnings"]))
    for warning in payload["warnings"]:
        print(f"xfd-eval: warning: {warning}", file=sys.stderr)
    return 0


def compare_main(argv: list[str]) -> int:
    args = build_compare_parser().parse_args(argv)
    try:
        if args.resamples < 1:
            raise ValueError(f"--resamples must be >= 1, got {args.resamples}")
        sections = [report_section(_read_json(path), args.ranking, str(path)) for path in (args.a, args.b)]
        comparisons = compare_sections(*sections, BootstrapOptions(args.resamples, args.seed), str(args.a),
                                       str(args.b))
    except (ValueError, OSError) as error:
        print(f"xfd-eval compare: error: {error}", file=sys.stderr)
        return 2
    print(f"B − A, A = {args.a}, B = {args.b} ({args.ranking} results)\n")
    print(comparison_table(comparisons))
    if args.json:
        from xfd.atomic import write_json_atomic

        write_json_atomic(args.json, {"a": str(args.a), "b": str(args.b), "ranking": args.ranking,
                                      "comparisons": [c.to_dict() for c in comparisons]})
    return 0


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON report ({error})") from None


def _sources(args) -> list[tuple[str | None, str]]:
    sources = [(None, args.features)] if args.features else []
    for spec in args.protocol:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--protocol takes NAME=PATH, got {spec!r}")
        sources.append((name, path))
    return sources


def _load_protocols(args) -> list:
    sources = _sources(args)
    if not sources:
        raise ValueError("give a features file or at least one --protocol NAME=PATH")
    protocols = [load_npz(path, name) for name, path in sources]
    names = [p.name for p in protocols]
    if len(set(names)) != len(names):
        raise ValueError(f"protocol names must be distinct, got {names}")
    if args.csv and not all(p.has_names for p in protocols):
        raise ValueError("--csv needs q_names and g_names in every features file")
    if args.csv_top < 1:
        raise ValueError(f"--csv-top must be >= 1, got {args.csv_top}")
    return protocols


@contextmanager
def _ranks() -> Iterator[RankTeam | None]:
    """The ranks that share the scoring when launched as ranks (the process group started as launcher/evaluate.py
    starts it, and closed on exit); None in a plain run."""
    if not launched_as_ranks():
        yield None
        return
    from xfd.cli.evaluate import evaluation_context  # DeepSpeed's start-up: only when launched as ranks

    with evaluation_context(Path.cwd()) as ctx:
        yield RankTeam() if ctx.world_size > 1 else None


def _evaluate(protocols: list, args, team: RankTeam | None = None) -> Evaluation:
    options = ScoreOptions(
        rerank=RerankParams(args.k1, args.k2, args.lam) if args.rerank else None,
        device=args.device, normalize=args.normalize, ap_mode=args.ap, max_rank=args.max_rank,
        block_rows=args.block_rows, top=max(args.csv_top, DEFAULT_TOP),
        bootstrap=BootstrapOptions(args.resamples, args.seed),
        progress=not args.no_progress and (team is None or team.rank == 0))
    results = score(protocols, options, team=team)
    settings = {"features": {p.name: path for p, (_, path) in zip(protocols, _sources(args))},
                "device": args.device, "normalize": args.normalize}
    return Evaluation({p.name: p for p in protocols}, {results.ranking: results}, settings)


def _check(args) -> int:
    """--check-submission: 0 and a one-line summary when the CSV is valid, 1 and every problem when not."""
    if args.data is not None:
        if _sources(args):
            raise ValueError("--check-submission takes --protocol files or --data SHARDS, not both")
        from xfd.eval.shard_protocols import shard_cases  # reads shards (data package), only here

        cases = shard_cases(args.data)
    else:
        protocols = {p.name: p for p in _load_protocols(args)}
        cases = [SubmissionCase.from_protocol(protocols[name]) for name in ordered_cases(protocols)]
    problems = check_submission(args.check_submission, cases, args.csv_top)
    if problems:
        print(f"{args.check_submission}: NOT a valid submission ({len(problems)} problem(s)):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    rows = sum(len(c.queries) for c in cases)
    print(f"{args.check_submission}: valid submission: {rows} rows, cases "
          + ", ".join(f"{c.name} ({len(c.queries)} queries, {len(c.gallery)} gallery)" for c in cases))
    return 0


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _beside(path: str, suffix: str) -> Path:
    path = Path(path)
    return path.with_name(path.stem + suffix)


if __name__ == "__main__":
    sys.exit(main())
