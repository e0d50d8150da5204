"""EmbeddingBag budget (docs/performance.md), embtool against PyTorch measured in the same run.

1M ids in bags of 50 (20k bags) over a 1M x 128 float32 table, for each mode (and sum with
per_sample_weights): ``embtool.bag.embedding_bag`` against ``F.embedding_bag`` with
``torch.set_num_threads`` equal to Numba's thread count.  Budget: ratio torch/embtool >= 5 for
max, >= 1 for sum, mean and weighted sum.  The outputs are also compared (they should be
bit-identical).  torch's OpenMP workers sleep between calls (``_common``: they would spin on the
cores the next embtool call runs on).

Usage: python benchmarks/bench_bag.py [--rows 1000000] [--ids 1000000] [--bag 50] [--dim 128] [--repeat 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import report, threads  # noqa: E402

BUDGETS = {"sum": 1.0, "mean": 1.0, "max": 5.0, "sum+weights": 1.0}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--ids", type=int, default=1_000_000)
    ap.add_argument("--bag", type=int, default=50)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F

    from embtool import kernels
    from embtool.bag import embedding_bag

    torch.set_num_threads(threads())
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    ids = rng.integers(0, args.rows, args.ids)
    offsets = np.arange(0, args.ids, args.bag)
    psw = rng.standard_normal(args.ids, dtype=np.float32)
    tw, tids, toff, tpsw = map(torch.from_numpy, (weight, ids, offsets, psw))
    print(f"EmbeddingBag: {args.ids} ids in bags of {args.bag} on a {args.rows} x {args.dim} table, "
          f"{threads()} threads, {kernels.backend_name(args.ids * args.dim)} backend")
    for name, budget in BUDGETS.items():
        mode = name.split("+")[0]
        p = psw if "weights" in name else None
        tp = tpsw if "weights" in name else None

        def ours():
            return embedding_bag(weight, ids, offsets, mode=mode, per_sample_weights=p)

        def reference():
            with torch.no_grad():
                return F.embedding_bag(tids, tw, toff, mode=mode, per_sample_weights=tp)

        ours()  # compile / warm caches
        reference()
        t_ours = t_ref = np.inf
        for _ in range(args.repeat):  # interleaved: the machine's load changes during the run
            t, got = timed(ours)
            t_ours = min(t_ours, t)
            t, want = timed(reference)
            t_ref = min(t_ref, t)
        same = np.array_equal(got, want.numpy(), equal_nan=True)
        report(f"  {name} (bit-identical: {same})", t_ours, t_ref, "torch", budget)


if __name__ == "__main__":
    main()
