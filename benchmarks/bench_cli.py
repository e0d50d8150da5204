"""End-to-end wall time of small commands in fresh processes (docs/performance.md):
``embtool --help`` <= 0.25 s, ``embtool lookup TABLE 1 2 3`` and ``lookup --words the of and`` on a 400k x 300 table <= 0.35 s,
``embtool similar TABLE king -k 10`` there <= 0.35 s (row norms cached, see embtool/norms.py), and
``embtool freeze`` on a 2 GB table < 0.1 s.  Tables are made with ``embtool init`` in a temporary
folder (or --dir).  The reference for the first two is the interpreter itself: ``python -c pass``.

    python benchmarks/bench_cli.py [--dir DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import embtool_cmd, wall

import subprocess


def line(name, best, median, budget):
    ok = "ok" if median <= budget else f"OVER the {budget:.2f} s budget"
    print(f"{name:<48} best {best:6.3f} s   median {median:6.3f} s   budget {budget:.2f} s  {ok}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        d = Path(d)
        os.environ["EMBTOOL_CACHE_DIR"] = str(d / "cache")  # row norms: not in the user's cache
        base, _ = wall([sys.executable, "-c", "pass"])
        print(f"python -c pass: {base:.3f} s (interpreter start, included in every number below)")
        best, med = wall(embtool_cmd("--help"), repeat=7)
        line("embtool --help", best, med, 0.25)

        t400 = d / "t400k.safetensors"
        subprocess.run(embtool_cmd("init", t400, "-n", 400_000, "-d", 300, "--seed", 1), check=True,
                       stderr=subprocess.DEVNULL)
        best, med = wall(embtool_cmd("lookup", t400, 1, 2, 3), repeat=7)
        line("embtool lookup T 1 2 3 (400k x 300)", best, med, 0.35)

        # the same size with a vocabulary (words "the", "of", "and", "king", then w4, w5, ...)
        import numpy as np

        from embtool.table import Config, create
        from embtool.vocab import encode_vocab

        words = ["the", "of", "and", "king"] + [f"w{i}" for i in range(4, 400_000)]
        tv = d / "v400k.safetensors"
        create(tv, {"weight": np.random.default_rng(0).standard_normal((400_000, 300), dtype=np.float32),
                    **encode_vocab(words)}, Config(frozen=True))
        best, med = wall(embtool_cmd("lookup", tv, "--words", "the", "of", "and"), repeat=7)
        line("embtool lookup T --words the of and (400k x 300)", best, med, 0.35)
        best, med = wall(embtool_cmd("similar", tv, "king", "-k", 10), repeat=5)
        line("embtool similar T king -k 10 (400k x 300)", best, med, 0.35)

        t2g = d / "t2g.safetensors"
        subprocess.run(embtool_cmd("init", t2g, "-n", 4_000_000, "-d", 128, "--init", "zeros"),
                       check=True, stderr=subprocess.DEVNULL)
        size = t2g.stat().st_size
        from embtool.store import Store  # time the operation itself, in process

        times = []
        for frozen in ("freeze", "unfreeze", "freeze", "unfreeze", "freeze"):
            t = time.perf_counter()
            subprocess.run(embtool_cmd(frozen, t2g), check=True, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t)
        with Store(t2g) as s:
            assert s.metadata["embtool.frozen"] == "true"
        times.sort()
        line(f"embtool freeze/unfreeze ({size / 2**30:.1f} GiB table)", times[0], times[2], 0.10)


if __name__ == "__main__":
    main()
