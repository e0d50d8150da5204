"""load-pretrained budget (docs/performance.md): parse a GloVe text file of ROWS x DIM (default
100k x 300, about 290 MB, from benchmarks/make_glove.py) against gensim and numpy.loadtxt.

1. Text in-process: ``read_vectors`` (warm page cache, Numba cache warm) against gensim's
   ``load_word2vec_format(no_header=True)`` and ``numpy.loadtxt``; arrays checked bit-identical
   to gensim's.
2. Text end to end: ``embtool load-pretrained FILE TABLE`` in a fresh process (imports, Numba's
   cached kernels, the parse, the vocabulary, the table written and synced) against the same
   gensim and loadtxt times.  Budgets: >= 60x gensim, >= 5x loadtxt; the table's weight checked
   bit-identical to gensim's.
3. Peak RSS of that command against the table size (budget: table + 300 MB).
4. word2vec binary of the same table: ``read_vectors`` against gensim's binary loader (budget: at
   least as fast).
5. Export of the table as word2vec text: ``write_vectors`` against gensim's
   ``save_word2vec_format`` on the first ``--export-rows`` rows (no budget; printed for reference).

Usage: python benchmarks/bench_load.py [--rows 100000] [--dim 300] [--file GLOVE] [--dir DIR]
       [--repeat 3] [--export-rows 20000] [--skip-gensim-text]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, embtool_cmd, report, threads, wall  # noqa: E402

MAKE_GLOVE = Path(__file__).resolve().parent / "make_glove.py"

# The command line run in-process, reporting its peak resident memory (VmHWM) at exit: not the
# ru_maxrss of a child, which starts from its parent's peak at fork time.
PEAK = """
import atexit, runpy, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print(int(line.split()[1]) / 1024, file=sys.__stderr__)
atexit.register(peak)
sys.argv = ["embtool", *sys.argv[1:]]
runpy.run_module("embtool", run_name="__main__")
"""


def once(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--file", default=None, help="an existing GloVe file (skips generation)")
    ap.add_argument("--dir", default=None, help="where to write files (default: a temporary dir)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--export-rows", type=int, default=20_000)
    ap.add_argument("--skip-gensim-text", action="store_true",
                    help="skip gensim's text loader (about a minute for 100k x 300)")
    args = ap.parse_args()
    from gensim.models import KeyedVectors

    from embtool.formats import read_vectors, write_vectors

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        glove = Path(args.file) if args.file else Path(tmp, "glove.txt")
        if not args.file:
            subprocess.run([sys.executable, str(MAKE_GLOVE), str(args.rows), str(args.dim),
                            str(glove)], check=True)
        size = glove.stat().st_size
        print(f"{glove.name}: {size / 2**20:.0f} MB; numba threads {threads()}")

        table_file = Path(tmp, "glove.safetensors")
        cli = embtool_cmd("load-pretrained", glove, table_file, "--force")
        subprocess.run(cli, check=True, capture_output=True)  # Numba's cache filled
        ours = best_of(lambda: read_vectors(glove), repeat=args.repeat)
        ours_cli, ours_cli_median = wall(cli, repeat=args.repeat)
        got = read_vectors(glove)
        print(f"  {got.summary()}")
        loadtxt, ref = once(lambda: np.loadtxt(glove, dtype=np.float32, comments=None, delimiter=" ",
                                               usecols=range(1, got.report.dim + 1), encoding="utf-8"))
        assert np.array_equal(ref.view(np.uint32), got.vectors.view(np.uint32))
        report("GloVe text vs numpy.loadtxt (in-process)", ours, loadtxt, "loadtxt")
        report("load-pretrained CLI vs numpy.loadtxt", ours_cli, loadtxt, "loadtxt", 5)
        if not args.skip_gensim_text:
            gensim_text, kv = once(lambda: KeyedVectors.load_word2vec_format(str(glove),
                                                                             no_header=True))
            assert kv.index_to_key == got.words
            assert np.array_equal(kv.vectors.view(np.uint32), got.vectors.view(np.uint32))
            from safetensors.numpy import load_file

            stored = load_file(table_file)["weight"]
            assert np.array_equal(kv.vectors.view(np.uint32), stored.view(np.uint32))
            report("GloVe text vs gensim (in-process)", ours, gensim_text, "gensim")
            report("load-pretrained CLI vs gensim", ours_cli, gensim_text, "gensim", 60)
        print(f"{'  (CLI median of ' + str(args.repeat) + ' runs)':<44} {ours_cli_median * 1e3:9.1f} ms")

        err = subprocess.run([sys.executable, "-c", PEAK, *cli[3:]], capture_output=True,
                             text=True, check=True).stderr.split()
        peak, table = float(err[-1]), got.vectors.nbytes / 2**20
        print(f"{'load-pretrained CLI peak RSS':<44} {peak:9.0f} MB; table {table:.0f} MB; "
              f"peak - table = {peak - table:.0f} MB (budget 300 MB)"
              f"{'  ok' if peak - table <= 300 else '  OVER budget'}")

        binary = Path(tmp, "vectors.bin")
        write_vectors(binary, got.words, got.vectors, format="word2vec-binary")
        ours_bin = best_of(lambda: read_vectors(binary), repeat=args.repeat)
        gensim_bin = best_of(lambda: KeyedVectors.load_word2vec_format(str(binary), binary=True),
                             repeat=args.repeat, warmup=0)
        report("word2vec binary vs gensim (binary=True)", ours_bin, gensim_bin, "gensim", 1)

        n = min(args.export_rows, len(got.words))
        kv = KeyedVectors(got.report.dim)
        kv.add_vectors(got.words[:n], got.vectors[:n])
        text_out = Path(tmp, "export.txt")
        ours_exp = best_of(lambda: write_vectors(text_out, got.words[:n], got.vectors[:n],
                                                 format="word2vec"), repeat=args.repeat)
        mine = text_out.read_bytes()
        gensim_exp, _ = once(lambda: kv.save_word2vec_format(str(text_out)))
        assert mine == text_out.read_bytes()
        report(f"export {n} rows as word2vec text vs gensim", ours_exp, gensim_exp, "gensim")


if __name__ == "__main__":
    main()
