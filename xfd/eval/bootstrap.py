"""Bootstrap confidence intervals over queries, and paired comparisons of two rankings of the same queries.

A protocol's mAP is the mean of per-query APs and its rank-k the mean of per-query hit indicators, so resampling
queries with replacement and taking the mean again gives the sampling distribution of each figure; the interval
is its percentile interval (default 95 %, 1,000 resamples, seeded). Everything is vectorised: each chunk of
resamples is one (chunk, n) index draw and one gather, so 10k queries × 1,000 resamples take well under a second
(bench/bootstrap.py).

- Figures over several protocols ("mean of the three") resample each protocol's queries on their own
  (a stratified bootstrap) and average the protocols' resampled means.
- A paired comparison draws the same resamples for both rankings, so query difficulty cancels: Δ's interval,
  and the two-sided p-value of "no difference", p = (1 + #{|Δ* − Δ| ≥ |Δ|}) / (1 + B) (the resampled Δ* shifted
  to the null). Comparing a ranking with itself gives Δ = 0 and p = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK_ELEMENTS = 1 << 22  # indices drawn at once (32 MB of int64)
POOLED_STRATUM = 10_000  # the pooled figures' resamples: a stream of their own, apart from the protocols'


@dataclass(frozen=True)
class BootstrapOptions:
    """Resamples (>= 1,000 for a 95 % interval worth reporting), seed and confidence level."""

    resamples: int = 1000
    seed: int = 0
    level: float = 0.95

    def __post_init__(self):
        if self.resamples < 1:
            raise ValueError(f"bootstrap resamples must be >= 1, got {self.resamples}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"confidence level must be in (0, 1), got {self.level}")


@dataclass(frozen=True)
class Interval:
    """A percentile confidence interval of a figure."""

    low: float
    high: float

    def to_list(self) -> list[float]:
        return [self.low, self.high]


def resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, k) column means of `values` (n, k) over B resamples of its rows with replacement."""
    values = np.asarray(values, dtype=np.float64)
    n, k = values.shape
    if n == 0:
        raise ValueError("cannot resample an empty set of queries")
    columns = np.ascontiguousarray(values.T)  # (k, n): each column gathered on its own (contiguous, fastest)
    out = np.empty((resamples, k))
    chunk = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        rows = rng.integers(0, n, size=(stop - start, n))  # (b, n)
        for column in range(k):
            out[start:stop, column] = columns[column][rows].mean(axis=1)
    return out


def percentile_interval(draws: np.ndarray, level: float) -> list[Interval]:
    """One Interval per column of (B, k) resampled figures: the (1 - level) / 2 and (1 + level) / 2 quantiles,
    interpolated linearly between order statistics (numpy.quantile's default, without its per-call overhead,
    which counts when a report computes hundreds of small intervals)."""
    draws = np.sort(np.asarray(draws, dtype=np.float64).reshape(len(draws), -1), axis=0)  # (B, k)
    bounds = []
    for q in ((1.0 - level) / 2, (1.0 + level) / 2):
        position = q * (draws.shape[0] - 1)
        below = int(np.floor(position))
        above = min(below + 1, draws.shape[0] - 1)
        bounds.append(draws[below] + (position - below) * (draws[above] - draws[below]))  # (k,)
    return [Interval(float(a), float(b)) for a, b in zip(*bounds)]


def stratum_rng(options: BootstrapOptions, stratum: int) -> np.random.Generator:
    """The generator of one stratum (protocol): seeded by the options' seed and the stratum's position, so the
    same queries get the same resamples in every call (which makes paired comparisons paired)."""
    return np.random.default_rng([options.seed, stratum])


def stratified_means(strata: list[np.ndarray], options: BootstrapOptions, first_stratum: int = 0) -> np.ndarray:
    """(B, k) mean over strata of each stratum's resampled column means; strata are (n_i, k) arrays, numbered
    from `first_stratum` for their generators."""
    draws = [resampled_means(values, options.resamples, stratum_rng(options, first_stratum + i))
             for i, values in enumerate(strata)]
    return np.mean(draws, axis=0)


def intervals(strata: list[np.ndarray], options: BootstrapOptions, first_stratum: int = 0) -> list[Interval]:
    """Confidence intervals of the mean over strata of each column's mean (one stratum: a plain bootstrap)."""
    return percentile_interval(stratified_means(strata, options, first_stratum), options.level)


@dataclass(frozen=True)
class PairedDifference:
    """B − A on the same queries: the observed difference, its interval and the two-sided p-value."""

    delta: float
    interval: Interval
    p_value: float
    resamples: int


def paired_difference(a: list[np.ndarray], b: list[np.ndarray], options: BootstrapOptions,
                      first_stratum: int = 0) -> PairedDifference:
    """Paired bootstrap of mean(B) − mean(A) over strata; a[i] and b[i] are (n_i,) per-query values of the same
    queries in the same order (the same resampled rows are drawn for both)."""
    if len(a) != len(b) or any(np.shape(x) != np.shape(y) for x, y in zip(a, b)):
        raise ValueError("a paired comparison needs the same queries on both sides")
    strata = [np.stack([np.asarray(x, float), np.asarray(y, float)], axis=1) for x, y in zip(a, b)]  # (n_i, 2)
    draws = stratified_means(strata, options, first_stratum)  # (B, 2)
    diffs = draws[:, 1] - draws[:, 0]
    delta = float(np.mean([s[:, 1].mean() - s[:, 0].mean() for s in strata]))
    extreme = np.count_nonzero(np.abs(diffs - delta) >= abs(delta))
    p_value = (1 + extreme) / (1 + options.resamples)
    return PairedDifference(delta, percentile_interval(diffs[:, None], options.level)[0], float(p_value),
                            options.resamples)
