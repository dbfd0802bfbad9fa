"""What `launcher/evaluate.py` does with the gathered features: every rank scores them without and (optionally) with
exact k-reciprocal re-ranking (`evaluate_protocols`: `xfd.eval.score`, the work shared over the ranks), then rank 0
alone saves them and writes the report folder with the one report writer (`xfd.eval.report`) plus the rank list,
which needs the shards (`write_model_report`):

    features/<protocol>.npz   the xfd-eval features format (xfd.eval.protocol), with the tracklets' metadata
    report.json, table.md     every figure (plain and re-ranked) with 95 % intervals, per-query values, the mean
                              of the protocols and the pooled figures, per-condition rows, warnings, timing split
    per_query.npz             per-query AP / INP / first-match rank / best gallery rows
    submission.csv            the challenge CSV of the final ranking (re-ranked when re-ranking is on)
    cmc.png, conditions.png   CMC curves; mAP against the query's distance and altitude
    ranklist.png              a seeded sample of queries with their best gallery tracklets (xfd.eval.ranklist)

On an unlabelled split (identities unknown) the features, rankings, submission and rank list are written and the
report says the metrics are unavailable. Distances, re-ranking (each rank's seconds, and per step), metrics and
statistics are timed apart.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from xfd.eval.bootstrap import BootstrapOptions
from xfd.eval.protocol import ProtocolData
from xfd.eval.ranklist import write_ranklist
from xfd.eval.ranklist_rows import QueryRef, ranked_queries, ranklist_rows, sample_queries
from xfd.eval.report import Evaluation, ReportFiles, write_outputs, write_summaries
from xfd.eval.rerank import RerankParams
from xfd.eval.rerank_team import Solo
from xfd.eval.score import PLAIN, RERANKED, EvalTimes, ScoreOptions, score
from xfd.kernels.backend import resolve_device

FEATURES_DIR = "features"
# settings["frame_sampling"] for each eval.frames value, as report.json and the tables' settings line say it
FRAME_SAMPLING = {"even": "evenly spaced", "clips": "every frame in clips of L, averaged"}


@dataclass(frozen=True)
class ReportOptions:
    """How the ranks evaluate and what the report shows."""

    rerank: RerankParams | None = None  # also evaluate with exact k-reciprocal re-ranking
    device: str = "auto"  # distances and re-ranking: "auto" | "cpu" | "cuda" (CuPy)
    ranklist_queries: int = 6
    ranklist_seed: int = 0
    ranklist_top: int = 10
    csv_top: int = 10  # gallery names per CSV row
    bootstrap: BootstrapOptions = BootstrapOptions()
    progress: bool = False

    def score_options(self, rerank: RerankParams | None) -> ScoreOptions:
        """Scoring of one ranking; the per-condition rows only for the final one (re-ranked when there is one),
        which the report's table and picture show."""
        return ScoreOptions(rerank=rerank, device=self.device, top=max(self.csv_top, self.ranklist_top),
                            bootstrap=self.bootstrap, conditions=rerank is not None or self.rerank is None,
                            progress=self.progress)


def features_path(output: Path, protocol: str) -> Path:
    """OUTPUT/features/<protocol>.npz, the protocol name made file-safe ("query/gallery" -> "query_gallery")."""
    return output / FEATURES_DIR / (re.sub(r"[^A-Za-z0-9_-]+", "_", protocol) + ".npz")


def _settings_line(settings: dict) -> str:
    """data, ranks, frames, TTA and input size, as far as the caller gave them."""
    parts = [f"data: {settings['data']}"] if "data" in settings else []
    if "world_size" in settings:
        parts.append(f"{settings['world_size']} rank(s)")
    if "num_frames" in settings:
        sampling, frames = settings.get("frame_sampling", ""), settings["num_frames"]
        parts.append(f"every frame in clips of L = {frames}, averaged" if sampling == FRAME_SAMPLING["clips"]
                     else f"L = {frames} {sampling} frames".replace("  ", " "))
    if "flip_tta" in settings:
        parts.append(f"flip TTA {'on' if settings['flip_tta'] else 'off'}")
    if "image_size" in settings:
        parts.append("input {}x{}".format(*settings["image_size"]))
    return " · ".join(parts)


def timing_line(seconds: dict, per_rank: list[dict]) -> str:
    """One line: start-up, model loading, extraction (ranks, tracklets/s of all ranks together and of each),
    distances, re-ranking (the slowest rank's seconds, and each rank's when there are several), metrics,
    statistics (bootstrap intervals, per-condition rows), report, total."""
    rate = sum(r["tracklets"] for r in per_rank) / seconds["extraction"] if seconds["extraction"] > 0 else 0.0
    each = " / ".join(f"{r['tracklets_per_s']:.1f}" for r in per_rank)
    parts = [f"start-up {seconds['startup']:.2f} s", f"model {seconds['load_model']:.2f} s",
             f"extraction {seconds['extraction']:.2f} s ({rate:.1f} tracklets/s; {len(per_rank)} rank(s): {each})",
             f"distances {seconds['distances']:.3f} s"]
    if seconds.get("reranking") is not None:
        ranks = seconds.get("reranking_per_rank") or []
        each = f" (ranks: {' / '.join(f'{s:.3f}' for s in ranks)})" if len(ranks) > 1 else ""
        parts.append(f"re-ranking {seconds['reranking']:.3f} s{each}")
    parts += [f"metrics {seconds['metrics']:.3f} s", f"statistics {seconds['statistics']:.3f} s",
              f"report {seconds['report']:.2f} s", f"total {seconds['total']:.2f} s"]
    return "timing: " + ", ".join(parts)


def evaluate_protocols(protocols: dict[str, ProtocolData], options: ReportOptions, settings: dict,
                       team=None) -> tuple[Evaluation, dict]:
    """Scores without and (with options.rerank) with re-ranking, in this process or shared over the ranks of `team`
    (`xfd.eval.rerank_team.RankTeam`; collective: every rank calls it with the same arguments and gets the same
    Evaluation). Returns it and the seconds: distances, re-ranking (the slowest rank's, each rank's, and each
    rank's per step), metrics, statistics. The report's settings gain the scoring options and the rank list's
    sampled queries."""
    team = team or Solo()
    options = replace(options, device=resolve_device(options.device))  # once (CuPy's import), outside the timing
    wanted = sample_queries({name: p.num_queries if p.num_gallery else 0 for name, p in protocols.items()},
                            options.ranklist_queries, options.ranklist_seed)
    rerank = None if options.rerank is None else {"k1": options.rerank.k1, "k2": options.rerank.k2,
                                                   "lambda": options.rerank.lam}
    settings = dict(settings, rerank=rerank, distance_device=options.device, csv_top=options.csv_top,
                    ranklist={"queries": [list(q) for q in wanted], "seed": options.ranklist_seed,
                              "top": options.ranklist_top, "ranking": "re-ranked" if rerank else "plain"})
    plain_times, rerank_times = EvalTimes(), EvalTimes()
    results = {PLAIN: score(protocols, options.score_options(None), team=team, times=plain_times)}
    if options.rerank is not None:
        results[RERANKED] = score(protocols, options.score_options(options.rerank), team=team, times=rerank_times)
    seconds = {"distances": plain_times.ranking, "reranking": None, "reranking_per_rank": None,
               "reranking_steps_per_rank": None, "metrics": plain_times.metrics + rerank_times.metrics,
               "statistics": plain_times.statistics + rerank_times.statistics}
    if options.rerank is not None:
        each = team.gather_objects((rerank_times.ranking, rerank_times.steps.steps))
        seconds.update(reranking=max(s for s, _ in each), reranking_per_rank=[s for s, _ in each],
                       reranking_steps_per_rank=[steps for _, steps in each])
    return Evaluation(protocols, results, settings), seconds


def draw_ranklist(output: Path, evaluation: Evaluation, folders: dict[str, tuple[Path, Path]],
                  wanted: list[QueryRef], top: int) -> list[str]:
    """ranklist.png of the final ranking's `wanted` queries; returns warnings (nothing to draw)."""
    final = evaluation.final
    ranked = ranked_queries(final, wanted, top)
    if not ranked:
        return ["no protocol has both queries and a gallery: no rank list drawn"]
    which = "re-ranked" if final.ranking == RERANKED else "plain cosine distance"
    shown = max(len(rows) for rows in ranked.values())
    title = f"Rank list ({which}): the best {shown} gallery tracklets of {len(ranked)} sampled queries"
    write_ranklist(output / "ranklist.png", ranklist_rows(evaluation.protocols, folders, ranked), title=title)
    return []


def write_model_report(output: Path, evaluation: Evaluation, folders: dict[str, tuple[Path, Path]],
                       options: ReportOptions, seconds: dict, per_rank: list[dict], started: float) -> dict:
    """Write every report file of `evaluation` (from `evaluate_protocols`) into `output`, features included;
    returns the report.json payload. Rank 0 alone calls it.

    `folders`: protocol -> (query, gallery) shard-set folders (frames for the rank list); `seconds`: the
    caller's startup, load_model and extraction seconds and evaluate_protocols' seconds; `per_rank`: each rank's
    extraction record; `started`: the time.perf_counter() of the run's start (for the total).
    """
    begin = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    protocols, settings = evaluation.protocols, evaluation.settings
    for name, data in protocols.items():
        data.save_npz(features_path(output, name))
    files = ReportFiles.in_folder(output)
    written = write_outputs(files, evaluation, options.csv_top)
    notes = written.warnings
    if options.ranklist_queries:
        wanted = [(name, int(row)) for name, row in settings["ranklist"]["queries"]]
        notes += draw_ranklist(output, evaluation, folders, wanted, options.ranklist_top)

    seconds = dict(seconds, report=time.perf_counter() - begin)  # features, CSV, pictures, tables
    seconds["total"] = time.perf_counter() - started
    timing = timing_line(seconds, per_rank)
    extra = {"seconds": seconds, "timing": timing,
             "extraction": {"tracklets": sum(r["tracklets"] for r in per_rank), "per_rank": per_rank},
             "features": {name: str(features_path(output, name).relative_to(output)) for name in protocols}}
    return write_summaries(files, evaluation, title=f"Evaluation of {settings.get('model', '?')}",
                           settings_line=_settings_line(settings), notes=notes, extra=extra, footer=timing,
                           conditions_picture="conditions.png" if written.pictures.get("conditions") else None)
