"""What rank 0 of `launcher/evaluate.py` does with the gathered features: save them, evaluate them without and
(optionally) with exact k-reciprocal re-ranking, and write the report into the output folder:

    features/<protocol>.npz   the xfd-eval features format (xfd.eval.protocol), so `xfd-eval` can re-score them
    report.json               settings, every metric (plain and re-ranked), warnings, the timing split
    table.md                  per-protocol tables (A2G / G2A / A2A ... and their mean), plain and re-ranked
    cmc.png                   CMC curves of every evaluated protocol (and their re-ranked twins)
    ranklist.png              a seeded sample of queries with their top-k gallery tracklets (xfd.eval.ranklist)
    submission.csv            the challenge CSV, ranked by the final distances (re-ranked when re-ranking is on)

Distances, re-ranking and metrics are timed apart (`EvalTimes`); every file is written atomically.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from xfd.atomic import write_bytes_atomic
from xfd.eval.evaluate import EvalOptions, EvalTimes
from xfd.eval.model_eval import ProtocolResults, evaluate_protocols, is_empty
from xfd.eval.protocol import ProtocolData
from xfd.eval.ranklist import write_ranklist
from xfd.eval.ranklist_rows import QueryRef, TopKCollector, ranklist_rows, sample_queries
from xfd.eval.report import markdown_table, plot_cmc, report_payload, submission_csv, write_report
from xfd.eval.rerank import RerankParams
from xfd.kernels.backend import resolve_device

FEATURES_DIR = "features"
# settings["frame_sampling"] for each eval.frames value, as report.json and the tables' settings line say it
FRAME_SAMPLING = {"even": "evenly spaced", "clips": "every frame in clips of L, averaged"}


@dataclass(frozen=True)
class ReportOptions:
    """How rank 0 evaluates and what the report shows."""

    rerank: RerankParams | None = None  # also evaluate with exact k-reciprocal re-ranking
    device: str = "auto"  # distances and re-ranking: "auto" | "cpu" | "cuda" (CuPy)
    ranklist_queries: int = 6
    ranklist_seed: int = 0
    ranklist_top: int = 10
    csv_top: int | None = None  # gallery names per CSV row (None: the whole ranking)
    progress: bool = False


def features_path(output: Path, protocol: str) -> Path:
    """OUTPUT/features/<protocol>.npz, the protocol name made file-safe ("query/gallery" -> "query_gallery")."""
    return output / FEATURES_DIR / (re.sub(r"[^A-Za-z0-9_-]+", "_", protocol) + ".npz")


def _json_safe(value):
    """NaN (an empty protocol's metrics) as null, so report.json is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _results_json(results: ProtocolResults, protocols: dict[str, ProtocolData]) -> dict:
    payload = report_payload(results.metrics, results.mean, {})
    for name, entry in payload["protocols"].items():
        entry["num_gallery"] = int(protocols[name].g_feats.shape[0])
        entry["empty"] = name in results.empty
    return {"protocols": payload["protocols"], "mean": payload["mean"]}


def _table(title: str, results: ProtocolResults, protocols: dict[str, ProtocolData]) -> str:
    sizes = {name: int(p.g_feats.shape[0]) for name, p in protocols.items()}
    return f"## {title}\n\n" + markdown_table(results.metrics, results.mean, sizes, set(results.empty))


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
    distances, re-ranking, metrics, report, total."""
    rate = sum(r["tracklets"] for r in per_rank) / seconds["extraction"] if seconds["extraction"] > 0 else 0.0
    each = " / ".join(f"{r['tracklets_per_s']:.1f}" for r in per_rank)
    parts = [f"start-up {seconds['startup']:.2f} s", f"model {seconds['load_model']:.2f} s",
             f"extraction {seconds['extraction']:.2f} s ({rate:.1f} tracklets/s; {len(per_rank)} rank(s): {each})",
             f"distances {seconds['distances']:.3f} s"]
    if seconds.get("reranking") is not None:
        parts.append(f"re-ranking {seconds['reranking']:.3f} s")
    parts += [f"metrics {seconds['metrics']:.3f} s", f"report {seconds['report']:.2f} s",
              f"total {seconds['total']:.2f} s"]
    return "timing: " + ", ".join(parts)


@dataclass(frozen=True)
class Evaluated:
    """Plain and (optional) re-ranked results, their seconds, and the sampled queries' final top-k rankings."""

    plain: ProtocolResults
    reranked: ProtocolResults | None
    plain_times: EvalTimes
    rerank_times: EvalTimes
    ranked: dict[QueryRef, np.ndarray]  # (protocol, query row) -> (≤ top,) gallery rows, best first

    def seconds(self, rerank: bool) -> dict:
        return {"distances": self.plain_times.ranking,
                "reranking": self.rerank_times.ranking if rerank else None,
                "metrics": self.plain_times.metrics + self.rerank_times.metrics}


def evaluate_and_rank(protocols: dict[str, ProtocolData], options: ReportOptions, csv_path: Path,
                      wanted: list[QueryRef]) -> Evaluated:
    """Metrics without and (with options.rerank) with re-ranking; the final distances (re-ranked when on) also
    write the submission CSV and give the `wanted` queries' top-k rankings."""
    collector = TopKCollector(wanted, options.ranklist_top)
    plain_times, rerank_times = EvalTimes(), EvalTimes()
    with submission_csv(csv_path, options.csv_top) as writer:
        def final_ranking(name, indices, block):  # (b,) query rows, (b, G) final distances
            writer.add_block(name, protocols[name].q_names[indices], protocols[name].g_names, block)
            collector(name, indices, block)

        plain = evaluate_protocols(protocols, EvalOptions(device=options.device, progress=options.progress),
                                   None if options.rerank else final_ranking, plain_times)
        reranked = None
        if options.rerank is not None:
            reranked = evaluate_protocols(protocols, EvalOptions(rerank=options.rerank, device=options.device,
                                                                 progress=options.progress),
                                          final_ranking, rerank_times)
    return Evaluated(plain, reranked, plain_times, rerank_times, collector.ranked)


def draw_pictures(output: Path, protocols: dict[str, ProtocolData], folders: dict[str, tuple[Path, Path]],
                  evaluated: Evaluated, want_ranklist: bool) -> list[str]:
    """cmc.png and ranklist.png (each when there is something to draw); returns warnings."""
    warnings = []
    if evaluated.ranked:
        write_ranklist(output / "ranklist.png", ranklist_rows(protocols, folders, evaluated.ranked))
    elif want_ranklist:
        warnings.append("no protocol has both queries and a gallery: no rank list drawn")
    plain, reranked = evaluated.plain, evaluated.reranked
    curves = {name: m for name, m in plain.metrics.items() if name not in plain.empty}
    if reranked is not None:
        curves.update({f"{name} re-ranked": m for name, m in reranked.metrics.items() if name not in reranked.empty})
    if curves:
        plot_cmc(output / "cmc.png", curves)
    return warnings


def table_markdown(settings: dict, protocols: dict[str, ProtocolData], evaluated: Evaluated,
                   rerank: RerankParams | None, warnings: list[str], timing: str) -> str:
    """table.md: a header with the settings, the plain and re-ranked tables, warnings, the timing line."""
    tables = [_table("Without re-ranking", evaluated.plain, protocols)]
    if evaluated.reranked is not None:
        tables.append(_table(f"With exact k-reciprocal re-ranking (k1 {rerank.k1}, k2 {rerank.k2}, λ {rerank.lam})",
                             evaluated.reranked, protocols))
    notes = "".join(f"\n> warning: {w}\n" for w in warnings)
    return (f"# Evaluation of {settings.get('model', '?')}\n\n{_settings_line(settings)}\n\n"
            + "\n\n".join(tables) + "\n" + notes + "\n" + timing + "\n")


def write_model_report(output: Path, protocols: dict[str, ProtocolData], folders: dict[str, tuple[Path, Path]],
                       options: ReportOptions, settings: dict, seconds: dict, per_rank: list[dict],
                       started: float) -> dict:
    """Evaluate and write every report file into `output`; returns the report.json payload.

    `folders`: protocol -> (query, gallery) shard-set folders (frames for the rank list); `seconds`: the
    caller's startup, load_model and extraction seconds; `per_rank`: each rank's extraction record; `started`: the
    time.perf_counter() of the run's start (for the total).
    """
    options = replace(options, device=resolve_device(options.device))  # once (CuPy's import), outside the timing
    begin = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    for name, data in protocols.items():
        data.save_npz(features_path(output, name))
    wanted = sample_queries({name: 0 if is_empty(p) else int(p.q_feats.shape[0]) for name, p in protocols.items()},
                            options.ranklist_queries, options.ranklist_seed)
    evaluated = evaluate_and_rank(protocols, options, output / "submission.csv", wanted)
    warnings = evaluated.plain.warnings() + draw_pictures(output, protocols, folders, evaluated,
                                                          options.ranklist_queries > 0)

    seconds = dict(seconds, **evaluated.seconds(options.rerank is not None))
    rerank = None if options.rerank is None else {
        "k1": options.rerank.k1, "k2": options.rerank.k2, "lambda": options.rerank.lam}
    payload = {
        "settings": dict(settings, rerank=rerank, distance_device=options.device,
                         ranklist={"queries": [list(q) for q in wanted], "seed": options.ranklist_seed,
                                   "top": options.ranklist_top, "ranking": "re-ranked" if rerank else "plain"}),
        **_results_json(evaluated.plain, protocols),
        "reranked": None if evaluated.reranked is None else _results_json(evaluated.reranked, protocols),
        "warnings": warnings,
        "extraction": {"tracklets": sum(r["tracklets"] for r in per_rank), "per_rank": per_rank},
        "features": {name: str(features_path(output, name).relative_to(output)) for name in protocols},
    }
    scoring = sum(v for k, v in seconds.items() if k in ("distances", "reranking", "metrics") and v is not None)
    seconds["report"] = time.perf_counter() - begin - scoring  # features, CSV, pictures, tables
    seconds["total"] = time.perf_counter() - started
    payload["seconds"] = seconds
    payload["timing"] = timing_line(seconds, per_rank)
    write_bytes_atomic(output / "table.md",
                       table_markdown(settings, protocols, evaluated, options.rerank, warnings,
                                      payload["timing"]).encode())
    write_report(output / "report.json", _json_safe(payload))
    return payload
