"""Benchmark: bootstrap intervals of mAP and rank-1 over queries (xfd.eval.bootstrap), vectorised, against the plain
loop over resamples that a first implementation would write, on the same per-query values in the same run.

    python bench/bootstrap.py                      # 10k queries x 1,000 resamples (the goal: < 2 s)
    python bench/bootstrap.py --queries 100000 --resamples 2000

Also times a paired comparison (two rankings of the same queries) and the per-protocol + mean + pooled intervals
`score` computes for three protocols of that size.
"""

from __future__ import annotations

import argparse

import numpy as np

from xfd.eval.bootstrap import BootstrapOptions, intervals, paired_difference, percentile_interval

from timing import best_time  # bench/timing.py: scripts run from bench/


def loop_bootstrap(values: np.ndarray, resamples: int, seed: int) -> list:
    """One resample at a time (rng.choice per resample): the baseline."""
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, values.shape[1]))
    for b in range(resamples):
        draws[b] = values[rng.choice(values.shape[0], values.shape[0])].mean(axis=0)
    return percentile_interval(draws, 0.95)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    ap = rng.beta(0.6, 1.2, args.queries)  # a plausible spread of per-query APs
    hit1 = (rng.random(args.queries) < ap).astype(float)
    values = np.stack([ap, hit1], axis=1)  # (n, 2): what score() resamples for mAP and rank-1
    options = BootstrapOptions(args.resamples, seed=0)

    t_fast, (m, r1) = best_time(lambda: intervals([values], options), args.repeat)
    t_loop, _ = best_time(lambda: loop_bootstrap(values, args.resamples, 0), 1)
    t_three, _ = best_time(lambda: [intervals([values], options, i) for i in range(3)]
                           + [intervals([values] * 3, options)], args.repeat)
    other = [np.clip(ap + rng.normal(0, 0.05, ap.size), 0, 1)]
    t_paired, diff = best_time(lambda: paired_difference([ap], other, options), args.repeat)
    print(f"{args.queries} queries x {args.resamples} resamples (mAP and rank-1): vectorised {t_fast:.3f} s, "
          f"loop over resamples {t_loop:.3f} s, speed-up {t_loop / t_fast:.1f}x "
          f"({'under' if t_fast < 2 else 'OVER'} the 2 s bar); mAP {100 * ap.mean():.2f} "
          f"[{100 * m.low:.2f}, {100 * m.high:.2f}], R1 {100 * hit1.mean():.2f} [{100 * r1.low:.2f}, {100 * r1.high:.2f}]")
    print(f"three protocols of that size + their mean: {t_three:.3f} s; paired comparison: {t_paired:.3f} s "
          f"(Δ {100 * diff.delta:+.2f}, p {diff.p_value:.3f})", flush=True)


if __name__ == "__main__":
    main()
