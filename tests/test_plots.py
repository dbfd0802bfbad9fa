"""The scalar CSV log (append, read, truncate for resume, torn last line) and the training-curve PNGs."""

from __future__ import annotations

import math

import pytest

from xfd.plots import COLUMNS, CsvScalarLog, plot_training_curves, read_scalar_rows, stage_figure, validation_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _fill(log: CsvScalarLog, stage: int, epochs: int, steps: int, start: int = 0) -> int:
    """Training scalars every step and validation scalars every epoch; returns the last global step."""
    global_step = start
    for epoch in range(epochs):
        for step in range(steps):
            global_step += 1
            log.log(stage, epoch, step, global_step, {
                "loss": 3.0 / global_step, "loss/id": 2.0 / global_step, "loss/triplet": 1.0 / global_step,
                "acc": min(1.0, 0.1 * global_step), "lr": 1e-4 * (0.9 ** global_step)})
        if stage == 2:
            log.log(stage, epoch, steps - 1, global_step, {"val/mAP/A2G": 0.1 * epoch, "val/mAP/G2A": 0.2 * epoch,
                                                          "val/mAP": 0.15 * epoch, "val/rank1/A2G": 0.3 * epoch})
    return global_step


def test_log_appends_typed_rows_and_refuses_foreign_files(tmp_path):
    log = CsvScalarLog(tmp_path / "scalars.csv")
    assert log.read() == []
    log.log(1, 0, 3, 4, {"loss": 0.5, "loss/i2tce": float("nan")})
    rows = CsvScalarLog(tmp_path / "scalars.csv").read()  # reopening keeps what was written
    assert rows[0] == {"stage": 1, "epoch": 0, "step": 3, "global_step": 4, "name": "loss", "value": 0.5}
    assert rows[1]["name"] == "loss/i2tce" and math.isnan(rows[1]["value"])
    assert (tmp_path / "scalars.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a scalar log"):
        CsvScalarLog(tmp_path / "other.csv")
    with pytest.raises(ValueError, match="line break"):
        log.log(1, 0, 0, 5, {"bad\nname": 1.0})


def test_truncate_after_drops_later_rows_so_a_resumed_run_does_not_duplicate(tmp_path):
    path = tmp_path / "scalars.csv"
    log = CsvScalarLog(path)
    last = _fill(log, 1, epochs=2, steps=3)  # global steps 1..6
    uninterrupted = log.read() + []
    dropped = log.truncate_after(4)
    assert dropped == 2 * 5 and max(r["global_step"] for r in log.read()) == 4
    assert not list(tmp_path.glob(".*.tmp"))  # rewritten atomically, no temporaries left
    for global_step in (5, 6):  # the resumed run logs steps 5 and 6 again
        log.log(1, 1, global_step - 4, global_step, {
            "loss": 3.0 / global_step, "loss/id": 2.0 / global_step, "loss/triplet": 1.0 / global_step,
            "acc": min(1.0, 0.1 * global_step), "lr": 1e-4 * (0.9 ** global_step)})
    assert log.read() == uninterrupted and last == 6


def test_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "scalars.csv"
    log = CsvScalarLog(path)
    log.log(1, 0, 0, 1, {"loss": 1.0})
    with open(path, "a") as handle:
        handle.write("1,0,1,2,lo")  # a run killed in the middle of a write
    assert [r["global_step"] for r in read_scalar_rows(path)] == [1]
    log.truncate_after(10)  # resuming rewrites only complete rows
    log.log(1, 0, 1, 2, {"loss": 0.5})
    assert [r["global_step"] for r in log.read()] == [1, 2]


def test_plots_are_pngs_one_per_stage_plus_validation(tmp_path):
    log = CsvScalarLog(tmp_path / "scalars.csv")
    last = _fill(log, 1, epochs=2, steps=4)
    _fill(log, 2, epochs=3, steps=4, start=last)
    written = plot_training_curves(tmp_path / "scalars.csv", tmp_path / "plots")
    assert sorted(p.name for p in written) == ["stage1.png", "stage2.png", "validation.png"]
    for path in written:
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["stage1.png", "stage2.png", "validation.png"]


def test_stage_without_training_rows_and_log_without_validation(tmp_path):
    log = CsvScalarLog(tmp_path / "scalars.csv")
    _fill(log, 2, epochs=1, steps=3)  # stage 1 logged nothing (e.g. skipped); stage 2 has validation
    written = plot_training_curves(log.path, tmp_path / "out")
    assert [p.name for p in written] == ["stage2.png", "validation.png"]
    only_training = CsvScalarLog(tmp_path / "train_only.csv")
    _fill(only_training, 1, epochs=1, steps=2)
    assert [p.name for p in plot_training_curves(only_training.path, tmp_path / "out2")] == ["stage1.png"]
    empty = CsvScalarLog(tmp_path / "empty.csv")
    assert plot_training_curves(empty.path, tmp_path / "out3") == []


def _check_readable(fig) -> None:
    """Every panel: a y-axis label with its unit in parentheses, a legend that lies outside the axes."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        label = ax.get_ylabel()
        assert "(" in label and label.endswith(")"), label
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.x0 >= ax.get_window_extent(renderer).x1, ax.get_title()  # right of the axes: covers nothing


def test_every_panel_has_a_unit_and_a_legend_that_covers_no_curve(tmp_path):
    log = CsvScalarLog(tmp_path / "scalars.csv")
    last = _fill(log, 1, epochs=1, steps=3)
    _fill(log, 2, epochs=3, steps=4, start=last)
    log.log(2, 2, 3, last + 12, {"speed/tracklets_per_s": 3.5, "speed/frames_per_s": 56.0,
                                 "speed/data_wait_pct": 12.0, "something/new": 1.0})
    rows = log.read()
    training = [r for r in rows if not r["name"].startswith("val/")]
    fig = stage_figure(2, [r for r in training if r["stage"] == 2])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["stage 2: loss", "stage 2: accuracy", "stage 2: learning rate", "stage 2: throughput",
                      "stage 2: data wait", "stage 2: other"]
    _check_readable(fig)
    validation = validation_figure([r for r in rows if r["name"].startswith("val/")])
    assert [ax.get_ylabel() for ax in validation.axes] == ["mAP (%)", "rank-1 (%)"]
    _check_readable(validation)
