"""Watching a run: the rank-0 progress bar and the scalars every `log_every` optimizer steps.

Per micro-step the trainer reports the loss parts (already averaged over ranks), the tracklets and frames it
processed, and how long it waited for data vs how long the step took. Every `log_every` optimizer steps the
window's means go to DeepSpeed's monitor (TensorBoard + CSV, rank 0) and to the run's `scalars.csv` (the
source of the PNG curves), and the bar's postfix shows loss, accuracy, LR, tracklets/s, frames/s and the share
of time spent waiting for data.
"""

from __future__ import annotations

import time
from collections import defaultdict

from tqdm import tqdm

from xfd.plots import CsvScalarLog


class StageProgress:
    """One stage's bar and scalar window. Only rank 0 draws and writes; every rank may call it."""

    def __init__(self, *, stage: int, total_steps: int, done_steps: int, is_main: bool, monitor, log: CsvScalarLog
                 | None, log_every: int):
        self.stage, self.is_main, self.monitor, self.log, self.log_every = stage, is_main, monitor, log, log_every
        self.bar = tqdm(total=total_steps, initial=done_steps, desc=f"stage {stage}", unit="step",
                        disable=not is_main, dynamic_ncols=True)
        self._reset()
        self.totals = {"wait": 0.0, "time": 0.0}

    def _reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.micro = 0
        self.tracklets = self.frames = 0
        self.wait = 0.0
        self.started = time.perf_counter()

    def micro_step(self, scalars: dict[str, float], tracklets: int, frames: int, wait_seconds: float) -> None:
        for name, value in scalars.items():
            self.sums[name] += float(value)
        self.micro += 1
        self.tracklets += tracklets
        self.frames += frames
        self.wait += wait_seconds

    def optimizer_step(self, *, epoch: int, step: int, global_step: int, lr: float) -> None:
        """Close a step: advance the bar; every `log_every` steps write the window's means."""
        self.bar.update(1)
        if global_step % self.log_every:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        means = {name: total / max(self.micro, 1) for name, total in self.sums.items()}
        means.update({"lr": lr, "speed/tracklets_per_s": self.tracklets / elapsed,
                      "speed/frames_per_s": self.frames / elapsed, "speed/data_wait_pct": 100.0 * self.wait / elapsed})
        self.totals["wait"] += self.wait
        self.totals["time"] += elapsed
        if self.is_main:
            self.bar.set_postfix_str(
                f"loss {means.get('loss', float('nan')):.4f} acc {means.get('acc', float('nan')):.3f} lr {lr:.2e} "
                f"{means['speed/tracklets_per_s']:.1f} trk/s {means['speed/frames_per_s']:.0f} fr/s "
                f"wait {means['speed/data_wait_pct']:.1f}%", refresh=False)
            if self.monitor is not None:
                self.monitor.write_events([(f"stage{self.stage}/{k}", v, global_step) for k, v in means.items()])
            if self.log is not None:
                self.log.log(self.stage, epoch, step, global_step, means)
        self._reset()

    def write(self, scalars: dict[str, float], *, epoch: int, step: int, global_step: int) -> None:
        """Scalars outside the step window (validation): monitor + CSV, rank 0."""
        if not self.is_main:
            return
        if self.monitor is not None:
            self.monitor.write_events([(k, float(v), global_step) for k, v in scalars.items()])
        if self.log is not None:
            self.log.log(self.stage, epoch, step, global_step, scalars)

    def data_wait_share(self) -> float:
        """Fraction of the logged steps' wall time spent waiting for data (the bench's figure)."""
        return self.totals["wait"] / self.totals["time"] if self.totals["time"] else 0.0

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
