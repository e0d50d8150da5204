"""similar budget (docs/performance.md): top-10 cosine neighbours on a 400k x 300 table, against gensim.

1. Per query, warm page cache: ``embtool.similar.most_similar`` on a memory-mapped ``.npy``
   (row norms recomputed while streaming, nothing cached between calls) against gensim's
   ``KeyedVectors.most_similar`` on its first call (which computes and caches the norms) and on
   later calls (norms cached).  The neighbours are compared too.
2. A cold process (``python -c``: import, map the table, one query), wall time; the budget
   for ``embtool similar`` end to end is 1 s.
3. With ``--big-gb N``: a table of N GB is written, searched in a fresh process, and its peak
   anonymous memory (RssAnon, sampled every 5 ms) is printed; budget < 1 GB for 4 GB.

Usage: python benchmarks/bench_similar.py [--rows 400000] [--dim 300] [--queries 10] [--big-gb 0] [--dir DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COLD = """
import time, threading
t0 = time.perf_counter()
import numpy as np
from embtool.similar import most_similar
w = np.load({path!r}, mmap_mode="r")
peak = [0]
def sample():
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]))
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
res = most_similar(w, None, [123], topn=10)
print(time.perf_counter() - t0, peak[0] / 1024, res[0][0])
"""


def write_table(path: Path, rows: int, dim: int) -> np.ndarray:
    """N(0, 0.4^2) float32 rows, as benchmarks/make_glove.py draws them, as a .npy file."""
    w = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 65536):
        n = min(65536, rows - start)
        w[start:start + n] = rng.standard_normal((n, dim), dtype=np.float32) * np.float32(0.4)
    w.flush()
    return np.load(path, mmap_mode="r")


def cold_run(path: Path):
    out = subprocess.run([sys.executable, "-c", COLD.format(path=str(path))], capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--big-gb", type=float, default=0.0)
    ap.add_argument("--dir", default=None, help="where to write the tables (default: a temporary dir)")
    args = ap.parse_args()
    from gensim.models import KeyedVectors

    from embtool.similar import most_similar

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp, "table.npy")
        w = write_table(path, args.rows, args.dim)
        kv = KeyedVectors(args.dim)
        kv.add_vectors([f"w{i}" for i in range(args.rows)], np.asarray(w))
        queries = np.random.default_rng(1).integers(0, args.rows, args.queries)
        most_similar(w, None, [0], topn=10)  # page cache warm, as for gensim's in-memory copy

        t0 = time.perf_counter()
        kv.most_similar(f"w{queries[0]}", topn=10)
        t_first = time.perf_counter() - t0
        t_ours = t_ref = np.inf
        agree = 0
        for q in queries:  # interleaved, best of each
            t0 = time.perf_counter()
            got = most_similar(w, None, [int(q)], topn=10)
            t_ours = min(t_ours, time.perf_counter() - t0)
            t0 = time.perf_counter()
            want = kv.most_similar(f"w{q}", topn=10)
            t_ref = min(t_ref, time.perf_counter() - t0)
            agree += [r for r, _ in got] == [kv.get_index(k) for k, _ in want]
        print(f"most_similar top-10 on {args.rows} x {args.dim} (float32, memory-mapped):")
        print(f"  embtool {t_ours * 1e3:7.1f} ms/query (norms streamed each call)")
        print(f"  gensim  {t_first * 1e3:7.1f} ms first query (fills norms)   ratio {t_first / t_ours:5.2f}x")
        print(f"  gensim  {t_ref * 1e3:7.1f} ms/query, norms cached          ratio {t_ref / t_ours:5.2f}x")
        print(f"  same neighbours in the same order: {agree}/{len(queries)} queries")
        wall, _ = min(cold_run(path) for _ in range(3))
        print(f"  cold process (import + map + 1 query): {wall:.3f} s wall (budget <= 1 s end to end)")

        if args.big_gb > 0:
            big = Path(tmp, "big.npy")
            rows = int(args.big_gb * 2**30 / (4 * args.dim))
            write_table(big, rows, args.dim)
            wall, anon = cold_run(big)
            print(f"{args.big_gb:g} GB table ({rows} x {args.dim}): one query {wall:.2f} s, "
                  f"peak RssAnon {anon:.0f} MB (budget < 1024 MB)")
            os.remove(big)


if __name__ == "__main__":
    main()
