"""Parallel loops for the Numba kernels, without parfors.

A kernel whose items (rows, bags, chunks of text) are independent is compiled as a serial,
GIL-free function over a range of items; ``run`` cuts the range into one slice per thread and runs
the slices on a shared thread pool.  Numba's ``parallel=True`` does the same on its own pool, but
compiling a ``prange`` loop costs 1-5 s per kernel on first use (measured with
``benchmarks/bench_cold.py --kernels``), which every fresh install pays; a serial kernel compiles
in a fraction of that and runs as fast.

The thread count is Numba's: ``NUMBA_NUM_THREADS`` (default: the CPU count).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _forget_after_fork():
    """A forked child's copy of the pool has no threads (and the lock may be held): start over."""
    global _pool, _lock
    _pool = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def threads() -> int:
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _executor() -> ThreadPoolExecutor:
    """The shared pool (the calling thread is the last worker)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, threads() - 1), thread_name_prefix="embtool-kernel")
        return _pool


def run(fn, n: int, grain: int = 1) -> list:
    """``[fn(lo, hi), ...]`` over consecutive slices covering ``range(n)``, in parallel: one slice
    per thread, none smaller than ``grain`` items (a small job runs on the calling thread only).
    The calling thread runs the first slice itself."""
    parts = min(threads(), max(1, n // max(1, grain)))
    cuts = [n * p // parts for p in range(parts + 1)]
    if parts == 1:
        return [fn(0, n)]
    futures = [_executor().submit(fn, cuts[p], cuts[p + 1]) for p in range(1, parts)]
    first = fn(cuts[0], cuts[1])
    return [first] + [f.result() for f in futures]


def split(kernel, n: int, grain: int, *args) -> list:
    """``run`` for a kernel whose last two arguments are the slice: ``kernel(*args, lo, hi)``."""
    return run(lambda lo, hi: kernel(*args, lo, hi), n, grain)


def each(fn, n: int) -> list:
    """``[fn(0), ..., fn(n-1)]``, each thread taking the next item as it frees up (items of
    uneven cost, such as chunks of text)."""
    workers = min(threads(), n)
    if workers <= 1:
        return [fn(i) for i in range(n)]
    results = [None] * n
    items = iter(range(n))
    take = threading.Lock()

    def work():
        while True:
            with take:
                i = next(items, None)
            if i is None:
                return
            results[i] = fn(i)

    futures = [_executor().submit(work) for _ in range(workers - 1)]
    try:
        work()
    finally:
        for f in futures:
            f.result()
    return results
