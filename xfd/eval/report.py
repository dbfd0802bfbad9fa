"""Evaluation outputs: the console table, the markdown table, the JSON report, the challenge submission CSV and
the CMC plot.

Every file is written atomically (temporary file in the same folder, then rename), so a crash never leaves a
half-written report.
"""

from __future__ import annotations

import csv
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from xfd.atomic import atomic_output, write_json_atomic
from xfd.eval.metrics import RankMetrics

CSV_COLUMNS = ("row_id", "case", "query_tracklet", "ranked_gallery_tracklets")


def format_table(results: dict[str, RankMetrics], mean: dict | None = None) -> str:
    """Fixed-width table, one row per protocol (+ the mean), metrics in percent."""
    header = f"{'protocol':<14}{'queries':>9}{'skipped':>9}{'mAP':>8}{'R1':>8}{'R5':>8}{'R10':>8}{'mINP':>8}"
    lines = [header, "-" * len(header)]
    for name, m in results.items():
        ranks = [_percent(m.rank(k)) if k <= m.cmc.shape[0] else "-" for k in (1, 5, 10)]
        lines.append(f"{name:<14}{m.num_queries:>9}{m.num_skipped:>9}{_percent(m.mAP):>8}"
                     + "".join(f"{r:>8}" for r in ranks) + f"{_percent(m.mINP):>8}")
    if mean is not None and len(results) > 1:
        label = f"mean of {mean['num_protocols']}"
        ranks = [_percent(mean[f"rank{k}"]) if f"rank{k}" in mean else "-" for k in (1, 5, 10)]
        lines.append(f"{label:<14}{'':>9}{'':>9}{_percent(mean['mAP']):>8}" + "".join(f"{r:>8}" for r in ranks)
                     + f"{_percent(mean['mINP']):>8}")
    return "\n".join(lines)


def markdown_table(results: dict[str, RankMetrics], mean: dict | None, gallery_sizes: dict[str, int],
                   empty: set[str] | frozenset[str] = frozenset()) -> str:
    """A markdown table: one row per protocol (queries, gallery, mAP, R1, R5, R10, mINP in percent), then the
    mean over the evaluated protocols; protocols in `empty` say so instead of numbers."""
    lines = ["| protocol | queries | gallery | mAP | R1 | R5 | R10 | mINP |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in results.items():
        counts = f"| {name} | {m.num_queries} | {gallery_sizes[name]} |"
        if name in empty:
            lines.append(counts + " empty | – | – | – | – |")
            continue
        ranks = [_percent(m.rank(k)) if k <= m.cmc.shape[0] else "–" for k in (1, 5, 10)]
        lines.append(counts + " " + " | ".join([_percent(m.mAP), *ranks, _percent(m.mINP)]) + " |")
    if mean is not None:
        ranks = [_percent(mean[f"rank{k}"]) if f"rank{k}" in mean else "–" for k in (1, 5, 10)]
        lines.append(f"| **mean of {mean['num_protocols']}** | | | "
                     + " | ".join([_percent(mean["mAP"]), *ranks, _percent(mean["mINP"])]) + " |")
    return "\n".join(lines)


def _percent(value: float) -> str:
    return "nan" if np.isnan(value) else f"{100 * value:.2f}"


def report_payload(results: dict[str, RankMetrics], mean: dict, settings: dict) -> dict:
    """The JSON report: settings, per-protocol metrics (with the CMC curve) and their mean."""
    return {"settings": settings, "protocols": {name: m.to_dict() for name, m in results.items()}, "mean": mean}


def write_report(path: str | Path, payload: dict) -> None:
    write_json_atomic(path, payload)


class SubmissionWriter:
    """Rows of the challenge CSV: row_id, case, query_tracklet, ranked_gallery_tracklets (best first, spaces).

    `top` limits each ranking to its first `top` gallery names (None: the whole gallery).
    """

    def __init__(self, handle, top: int | None = None):
        self._writer = csv.writer(handle, lineterminator="\n")
        self._writer.writerow(CSV_COLUMNS)
        self._top = top
        self._next_row = 0

    def add_block(self, case: str, query_names: np.ndarray, gallery_names: np.ndarray, distances: np.ndarray):
        """One block: (b,) query names and their (b, G) distances to the gallery."""
        order = np.argsort(distances, axis=1, kind="stable")  # (b, G) ties to the lower gallery index
        if self._top is not None:
            order = order[:, : self._top]
        for query, ranked in zip(query_names, order):
            self._writer.writerow((self._next_row, case, query, " ".join(gallery_names[ranked])))
            self._next_row += 1


@contextmanager
def submission_csv(path: str | Path, top: int | None = None) -> Iterator[SubmissionWriter]:
    """A SubmissionWriter whose file appears at `path` only if the block completes."""
    with atomic_output(path, "w") as handle:
        yield SubmissionWriter(handle, top)


def plot_cmc(path: str | Path, results: dict[str, RankMetrics]) -> None:
    """CMC curves of all protocols in one PNG (matplotlib's Agg canvas: no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, m in results.items():
        ranks = np.arange(1, m.cmc.shape[0] + 1)
        ax.plot(ranks, 100 * m.cmc, marker=".", label=f"{name} (R1 {100 * m.rank(1):.1f}%)")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title("CMC")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    with atomic_output(path, "wb") as handle:
        fig.savefig(handle, format="png", bbox_inches="tight")
