"""Training curves: a CSV log of scalars (one row per scalar) and PNG plots drawn from it.

The log has the columns `stage,epoch,step,global_step,name,value`; names are `loss`, `loss/<part>`, `acc`,
`lr`, `val/<metric>/<protocol>`, ... `CsvScalarLog` appends and flushes on every write, so a killed run keeps
what it logged; on resume `truncate_after(global_step)` drops the rows logged after the checkpoint, so the resumed
run does not log them twice. `plot_training_curves` draws one PNG per stage (loss components, accuracy,
learning rate, throughput, data wait) and `validation.png` for `val/*` scalars across epochs. Every panel's y-axis
says what it measures and in which unit; legends sit outside the axes, so they never cover a curve. Every file is
written atomically. Plots use matplotlib's Agg canvas directly: no display and no pyplot global state.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Mapping

from xfd.atomic import atomic_output

COLUMNS = ("stage", "epoch", "step", "global_step", "name", "value")
VALIDATION_PREFIX = "val/"
# Panels of a stage's figure: (title, y-axis label with its unit, does this scalar name belong here)
PANELS = (
    ("loss", "loss (nats; triplet part: feature distance)", lambda name: name == "loss" or name.startswith("loss/")),
    ("accuracy", "accuracy (fraction of the batch)", lambda name: name == "acc" or name.startswith("acc/")),
    ("learning rate", "learning rate (per step, no unit)", lambda name: name == "lr" or name.startswith("lr/")),
    ("throughput", "throughput (per second, log scale)", lambda name: name.startswith("speed/") and
     name.endswith("_per_s")),
    ("data wait", "waiting for data (% of step time)", lambda name: name.endswith("_pct")),
)
OTHER_LABEL = "value (as logged)"
# Validation metrics (logged in percent) -> y-axis label
VALIDATION_LABELS = {"mAP": "mAP (%)", "rank1": "rank-1 (%)", "mINP": "mINP (%)"}


def _stage_value(text: str):
    """Stages are usually integers (1, 2); any other label is kept as text."""
    try:
        return int(text)
    except ValueError:
        return text


def _stage_order(stage):
    """Integer stages in numeric order, then text labels."""
    return (0, stage, "") if isinstance(stage, int) else (1, 0, str(stage))


def read_scalar_rows(path: str | Path) -> list[dict]:
    """Rows of a scalar CSV log with typed fields; a torn last line (a run killed mid-write) is ignored."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # drop the incomplete last line
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return []
    if tuple(header) != COLUMNS:
        raise ValueError(f"{path}: not a scalar log: header {header}, expected {list(COLUMNS)}")
    rows = []
    for line, fields in enumerate(reader, start=2):
        if len(fields) != len(COLUMNS):
            raise ValueError(f"{path}: line {line} has {len(fields)} fields, expected {len(COLUMNS)}")
        stage, epoch, step, global_step, name, value = fields
        try:
            rows.append({"stage": _stage_value(stage), "epoch": int(epoch), "step": int(step),
                         "global_step": int(global_step), "name": name, "value": float(value)})
        except ValueError as error:
            raise ValueError(f"{path}: line {line}: {error}") from None
    return rows


def _format_rows(rows) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([row["stage"], int(row["epoch"]), int(row["step"]), int(row["global_step"]), row["name"],
                         repr(float(row["value"]))])
    return out.getvalue()


class CsvScalarLog:
    """Append-only CSV log of training scalars, flushed on every write, truncatable for resumed runs."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._rewrite([])
        else:
            read_scalar_rows(self.path)  # refuse a file that is not a scalar log before appending to it

    def log(self, stage, epoch: int, step: int, global_step: int, scalars: Mapping[str, float]) -> None:
        """Append one row per scalar (all at the same position) and flush them to disk."""
        rows = []
        for name, value in scalars.items():
            if not name or "\n" in name or "\r" in name:
                raise ValueError(f"{self.path}: scalar name {name!r} is empty or has a line break")
            rows.append({"stage": stage, "epoch": epoch, "step": step, "global_step": global_step, "name": name,
                         "value": float(value)})
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            handle.write(_format_rows(rows))
            handle.flush()  # a killed process loses nothing it logged (no fsync: a crashed OS may lose the tail)

    def read(self) -> list[dict]:
        return read_scalar_rows(self.path)

    def truncate_after(self, global_step: int) -> int:
        """Keep rows with global_step <= `global_step` (a resumed run's checkpoint); return how many were dropped."""
        rows = self.read()
        kept = [row for row in rows if row["global_step"] <= global_step]
        self._rewrite(kept)
        return len(rows) - len(kept)

    def _rewrite(self, rows) -> None:
        with atomic_output(self.path, "w") as handle:
            handle.write(",".join(COLUMNS) + "\n" + _format_rows(rows))


def _series(rows, x_field: str) -> dict[str, tuple[list, list]]:
    """name -> (xs, values) sorted by x; a repeated x keeps its last row (a resume without truncation)."""
    points: dict[str, dict] = defaultdict(dict)
    for row in rows:
        points[row["name"]][row[x_field]] = row["value"]
    return {name: (sorted(p), [p[x] for x in sorted(p)]) for name, p in points.items()}


def _new_figure(panels: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 2.6 * panels), dpi=110)
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(panels, 1, i + 1) for i in range(panels)]


def _legend_outside(ax) -> None:
    """The legend to the right of the axes: it never covers a curve."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_output(path, "wb") as handle:
        fig.savefig(handle, format="png", bbox_inches="tight")  # the legends outside the axes included
    return path


def stage_figure(stage, rows):
    """The figure of one stage: a panel per group of scalars present (loss parts, accuracy, LR, throughput, data
    wait, then the rest); None without any scalar."""
    series = _series(rows, "global_step")
    groups, claimed = [], set()
    for title, label, belongs in PANELS:
        names = sorted(n for n in series if belongs(n) and n not in claimed)
        if names:
            groups.append((title, label, names))
            claimed.update(names)
    rest = sorted(set(series) - claimed)
    if rest:
        groups.append(("other", OTHER_LABEL, rest))
    if not groups:
        return None
    fig, axes = _new_figure(len(groups))
    for ax, (title, label, names) in zip(axes, groups):
        for name in names:
            xs, values = series[name]
            ax.plot(xs, values, label=name, linewidth=1.0, marker="." if len(xs) < 30 else None)
        ax.set_title(f"stage {stage}: {title}", fontsize=9)
        ax.set_xlabel("global step", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
        _legend_outside(ax)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if title == "throughput" and all(v > 0 for n in names for v in series[n][1]):
            ax.set_yscale("log")
    return fig


def validation_figure(rows):
    """`val/<metric>[/<protocol>]` across epochs: one panel per metric, one line per protocol (and stage)."""
    from matplotlib.ticker import MaxNLocator

    stages = sorted({row["stage"] for row in rows}, key=_stage_order)
    by_metric: dict[str, dict[str, tuple[list, list]]] = defaultdict(dict)
    for stage in stages:
        for name, (xs, values) in _series([r for r in rows if r["stage"] == stage], "epoch").items():
            metric, _, protocol = name[len(VALIDATION_PREFIX):].partition("/")
            label = protocol or "mean"
            by_metric[metric][label if len(stages) == 1 else f"{label} (stage {stage})"] = (xs, values)
    fig, axes = _new_figure(len(by_metric))
    for ax, metric in zip(axes, sorted(by_metric)):
        for label, (xs, values) in sorted(by_metric[metric].items()):
            ax.plot(xs, values, label=label, marker=".", linewidth=1.0)
        ax.set_title(f"validation: {metric}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel(VALIDATION_LABELS.get(metric, f"{metric} (as logged)"), fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        _legend_outside(ax)
    return fig


def plot_training_curves(csv_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write `stage<S>.png` for each stage with training scalars and `validation.png` if `val/*` scalars exist;
    return the paths written. Non-finite values (a diverged loss) are left out of the lines."""
    rows = [row for row in read_scalar_rows(csv_path) if math.isfinite(row["value"])]
    out_dir = Path(out_dir)
    written = []
    training = [row for row in rows if not row["name"].startswith(VALIDATION_PREFIX)]
    for stage in sorted({row["stage"] for row in training}, key=_stage_order):
        fig = stage_figure(stage, [row for row in training if row["stage"] == stage])
        if fig is not None:
            written.append(_save(fig, out_dir / f"stage{stage}.png"))
    validation = [row for row in rows if row["name"].startswith(VALIDATION_PREFIX)]
    if validation:
        written.append(_save(validation_figure(validation), out_dir / "validation.png"))
    return written
