"""Tasks spread over the cores in threads: for work that releases the GIL (numba's nogil
kernels, numpy's shuffles)."""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor


@functools.cache
def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1


def in_parallel(task, count: int) -> None:
    """task(0) ... task(count - 1) in one thread per usable core (at most one per task)."""
    workers = min(count, cores())
    if workers <= 1:
        for index in range(count):
            task(index)
        return
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(task, range(count)))  # list(): re-raises a task's exception
