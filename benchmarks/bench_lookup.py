"""docs/performance.md: gather 1M ids from a 1M x 128 table (>= 2.5x F.embedding) and max_norm renorm of 1M
random ids (>= 10x torch.embedding_renorm_), both on the CPU with the same number of threads.

    python benchmarks/bench_lookup.py [--rows N] [--dim D] [--ids K]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import best_of, report, threads

from embtool import ops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--ids", type=int, default=1_000_000)
    a = ap.parse_args()
    n_threads = threads()
    torch.set_num_threads(n_threads)
    print(f"{a.rows} x {a.dim} float32 table, {a.ids} random ids, {n_threads} threads "
          f"(torch {torch.__version__})")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((a.rows, a.dim), dtype=np.float32)
    ids = rng.integers(0, a.rows, a.ids)
    tw, tids = torch.from_numpy(w), torch.from_numpy(ids)

    ours = best_of(lambda: ops.embedding(w, ids))
    ref = best_of(lambda: torch.nn.functional.embedding(tids, tw))
    assert np.array_equal(ops.embedding(w, ids), torch.nn.functional.embedding(tids, tw).numpy())
    report("gather (F.embedding)", ours, ref, "torch", 2.5)

    # renorm mutates: every timed run starts from a fresh copy (the copy is not timed)
    def timed_renorm(fn, arr):
        import time

        best = float("inf")
        for _ in range(4):
            fresh = arr.copy()
            t = time.perf_counter()
            fn(fresh)
            best = min(best, time.perf_counter() - t)
        return best, fresh

    big = w * 3
    ours, mine = timed_renorm(lambda x: ops.embedding_renorm_(x, ids, 1.0, 2.0), big)
    ref, theirs = timed_renorm(lambda x: torch.embedding_renorm_(torch.from_numpy(x), tids, 1.0, 2.0), big)
    assert np.array_equal(mine, theirs)
    report("max_norm renorm (embedding_renorm_)", ours, ref, "torch", 10)


if __name__ == "__main__":
    main()
