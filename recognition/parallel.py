"""Run one request's independent jobs on its own thread plus a few helpers from a shared pool.

Verifying a shortlist is K independent jobs whose heavy parts (BLAS products, OpenCV's RANSAC) release the GIL. The
calling thread always works through the jobs itself and pool threads join in when they are free, so a busy pool
(the service under load, every request asking for help) never makes a request wait for another's jobs: it then
simply runs on its own thread, as if sequential. Results come back in the jobs' order, whoever ran them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")

MAX_AUTO_THREADS = 4  # beyond this the shortlist's 20 jobs are too few to keep more threads busy


def resolve_threads(threads: int) -> int:
    """``threads`` as configured (0: one per core, at most MAX_AUTO_THREADS)."""
    if threads < 0:
        raise ValueError("verify_threads must be 0 (one per core) or a positive number of threads")
    return threads or max(1, min(MAX_AUTO_THREADS, os.cpu_count() or 1))


def map_with_helpers(pool: ThreadPoolExecutor, run: Callable[[Job], Result], jobs: Sequence[Job],
                     threads: int) -> list[Result]:
    """``[run(job) for job in jobs]`` on the calling thread and up to ``threads - 1`` threads of ``pool``."""
    if threads <= 1 or len(jobs) < 2:
        return [run(job) for job in jobs]
    results: list[Result | None] = [None] * len(jobs)
    next_job = iter(range(len(jobs)))
    lock = threading.Lock()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            with lock:
                i = next(next_job, None)
            if i is None:
                return
            try:
                results[i] = run(jobs[i])
            except BaseException:
                stop.set()  # whichever thread fails, no thread takes a new job
                raise

    helpers = [pool.submit(work) for _ in range(min(threads, len(jobs)) - 1)]
    try:
        work()
    finally:
        stop.set()
        for helper in helpers:
            if not helper.cancel():  # a helper that never started has nothing to wait for
                helper.result()
    return results  # type: ignore[return-value]  # every index was filled: work() returned only when none was left
