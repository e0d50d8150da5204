"""Shared timing helpers for the benchmark scripts (not a test: nothing here asserts speed)."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

# PyTorch's OpenMP workers spin for a while after each parallel call (GNU OpenMP: up to about
# 0.2 s) before they sleep.  The scripts alternate torch and embtool calls on the same cores, so
# spinning workers would take a core from the embtool call timed next (EmbeddingBag sum measured
# 36-45 ms that way, 28-31 ms without); passive workers sleep at once.  torch's own times are the
# same either way here (31-38 ms for the same sum).  Set before the scripts import torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def best_of(fn, repeat: int = 5, warmup: int = 1) -> float:
    """The fastest of ``repeat`` wall-clock runs of ``fn()`` (after ``warmup`` untimed runs)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def wall(cmd, repeat: int = 5, env=None) -> tuple[float, float]:
    """(best, median) wall time of a fresh process running ``cmd``."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def embtool_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "embtool", *map(str, args)]


def threads() -> int:
    import numba

    return numba.get_num_threads()


def report(name: str, ours: float, ref: float, ref_name: str, budget: float | None = None) -> None:
    ratio = ref / ours
    verdict = "" if budget is None else ("  ok" if ratio >= budget else f"  BELOW the {budget}x budget")
    print(f"{name:<44} embtool {ours * 1e3:9.1f} ms   {ref_name} {ref * 1e3:9.1f} ms   "
          f"ratio {ratio:5.2f}x{verdict}")
