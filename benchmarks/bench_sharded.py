"""Sharded tables against one file: an 8M x 128 float32 table (4 GB) in 8 shards, its tasks on a Dask
LocalCluster of 2 worker processes (and on threads of this process), against the same table as one
file in one process.

Measured, best of ``--repeat`` runs after a warm-up (so the table is in the page cache, the
kernels are compiled and the row norms are kept, per table file, in a cache under the tables'
folder, as the ``similar`` command keeps them): ``similar`` of one query and of 100 queries
(top 10, the batch path of ``most_similar_many``), ``info --stats``,
``renorm`` of the whole table (``--dry-run``: the pass that finds the rows to change; a real renorm
writes the same rows in both layouts), and a sparse ``train-step`` of 10k ids (SGD, written in
place).  Goal on a 2-core machine: the scan-bound commands at least 1.6x faster on 2 workers than
one file in one process, and the sparse step no slower.  Nothing here asserts speed; the ratios
(one file time / sharded time) are printed, with the machine's state left to the reader (run it
under ``flock``, and say whether the machine was busy).

Usage: python benchmarks/bench_sharded.py [--rows 8000000] [--dim 128] [--shards 8] [--workers 2]
       [--repeat 3] [--dir DIR] [--keep]   (or EMBTOOL_BENCH_ROWS=N for a smaller table)
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of  # noqa: E402

GOAL_SCAN = 1.6
GOAL_STEP = 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=int(os.environ.get("EMBTOOL_BENCH_ROWS", 8_000_000)))
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ids", type=int, default=10_000)
    ap.add_argument("--dir", help="where the tables go (default: a temporary folder here)")
    ap.add_argument("--keep", action="store_true", help="keep the tables for another run")
    args = ap.parse_args()

    from distributed import LocalCluster

    from embtool.config import Config
    from embtool.ops import init_table
    from embtool.sharded import ShardedTable, shard_table

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(dir=Path(__file__).parent))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["EMBTOOL_CACHE_DIR"] = str(folder / "cache")  # the workers inherit it
    one, index = folder / "one.safetensors", folder / "sharded.index.json"
    try:
        if not one.exists():
            t = time.perf_counter()
            init_table(one, args.rows, args.dim, seed=1, config=Config(sparse=True))
            print(f"made {one.name}: {args.rows:,} x {args.dim} in {time.perf_counter() - t:.1f} s")
        if not index.exists():
            t = time.perf_counter()
            shard_table(one, index, shards=args.shards)
            print(f"sharded it into {args.shards} shards in {time.perf_counter() - t:.1f} s")
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        try:
            run(args, one, index, cluster.scheduler_address)
        finally:
            cluster.close()
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(folder)


def run(args, one: Path, index: Path, address: str) -> None:
    from embtool.ops import renorm
    from embtool.sharded import ShardedTable
    from embtool.shardtrain import train_step
    from embtool.similar import most_similar, most_similar_many
    from embtool.stats import table_stats
    from embtool.table import Table
    from embtool.training import Batch

    rng = np.random.default_rng(0)
    rows = rng.integers(0, args.rows, 100)
    ids = rng.integers(0, args.rows, args.ids)
    grad = rng.standard_normal((args.ids, args.dim), dtype=np.float32)

    def similar_one(t):
        return lambda: most_similar(t.weight(), None, [int(rows[0])], topn=10, norms=t.norms)

    def similar_100(t):
        queries = [([int(r)], []) for r in rows]
        return lambda: most_similar_many(t.weight(), None, queries, topn=10, norms=t.norms)

    def stats(t):
        return lambda: table_stats(t.weight())

    def renorm_pass(t):
        return lambda: renorm(t, None, max_norm=12.0, dry_run=True)

    def step(path):
        batch = [Batch(ids, grad, "ids", "grad")]
        return lambda: train_step(path, batch, optimizer="sgd", hparams={"lr": 1e-3})

    layouts = [("one file, one process", None, None), (f"{args.shards} shards, {args.workers} Dask workers", address, "dask"),
               (f"{args.shards} shards, threads", None, "threads")]
    results: dict[str, dict[str, float]] = {}
    print(f"{args.rows:,} x {args.dim} F32; {os.cpu_count()} cores; best of {args.repeat}")
    for label, scheduler, kind in layouts:
        from embtool import execute

        execute.set_default(scheduler)
        times = results[label] = {}
        opener = (lambda: Table.open(one)) if kind is None else (lambda: ShardedTable.open(index, scheduler=scheduler))
        with opener() as t:
            for name, make in (("similar, 1 query", similar_one), ("similar, 100 queries", similar_100),
                               ("info --stats", stats), ("renorm (the pass)", renorm_pass)):
                times[name] = best_of(make(t), repeat=args.repeat)
                print(f"  {label:<32} {name:<22} {times[name]:8.3f} s", flush=True)
        path = one if kind is None else index
        times["sparse train-step, 10k ids"] = best_of(step(path), repeat=args.repeat)
        print(f"  {label:<32} {'sparse train-step, 10k ids':<22} {times['sparse train-step, 10k ids']:8.3f} s",
              flush=True)
        execute.set_default(None)
    base = results[layouts[0][0]]
    print()
    print(f"{'':<28}" + "".join(f"{label:>34}" for label, _, _ in layouts))
    for name in base:
        goal = GOAL_STEP if "train-step" in name else GOAL_SCAN
        cells = []
        for label, _, kind in layouts:
            t = results[label][name]
            ratio = "" if kind is None else f" ({base[name] / t:4.2f}x)"
            cells.append(f"{t:9.3f} s{ratio}")
        verdict = base[name] / results[layouts[1][0]][name]
        note = "ok" if verdict >= goal else f"BELOW the {goal}x goal"
        print(f"{name:<28}" + "".join(f"{c:>34}" for c in cells) + f"   {note}")


if __name__ == "__main__":
    main()
