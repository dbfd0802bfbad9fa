"""Paired comparison of two evaluation reports of the same queries (`xfd-eval compare A.json B.json`, xfd-ablate).

Both reports' per-query values (report.json, `xfd.eval.report`) are paired by protocol and query name; the paired
bootstrap (`xfd.eval.bootstrap.paired_difference`) then gives, for each protocol both reports scored, for the mean
of those protocols and for all their queries pooled, Δ = B − A of mAP and rank-1 with its interval and p-value.
Reports of different queries, or of the same queries with different labels, cannot be paired: an error says which.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xfd.eval.bootstrap import POOLED_STRATUM, BootstrapOptions, PairedDifference, paired_difference

FINAL = "final"
RANKINGS = (FINAL, "plain", "reranked")
FIGURES = ("mAP", "rank1")
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Comparison:
    """B − A of one protocol, of the mean over protocols, or of the pooled queries."""

    name: str
    queries: int  # valid queries behind it
    a: dict[str, float]  # FIGURES of A
    b: dict[str, float]  # FIGURES of B
    diffs: dict[str, PairedDifference]

    def to_dict(self) -> dict:
        return {"name": self.name, "queries": self.queries, "a": self.a, "b": self.b,
                "diff": {k: {"delta": d.delta, "ci": d.interval.to_list(), "p_value": d.p_value,
                             "resamples": d.resamples} for k, d in self.diffs.items()}}


def report_section(report: dict, ranking: str = FINAL, where: str = "report") -> dict:
    """The results of one ranking in a report.json: FINAL (re-ranked when the report has it), plain, reranked."""
    if ranking not in RANKINGS:
        raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
    key = report.get("final") if ranking == FINAL else ranking
    section = report.get(key) if key else None
    if not isinstance(section, dict) or "protocols" not in section:
        raise ValueError(f"{where}: no {ranking} results (a report.json of xfd-eval or launcher/evaluate.py has "
                         f"'plain', 'reranked' and 'final')")
    return section


def _per_query(section: dict, name: str, where: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(query names, AP (NaN: not valid), rank-1 hit) of one scored protocol."""
    entry = section["protocols"][name]
    per_query = entry.get("per_query")
    if per_query is None:
        raise ValueError(f"{where}: protocol {name} has no per-query values (a report of an older xfd?)")
    ap = np.array([np.nan if v is None else v for v in per_query["ap"]], dtype=float)
    first = np.array([0 if v is None else v for v in per_query["first_match"]], dtype=np.int64)
    return [str(q) for q in per_query["query"]], ap, (first == 1).astype(float)


def paired_values(a: dict, b: dict, where_a: str = "A", where_b: str = "B") -> dict[str, tuple]:
    """protocol -> (AP of A, AP of B, rank-1 hit of A, rank-1 hit of B) over the valid queries both scored, in
    A's query order; protocols scored by only one report are left out."""
    out = {}
    for name in a.get("protocol_order", list(a["protocols"])):
        entry = a["protocols"][name]
        other = b["protocols"].get(name)
        if not entry.get("scored") or not other or not other.get("scored"):
            continue
        queries_a, ap_a, hit_a = _per_query(a, name, where_a)
        queries_b, ap_b, hit_b = _per_query(b, name, where_b)
        if sorted(queries_a) != sorted(queries_b) or len(set(queries_a)) != len(queries_a):
            raise ValueError(f"protocol {name}: {where_a} and {where_b} rank different queries ({len(queries_a)} and "
                             f"{len(queries_b)}, e.g. {sorted(set(queries_a) ^ set(queries_b))[:3]}); a paired "
                             "comparison needs the same queries")
        position = {q: i for i, q in enumerate(queries_b)}
        order = np.array([position[q] for q in queries_a], dtype=np.int64)
        ap_b, hit_b = ap_b[order], hit_b[order]
        valid = ~np.isnan(ap_a)
        if not np.array_equal(valid, ~np.isnan(ap_b)):
            raise ValueError(f"protocol {name}: the queries with a valid match differ between {where_a} and "
                             f"{where_b} (different labels?)")
        out[name] = (ap_a[valid], ap_b[valid], hit_a[valid], hit_b[valid])
    if not out:
        raise ValueError(f"{where_a} and {where_b} have no scored protocol in common")
    return out


def compare_sections(a: dict, b: dict, options: BootstrapOptions = BootstrapOptions(), where_a: str = "A",
                     where_b: str = "B") -> list[Comparison]:
    """Per protocol, the mean of the protocols and the pooled queries: B − A with intervals and p-values."""
    pairs = paired_values(a, b, where_a, where_b)
    names = list(pairs)

    def figures(strata: list[int], values: list[tuple], pooled: bool = False) -> tuple[dict, dict, dict]:
        diffs, fig_a, fig_b = {}, {}, {}
        for k, figure in enumerate(FIGURES):
            xs = [v[2 * k] for v in values]
            ys = [v[2 * k + 1] for v in values]
            if pooled:
                xs, ys = [np.concatenate(xs)], [np.concatenate(ys)]
            fig_a[figure] = float(np.mean([x.mean() for x in xs]))
            fig_b[figure] = float(np.mean([y.mean() for y in ys]))
            diffs[figure] = paired_difference(xs, ys, options, strata[0])
        return fig_a, fig_b, diffs

    comparisons = []
    for i, name in enumerate(names):
        comparisons.append(Comparison(name, int(pairs[name][0].size), *figures([i], [pairs[name]])))
    values = [pairs[n] for n in names]
    total = sum(int(v[0].size) for v in values)
    if len(names) > 1:
        comparisons.append(Comparison(f"mean of {len(names)} protocols", total, *figures([0], values)))
        comparisons.append(Comparison(f"pooled over {total} queries", total,
                                      *figures([POOLED_STRATUM], values, pooled=True)))
    return comparisons


def comparison_table(comparisons: list[Comparison], label_a: str = "A", label_b: str = "B") -> str:
    """Markdown: per row, A and B, Δ = B − A with its interval and p-value, for mAP and rank-1 (percent)."""
    level = "95% CI"
    lines = [f"| | queries | mAP {label_a} | mAP {label_b} | Δ mAP ({level}) | p | R1 {label_a} | R1 {label_b} | "
             f"Δ R1 ({level}) | p |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in comparisons:
        cells = []
        for figure in FIGURES:
            d = c.diffs[figure]
            mark = " *" if d.p_value < SIGNIFICANCE else ""
            cells += [f"{100 * c.a[figure]:.2f}", f"{100 * c.b[figure]:.2f}",
                      f"{100 * d.delta:+.2f} ({100 * d.interval.low:+.2f}, {100 * d.interval.high:+.2f})",
                      f"{d.p_value:.3f}{mark}"]
        lines.append(f"| {c.name} | {c.queries} | " + " | ".join(cells) + " |")
    lines.append(f"\n* p < {SIGNIFICANCE}: paired bootstrap over the same queries "
                 f"({comparisons[0].diffs['mAP'].resamples} resamples).")
    return "\n".join(lines)
