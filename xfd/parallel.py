"""Running one function over many tasks in worker processes — or in this process when there is one worker."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator


class WorkerPool:
    """One set of worker processes for several rounds of work (`xfd-shard` reads folders, then stats frames,
    then writes shards), so that the processes start once; with one worker everything runs in this process.

    Built on `concurrent.futures.ProcessPoolExecutor`, whose one manager thread both waits for and reads the
    results. (`multiprocessing.Pool`'s worker-handler thread wakes whenever a result is waiting to be read by
    another thread, and so spins while the workers report: parent CPU taken from the workers on a small machine.)
    """

    def __init__(self, workers: int):
        self.workers = workers
        self._executor = None
        if workers > 1:
            context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
            self._executor = ProcessPoolExecutor(workers, mp_context=context)
            self._executor.submit(int).result()  # forks every worker now, before the caller starts threads

    def map(self, function: Callable, tasks: list, ordered: bool = True) -> Iterator:
        """`function(task)` for every task: in task order, or in completion order when not `ordered`."""
        if self._executor is None:
            return map(function, tasks)
        if ordered:  # small tasks go in batches
            return self._executor.map(function, tasks, chunksize=max(1, len(tasks) // (self.workers * 16)))
        return (future.result() for future in as_completed([self._executor.submit(function, task) for task in tasks]))

    def close(self, error: bool = False) -> None:
        """Wait for the workers; after an error, first cancel the tasks not yet started (running ones finish, so
        that no worker is left writing)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=error)
            self._executor = None


@contextmanager
def worker_pool(workers: int) -> Iterator[WorkerPool]:
    """A WorkerPool closed and joined on a normal exit; on an error its tasks not yet started are cancelled and the
    running ones finish before the error goes on. Open it before starting threads (tqdm's monitor), so that no
    thread is running when the workers fork."""
    pool = WorkerPool(workers)
    try:
        yield pool
    except BaseException:
        pool.close(error=True)
        raise
    pool.close()


@contextmanager
def worker_results(function: Callable, tasks: Iterable, workers: int, ordered: bool = False) -> Iterator[Iterator]:
    """`function(task)` for every task, over a one-round `worker_pool`: in task order when `ordered`, else in
    completion order. Open it before starting threads such as tqdm's monitor (the workers fork at once)."""
    with worker_pool(workers) as pool:
        yield pool.map(function, list(tasks), ordered=ordered)
