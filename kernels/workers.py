"""CPU worker threads for the NumPy twins: independent tasks (distance tiles, row chunks, query blocks) run on
`workers` threads, each calling a single-threaded BLAS.

Why threads with one BLAS thread each, rather than one multi-threaded BLAS call at a time: the element-wise NumPy
work between GEMMs (top-k selection, sparse steps) then runs on every core too, NumPy releases the GIL in its
loops, and every GEMM is computed by the same single-threaded code whatever the number of workers or ranks, so its
result does not depend on how the work was split (the 1-rank = N-rank equality rests on that).

CuPy work is queued on one stream: callers pass workers=1 there.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS limited to one thread in this process for the duration (restored on exit)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def even_chunks(start: int, stop: int, workers: int, max_rows: int) -> list[tuple[int, int]]:
    """Row ranges covering start..stop-1: the fewest chunks of at most `max_rows` rows whose count is a multiple of
    `workers`, of near-equal sizes, so that every worker gets the same share (5 chunks on 2 workers leave one
    worker idle for a fifth of the step)."""
    rows = stop - start
    if rows <= 0:
        return []
    per_round = workers * max(1, max_rows)
    count = min(rows, workers * -(-rows // per_round))
    return [(start + rows * i // count, start + rows * (i + 1) // count) for i in range(count)]


def run_all(function: Callable, tasks: Iterable, workers: int) -> list:
    """[function(task) for task in tasks], on `workers` threads; results in task order."""
    tasks = list(tasks)
    if workers <= 1 or len(tasks) <= 1:
        return [function(task) for task in tasks]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, tasks))


def run_ordered(function: Callable, tasks: Iterable, workers: int, ahead: int | None = None) -> Iterator:
    """function(task) for each task, yielded in task order while up to `ahead` (default: workers) later tasks run
    in the background, so memory holds at most ahead + 1 results."""
    if workers <= 1:
        yield from map(function, tasks)
        return
    ahead = ahead or workers
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.submit(function, task))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
