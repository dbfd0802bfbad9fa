"""The evaluation report's pictures: CMC curves and mAP against the query's distance and altitude.

matplotlib's Agg canvas (no display, no pyplot state); every PNG is written atomically. Titles say "re-ranked"
when the figure is; legends sit outside the axes so they never cover a curve; a CMC curve stops at the gallery
size (no rank beyond it exists).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from xfd.atomic import write_bytes_atomic
from xfd.eval.conditions import ALL, ConditionRow
from xfd.eval.score import PLAIN, RERANKED, Results



LEGEND_WIDTH = 2.4  # inches kept right of the axes for the legend (a fixed layout: no second "tight" render)


def _figure(axes_width: float, height: float, panels: int = 1):
    """A figure of `panels` side by side, each `axes_width` inches wide with room for its labels, and
    LEGEND_WIDTH inches on the right for a legend outside the axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    left, gap = 0.75, 0.8  # inches: the y-axis label and ticks of each panel
    width = left + panels * axes_width + (panels - 1) * gap + LEGEND_WIDTH
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / width, right=1 - LEGEND_WIDTH / width, wspace=gap / axes_width, bottom=0.13,
                        top=0.9)
    return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]


PNG_COMPRESSION = 1  # zlib level: a few per cent larger files than the default 6, written several times faster


def _save(fig, path: str | Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", pil_kwargs={"compress_level": PNG_COMPRESSION})
    write_bytes_atomic(path, buffer.getvalue())


def plot_cmc(path: str | Path, results: list[Results]) -> bool:
    """Write cmc_figure as PNG; False (nothing written) when no protocol was scored."""
    fig = cmc_figure(results)
    if fig is not None:
        _save(fig, path)
    return fig is not None


def cmc_figure(results: list[Results]):
    """CMC curves of every scored protocol of each ranking (plain solid, re-ranked dashed); None when no protocol
    was scored."""
    from matplotlib.ticker import MaxNLocator

    curves = [(r.ranking, name, p) for r in results for name, p in r.scored.items()]
    if not curves:
        return None
    fig, (ax,) = _figure(5.2, 4.2)
    colours = {}
    for ranking, name, outcome in curves:
        length = min(outcome.metrics.cmc.shape[0], outcome.num_gallery)
        ranks = np.arange(1, length + 1)
        colour = colours.setdefault(name, f"C{len(colours) % 10}")
        label = f"{name}{' re-ranked' if ranking == RERANKED else ''} (R1 {100 * outcome.metrics.rank(1):.1f}%)"
        ax.plot(ranks, 100 * outcome.metrics.cmc[:length], marker="." if length <= 60 else None, color=colour,
                linestyle="--" if ranking == RERANKED else "-", label=label)
    rankings = sorted({r.ranking for r in results if r.scored})
    ax.set_title("CMC" + ("" if rankings == [PLAIN] else " (re-ranked)" if rankings == [RERANKED]
                          else ": plain (solid) and re-ranked (dashed)"))
    ax.set_xlabel("rank (gallery tracklets looked at)")
    ax.set_ylabel("matching rate (% of queries)")
    ax.set_ylim(0, 100)
    ax.set_xlim(0.5, max(min(c[2].metrics.cmc.shape[0], c[2].num_gallery) for c in curves) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    return fig


def plot_conditions(path: str | Path, results: Results) -> bool:
    """Write conditions_figure as PNG; False (nothing written) when the results have no such rows."""
    fig = conditions_figure(results)
    if fig is not None:
        _save(fig, path)
    return fig is not None


def conditions_figure(results: Results):
    """mAP against the query's distance and against its altitude, one line per protocol and pooled, each point
    with its confidence interval; hollow markers for conditions with few queries. None without such rows."""
    panels = [(condition, [r for r in results.conditions or [] if r.condition == condition and r.x is not None])
              for condition in ("distance", "altitude")]
    panels = [(c, rows) for c, rows in panels if rows]
    if not panels:
        return None
    fig, axes = _figure(4.4, 4.0, len(panels))
    level = int(round(100 * results.options.bootstrap.level))
    names = [n for n in results.protocols if any(n in r.cells for _, rows in panels for r in rows)] + [ALL]
    for ax, (condition, rows) in zip(axes, panels):
        for i, name in enumerate(names):
            _condition_line(ax, rows, name, f"C{i % 10}" if name != ALL else "black", i - (len(names) - 1) / 2)
        ax.set_title(f"mAP by query {condition}" + (" (re-ranked)" if results.ranking == RERANKED else ""))
        ax.set_xlabel(f"query {'distance to the person' if condition == 'distance' else 'altitude'} (m)")
        ax.set_ylabel(f"mAP with its {level}% CI (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
                    title="hollow: few queries", title_fontsize=7)
    return fig


def _condition_line(ax, rows: list[ConditionRow], name: str, colour: str, offset: float) -> None:
    points = sorted((r.x, r.cells[name]) for r in rows if name in r.cells)
    if not points:
        return
    span = max(p[0] for p in points) - min(p[0] for p in points) or 1.0
    xs = np.array([p[0] for p in points]) + offset * 0.006 * span  # side by side, not on top of each other
    ys = np.array([100 * c.mAP for _, c in points])
    low = ys - np.array([100 * c.intervals["mAP"].low for _, c in points])
    high = np.array([100 * c.intervals["mAP"].high for _, c in points]) - ys
    ax.plot(xs, ys, color=colour, linewidth=1.5 if name == ALL else 1.0, label=name if name != ALL else "all pooled")
    ax.errorbar(xs, ys, yerr=[low, high], fmt="none", ecolor=colour, elinewidth=0.8, capsize=2)
    few = np.array([c.few for _, c in points])
    ax.scatter(xs[~few], ys[~few], color=colour, s=18, zorder=3)
    ax.scatter(xs[few], ys[few], facecolors="white", edgecolors=colour, s=18, zorder=3)
