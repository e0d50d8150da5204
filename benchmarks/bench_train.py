"""Training-step budgets (docs/performance.md), embtool against PyTorch measured in the same run.

1. Dense embedding backward + SGD step, 1M ids x 128 on a 1M x 128 table: embtool's
   ``embedding_backward`` + ``optim.step`` + writing the changed rows back into the weight, against
   torch's ``aten.embedding_dense_backward`` + ``optim.SGD.step`` (torch threads = numba threads).
   Budget: ratio torch/embtool >= 1.5.
2. The kernel time of a sparse step of 10k ids on a 1M x 128 table (sparse backward + SparseAdam
   and SGD on the touched rows), the compute part of the <= 0.5 s end-to-end budget.

The backend is chosen as in the library (EMBTOOL_BACKEND, else by size: Numba for the dense
step, numpy for a 10k-id sparse step, whose end-to-end time Numba's import would dominate).

Usage: python benchmarks/bench_train.py [--rows 1000000] [--ids 1000000] [--dim 128] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--ids", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--sparse-ids", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import numba
    import torch

    from embtool import kernels
    from embtool.backward import embedding_backward
    from embtool.optim import OptimizerSpec, init_state, step

    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    ids = rng.integers(0, args.rows, args.ids)
    grad = rng.standard_normal((args.ids, args.dim), dtype=np.float32)

    # -- 1. dense backward + SGD ------------------------------------------------------------
    spec = OptimizerSpec("sgd", lr=0.01)
    ours_w = weight.copy()

    def ours():
        rg = embedding_backward(ids, grad, num_embeddings=args.rows)
        up = step(spec, 0, ours_w, {}, rg)
        ours_w[up.rows] = up.weight

    tw = torch.nn.Parameter(torch.from_numpy(weight.copy()))
    opt = torch.optim.SGD([tw], lr=0.01)
    tids, tgrad = torch.from_numpy(ids), torch.from_numpy(grad)

    def reference():
        tw.grad = torch.ops.aten.embedding_dense_backward(tgrad, tids, args.rows, -1, False)
        opt.step()

    ours()  # compile / warm caches
    reference()
    # interleaved, best of each: the machine's load changes during the run
    t_ours, t_ref = np.inf, np.inf
    for _ in range(args.repeat):
        t_ours = min(t_ours, best_of(ours, 1, warmup=0))
        t_ref = min(t_ref, best_of(reference, 1, warmup=0))
    same = np.array_equal(ours_w.view(np.int32), tw.detach().numpy().view(np.int32))
    print(f"dense backward + SGD, {args.ids} ids x {args.dim} on {args.rows} rows, {threads} threads:")
    print(f"  embtool {t_ours * 1e3:8.1f} ms   torch {t_ref * 1e3:8.1f} ms   "
          f"ratio {t_ref / t_ours:5.2f}x (budget >= 1.5x)   weights bit-identical: {same}")

    # -- 2. sparse step kernels ---------------------------------------------------------------
    sids = rng.integers(0, args.rows, args.sparse_ids)
    sgrad = rng.standard_normal((args.sparse_ids, args.dim), dtype=np.float32)
    for name, hp in (("sgd", dict(lr=0.01)), ("sparse-adam", dict(lr=0.01)), ("adagrad", dict(lr=0.01))):
        sspec = OptimizerSpec(name, **hp)
        state = init_state(sspec, weight.shape)

        def sparse_step():
            rg = embedding_backward(sids, sgrad, num_embeddings=args.rows, sparse=True)
            return step(sspec, 3, weight, state, rg)

        sparse_step()
        t = best_of(sparse_step, args.repeat, warmup=0)
        backend = kernels.backend_name(args.sparse_ids * args.dim * kernels.PER_ROW_UPDATE)
        print(f"sparse {name} step, {args.sparse_ids} ids on {args.rows} rows: backward + step "
              f"{t * 1e3:7.2f} ms ({backend} backend)")


if __name__ == "__main__":
    main()
