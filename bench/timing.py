"""The benchmarks' one timing rule: the best of `repeat` runs (the least disturbed by other work on the machine)."""

from __future__ import annotations

import time


def best_time(fn, repeat: int):
    """(best wall seconds over `repeat` calls of `fn`, the last call's result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result
