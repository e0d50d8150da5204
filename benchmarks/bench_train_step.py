"""Sparse ``embtool train-step`` end to end (docs/performance.md): a fresh process applying one step of 10k
ids to a 1M x 128 table, and the same on a 4M x 128 table.

Budget: <= 0.5 s wall on 1M x 128, and the 4M table within 20 % of that (the step writes only the
touched rows of weight and state, in place, so its cost must not grow with the table).  Tables
are made by ``embtool init --sparse`` in a temporary folder; each optimizer's first step (which
adds its ``optim.*`` tensors by rewriting the file) is run once untimed, then the steady-state
step is timed.

Usage: python benchmarks/bench_train_step.py [--rows 1000000 4000000] [--dim 128] [--ids 10000]
       [--repeat 5] [--optimizers sgd adagrad sparse-adam]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import embtool_cmd, wall  # noqa: E402

BUDGET_S = 0.5
BUDGET_GROWTH = 1.2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--ids", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--optimizers", nargs="+", default=["sgd", "adagrad", "sparse-adam"])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results: dict[str, dict[int, float]] = {name: {} for name in args.optimizers}
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        tmp = Path(tmp)
        grad = tmp / "grad.npy"
        np.save(grad, rng.standard_normal((args.ids, args.dim), dtype=np.float32))
        for rows in args.rows:
            ids = tmp / f"ids{rows}.npy"
            np.save(ids, rng.integers(0, rows, args.ids))
            for name in args.optimizers:
                table = tmp / "t.safetensors"
                subprocess.run(embtool_cmd("init", table, "-n", rows, "-d", args.dim, "--sparse", "--seed", 1,
                                           "--force"), check=True, stderr=subprocess.DEVNULL)
                cmd = embtool_cmd("train-step", table, "-i", ids, "--grad", grad, "--optimizer", name,
                                  "--lr", "0.01")
                subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)  # adds the optimizer state
                # Flush the gigabytes the set-up just wrote, so the timed steps measure a step and
                # not the writeback of the table's creation (a step's fdatasync would wait for it).
                os.sync()
                best, median = wall(cmd, repeat=args.repeat)
                results[name][rows] = best
                size = table.stat().st_size / 2**30
                print(f"train-step {name:<12} {args.ids} ids, {rows:>9,} x {args.dim} ({size:4.1f} GB file): "
                      f"best {best:6.3f} s  median {median:6.3f} s  "
                      f"{'ok' if best <= BUDGET_S else f'OVER the {BUDGET_S} s budget'}")
                table.unlink()
    if len(args.rows) > 1:
        small, large = min(args.rows), max(args.rows)
        for name, times in results.items():
            ratio = times[large] / times[small]
            print(f"{name:<12} {large:,} / {small:,} rows time ratio {ratio:5.2f} "
                  f"({'ok' if ratio <= BUDGET_GROWTH else f'ABOVE the {BUDGET_GROWTH} budget'})")


if __name__ == "__main__":
    main()
