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
