"""Running one function over many tasks in worker processes — or in this process when there is one worker."""

from __future__ import annotations

import multiprocessing
import os
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator


@contextmanager
def worker_results(function: Callable, tasks: Iterable, workers: int, ordered: bool = False) -> Iterator[Iterator]:
    """Yield an iterator over `function(task)` for every task.

    With more than one worker the tasks run in a process pool (forked on POSIX, so `function` may be any
    module-level function); results come in completion order unless `ordered`. Open the pool before starting
    threads such as tqdm's monitor, so that no thread is running when workers fork. On a normal exit the pool is
    closed and joined (the workers' CPU time then counts in RUSAGE_CHILDREN); on an error it is terminated.
    """
    if workers <= 1:
        yield map(function, tasks)
        return
    pool = multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers)
    try:
        yield (pool.imap if ordered else pool.imap_unordered)(function, tasks, chunksize=1)
        pool.close()
        pool.join()
    finally:
        pool.terminate()


class WorkerPool:
    """One set of worker processes for several rounds of work (`xfd-shard` reads folders, then stats frames,
    then writes shards), so that the processes start once; with one worker everything runs in this process."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = None
        if workers > 1:
            self._pool = multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers)

    def map(self, function: Callable, tasks: list, ordered: bool = True) -> Iterator:
        """`function(task)` for every task: in task order, or in completion order when not `ordered`."""
        if self._pool is None:
            return map(function, tasks)
        chunksize = 1 if not ordered else max(1, len(tasks) // (self.workers * 16))  # small tasks go in batches
        return (self._pool.imap if ordered else self._pool.imap_unordered)(function, tasks, chunksize=chunksize)

    def close(self, error: bool = False) -> None:
        if self._pool is not None:
            if error:
                self._pool.terminate()
            else:
                self._pool.close()
                self._pool.join()
            self._pool = None


@contextmanager
def worker_pool(workers: int) -> Iterator[WorkerPool]:
    """A WorkerPool closed and joined on a normal exit, terminated on an error. Open it before starting threads
    (tqdm's monitor), so that no thread is running when the workers fork."""
    pool = WorkerPool(workers)
    try:
        yield pool
    except BaseException:
        pool.close(error=True)
        raise
    pool.close()
