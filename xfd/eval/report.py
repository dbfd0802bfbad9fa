"""Evaluation reports, written one way whichever entry point asks (xfd-eval, launcher/evaluate.py). Each file is
optional (`ReportFiles`) and written atomically:

    report.json     settings; per ranking ("plain", "reranked"): every protocol's metrics with its CMC, 95 %
                    intervals of mAP and rank-1, per-query AP / INP / first-match rank, or why it was not scored;
                    the mean of the protocols and the figures pooled over all queries (each labelled, with
                    intervals); the per-condition rows; warnings. `xfd-eval compare` reads it.
    table.md        the same as tables (printed by both entry points): per protocol with intervals, the mean and
                    the pooled row, the per-condition table of the final ranking, warnings
    per_query.npz   "<ranking>/<protocol>/<field>": query names, ap, inp, first_match (0: no valid match),
                    top (best gallery rows)
    submission.csv  the challenge CSV of the final ranking (re-ranked when there is one; xfd.eval.submission)
    cmc.png         CMC curves; conditions.png: mAP against the query's distance and altitude (xfd.eval.figures)

JSON has no NaN: what is undefined is null, and a protocol that could not be scored says so.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xfd.atomic import write_bytes_atomic, write_json_atomic
from xfd.eval.conditions import ALL
from xfd.eval.figures import plot_cmc, plot_conditions
from xfd.eval.protocol import ProtocolData
from xfd.eval.score import PLAIN, RERANKED, Overall, ProtocolScore, Results
from xfd.eval.submission import write_submission

RANKING_TITLES = {PLAIN: "Without re-ranking (cosine distance)", RERANKED: "With exact k-reciprocal re-ranking"}


@dataclass(frozen=True)
class Evaluation:
    """The protocols and their results, one Results per ranking (PLAIN and/or RERANKED), and the run's settings."""

    protocols: dict[str, ProtocolData]
    results: dict[str, Results]
    settings: dict = field(default_factory=dict)

    @property
    def final(self) -> Results:
        """The ranking the submission and the pictures use: re-ranked when there is one."""
        return self.results.get(RERANKED) or self.results[PLAIN]

    @property
    def warnings(self) -> list[str]:
        seen = []
        for results in self.results.values():
            seen += [w for w in results.warnings if w not in seen]
        return seen


@dataclass(frozen=True)
class ReportFiles:
    """Where each output goes; None: not written."""

    json: Path | None = None
    markdown: Path | None = None
    per_query: Path | None = None
    submission: Path | None = None
    cmc: Path | None = None
    conditions: Path | None = None

    @classmethod
    def in_folder(cls, folder: Path) -> "ReportFiles":
        return cls(folder / "report.json", folder / "table.md", folder / "per_query.npz", folder / "submission.csv",
                   folder / "cmc.png", folder / "conditions.png")


@dataclass(frozen=True)
class Written:
    """What write_outputs drew (a picture needs a scored protocol, the conditions picture metadata too) and its
    warnings (e.g. a submission that cannot hold every case)."""

    pictures: dict[str, bool]
    warnings: list[str]


def write_outputs(files: ReportFiles, evaluation: Evaluation, csv_top: int = 10) -> Written:
    """The submission, the per-query arrays and the pictures."""
    warnings = []
    if files.submission is not None:
        warnings += write_submission(files.submission, evaluation.protocols, evaluation.final, csv_top)
    if files.per_query is not None:
        write_per_query(files.per_query, evaluation)
    drawn = {}
    if files.cmc is not None:
        drawn["cmc"] = plot_cmc(files.cmc, list(evaluation.results.values()))
    if files.conditions is not None:
        drawn["conditions"] = plot_conditions(files.conditions, evaluation.final)
    return Written(drawn, warnings)


def write_summaries(files: ReportFiles, evaluation: Evaluation, *, title: str = "Evaluation", settings_line: str = "",
                    notes: list[str] = (), extra: dict | None = None, footer: str = "",
                    conditions_picture: str | None = None) -> dict:
    """report.json and table.md; returns the JSON payload. `notes`: warnings beyond the results' own; `extra`:
    further top-level JSON entries (e.g. the timing split); `footer`: a last line for table.md;
    `conditions_picture`: the per-condition picture's path relative to table.md, linked under its table."""
    payload = report_payload(evaluation, list(notes), extra or {})
    if files.markdown is not None:
        text = markdown_report(evaluation, title, settings_line, payload["warnings"], footer, conditions_picture)
        write_bytes_atomic(files.markdown, text.encode())
    if files.json is not None:
        write_json_atomic(files.json, payload)
    return payload


def report_payload(evaluation: Evaluation, notes: list[str], extra: dict) -> dict:
    payload = {"settings": evaluation.settings, "final": evaluation.final.ranking,
               PLAIN: None, RERANKED: None, "warnings": evaluation.warnings + notes}
    for ranking, results in evaluation.results.items():
        payload[ranking] = results_payload(results, evaluation.protocols)
    return _json_safe({**payload, **extra})


def results_payload(results: Results, protocols: dict[str, ProtocolData]) -> dict:
    """One ranking's results as JSON."""
    options = results.options
    return {
        "ranking": results.ranking,
        "scoring": {"rerank": None if options.rerank is None else {"k1": options.rerank.k1, "k2": options.rerank.k2,
                                                                   "lambda": options.rerank.lam},
                    "distance": "k-reciprocal (squared Euclidean base)" if options.rerank else "cosine (1 - cos)",
                    "ap_mode": options.ap_mode, "max_rank": options.max_rank, "top": options.top,
                    "bootstrap": {"resamples": options.bootstrap.resamples, "seed": options.bootstrap.seed,
                                  "level": options.bootstrap.level, "over": "queries"}},
        "protocols": {name: _protocol_payload(p, protocols[name]) for name, p in results.protocols.items()},
        "protocol_order": list(results.protocols),  # JSON objects are written with sorted keys
        "mean": _overall_payload(results.mean),
        "pooled": _overall_payload(results.pooled),
        "conditions": None if results.conditions is None else [row.to_dict() for row in results.conditions],
        "warnings": list(results.warnings),
    }


def _protocol_payload(outcome: ProtocolScore, data: ProtocolData) -> dict:
    entry = {"scored": outcome.scored, "reason": outcome.reason, "labelled": data.labelled,
             "num_queries": outcome.num_queries, "num_gallery": outcome.num_gallery}
    if not outcome.scored:
        return entry
    entry.update(outcome.metrics.to_dict())
    entry["ci"] = {key: interval.to_list() for key, interval in outcome.intervals.items()}
    scores = outcome.queries
    entry["per_query"] = {
        "query": _query_names(data),
        "ap": scores.ap.tolist(), "inp": scores.inp.tolist(),
        "first_match": [int(r) if r > 0 else None for r in scores.first_match.tolist()],
    }
    return entry


def _query_names(data: ProtocolData) -> list[str]:
    return [str(n) for n in data.q_names] if data.q_names is not None else [str(i) for i in range(data.num_queries)]


def _overall_payload(overall: Overall | None) -> dict | None:
    if overall is None:
        return None
    return {"label": overall.label, **overall.values, "num_protocols": overall.num_protocols,
            "num_queries": overall.num_queries, "ci": {k: v.to_list() for k, v in overall.intervals.items()}}


def _json_safe(value):
    """NaN as null, numpy scalars as Python numbers: report.json is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_per_query(path: Path, evaluation: Evaluation) -> None:
    """per_query.npz: "<ranking>/<protocol>/{query,ap,inp,first_match,top}" for every ranked protocol."""
    arrays = {}
    for ranking, results in evaluation.results.items():
        for name, outcome in results.protocols.items():
            if outcome.queries is None:
                continue
            prefix = f"{ranking}/{name}/"
            scores = outcome.queries
            arrays[prefix + "query"] = np.array(_query_names(evaluation.protocols[name]), dtype=str)
            arrays.update({prefix + "ap": scores.ap, prefix + "inp": scores.inp,
                           prefix + "first_match": scores.first_match, prefix + "top": scores.top})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


# ------------------------------------------------------------------ markdown

def markdown_report(evaluation: Evaluation, title: str, settings_line: str, warnings: list[str], footer: str = "",
                    conditions_picture: str | None = None) -> str:
    """table.md: a title and settings line, a table per ranking, the per-condition table of the final ranking,
    the warnings and a footer (e.g. the timing line)."""
    parts = [f"# {title}", settings_line] if settings_line else [f"# {title}"]
    for ranking, results in evaluation.results.items():
        parts.append(f"## {ranking_title(results)}\n\n" + protocol_table(results))
    final = evaluation.final
    if final.conditions:
        which = " (re-ranked)" if final.ranking == RERANKED else ""
        text = f"## Per condition{which}: mAP and rank-1 by the query's capture conditions\n\n" + condition_table(final)
        if conditions_picture:
            text += f"\n\n![mAP by query distance and altitude]({conditions_picture})"
        parts.append(text)
    if warnings:
        parts.append("\n".join(f"> warning: {w}" for w in warnings))
    if footer:
        parts.append(footer)
    return "\n\n".join(parts) + "\n"


def ranking_title(results: Results) -> str:
    rerank = results.options.rerank
    if rerank is None:
        return RANKING_TITLES[PLAIN]
    return f"{RANKING_TITLES[RERANKED]} (k1 {rerank.k1}, k2 {rerank.k2}, λ {rerank.lam})"


def _percent(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _with_interval(value: float, interval) -> str:
    return f"{_percent(value)} ({_percent(interval.low)}–{_percent(interval.high)})"


def protocol_table(results: Results) -> str:
    """One row per protocol (queries, gallery, mAP and R1 with their intervals, R5, R10, mINP in percent), then the
    mean of the scored protocols and the pooled figures; a protocol that was not scored gives its reason."""
    level = int(round(100 * results.options.bootstrap.level))
    lines = [f"| protocol | queries | gallery | mAP ({level}% CI) | R1 ({level}% CI) | R5 | R10 | mINP |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, p in results.protocols.items():
        counts = f"| {name} | {p.num_queries} | {p.num_gallery} |"
        if not p.scored:
            lines.append(f"{counts} not scored: {p.reason} | – | – | – | – |")
            continue
        values = p.summary()
        lines.append(f"{counts} {_with_interval(values['mAP'], p.intervals['mAP'])} | "
                     f"{_with_interval(values['rank1'], p.intervals['rank1'])} | {_percent(values.get('rank5'))} | "
                     f"{_percent(values.get('rank10'))} | {_percent(values['mINP'])} |")
    for overall in (results.mean, results.pooled):
        if overall is None:
            continue
        queries = f" {overall.num_queries} " if overall.kind == "pooled" else " "
        v = overall.values
        lines.append(f"| **{overall.label}** |{queries}| | {_with_interval(v['mAP'], overall.intervals['mAP'])} | "
                     f"{_with_interval(v['rank1'], overall.intervals['rank1'])} | {_percent(v.get('rank5'))} | "
                     f"{_percent(v.get('rank10'))} | {_percent(v['mINP'])} |")
    if results.mean is None:
        lines.append("| **no protocol could be scored** | | | – | – | – | – | – |")
    return "\n".join(lines)


def condition_table(results: Results) -> str:
    """One row per condition value: each protocol's mAP (valid queries), then all protocols pooled with
    intervals; cells with few queries carry a dagger, explained under the table."""
    names = [n for n in results.protocols if any(n in row.cells for row in results.conditions)]
    level = int(round(100 * results.options.bootstrap.level))
    lines = ["| condition | value | " + " | ".join(f"{n} mAP (n)" for n in names)
             + f" | all: queries | all: mAP ({level}% CI) | all: R1 ({level}% CI) |",
             "|---|---|" + "---:|" * (len(names) + 3)]
    for row in results.conditions:
        cells = []
        for name in names:
            cell = row.cells.get(name)
            cells.append("–" if cell is None else f"{_percent(cell.mAP)} ({cell.queries}{'†' if cell.few else ''})")
        pooled = row.cells[ALL]
        lines.append(f"| {row.condition} | {row.value} | " + " | ".join(cells)
                     + f" | {pooled.queries}{'†' if pooled.few else ''} | "
                     f"{_with_interval(pooled.mAP, pooled.intervals['mAP'])} | "
                     f"{_with_interval(pooled.rank1, pooled.intervals['rank1'])} |")
    lines.append(f"\n† fewer than {results.options.min_condition_queries} queries: shown, but its interval is wide. "
                 "Match session: each query scored with only its same-session (or only its cross-session) matches "
                 "counted, the others treated as junk.")
    return "\n".join(lines)
