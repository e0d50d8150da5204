"""Write tests/golden/formats.npz: gensim 4.4 ``KeyedVectors.load_word2vec_format`` results on
generated vector files covering every format and quirk gensim can read (docs/semantics.md §7.6),
and the bytes ``save_word2vec_format`` writes (text and binary) for ``save_case()``.

Run with gensim installed:  python tests/golden/make_formats.py
``cases()`` (no gensim needed) builds the files; the npz stores each file's bytes, gensim's
arguments and gensim's keys and vectors, so the tests need neither gensim nor this script.
"""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("formats.npz")


def _values(rng, rows, dim, style):
    v = (rng.standard_normal((rows, dim)) * 0.4).astype(np.float32)
    if style == "g6":        # GloVe's published files / make_glove.py
        return v, [[f"{x:.6g}" for x in r] for r in v]
    if style == "lf":        # word2vec.c: "%lf"
        return v, [[f"{x:f}" for x in r] for r in v]
    if style == "ft":        # fastText: setprecision(5), scientific for small values
        v[:, 0] *= 1e-4
        return v, [[f"{x:.5g}" for x in r] for r in v]
    if style == "mixed":     # every spelling Python float() takes; some outside the fast path
        toks = []
        for r in v:
            row = []
            for j, x in enumerate(r):
                k = (j + len(toks)) % 9
                row.append([f"{x:.6g}", repr(float(x)), f"{x:.17g}", f"{x:e}", f"{x:.9E}",
                            f"{x:+.4f}", f"{x:.25f}", str(np.float32(x)), f"{x * 1e-30:.3g}"][k])
            toks.append(row)
        return v, toks
    raise ValueError(style)


def _text(words, toks, *, header=None, eol="\n", trail="", final=True):
    lines = [] if header is None else [header]
    lines += [w + " " + " ".join(t) + trail for w, t in zip(words, toks)]
    body = eol.join(lines) + (eol if final else "")
    return body.encode("utf-8")


def _binary(words, vectors, *, sep=b""):
    out = [f"{len(words)} {vectors.shape[1]}\n".encode()]
    for w, v in zip(words, vectors):
        out.append(w.encode("utf-8") + b" " + v.astype("<f4").tobytes() + sep)
    return b"".join(out)


def cases():
    """``[(name, file bytes, suffix, gensim kwargs, read_vectors kwargs)]``."""
    rng = np.random.default_rng(20261122)
    words = [f"w{i}" for i in range(40)]
    out = []

    def add(name, data, suffix, gensim_kw, ours_kw=None):
        out.append((name, data, suffix, gensim_kw, ours_kw or {}))

    v, t = _values(rng, 40, 7, "g6")
    glove = _text(words, t)
    add("glove", glove, ".txt", {"no_header": True})
    add("glove_gz", gzip.compress(glove, mtime=0), ".txt.gz", {"no_header": True})
    add("glove_limit", glove, ".txt", {"no_header": True, "limit": 9}, {"limit": 9})
    add("glove_no_final_newline", _text(words, t, final=False), ".txt", {"no_header": True})
    add("glove_bom", b"\xef\xbb\xbf" + glove, ".txt", {"no_header": True, "encoding": "utf-8-sig"})
    v, t = _values(rng, 40, 5, "ft")
    ft = _text(["</s>"] + words[1:], t, header="40 5", trail=" ")
    add("fasttext_vec", ft, ".vec", {})
    add("fasttext_bz2", bz2.compress(ft), ".vec.bz2", {})
    add("fasttext_limit", ft, ".vec", {"limit": 3}, {"limit": 3})
    v, t = _values(rng, 40, 6, "lf")
    add("word2vec_c_text", _text(words, t, header="40 6", trail=" "), ".txt", {})
    add("crlf", _text(words, t, header="40 6", eol="\r\n"), ".txt", {})
    add("trailing_tabs", _text(words, t, header="40 6", trail=" \t\t"), ".txt", {})
    add("header_whitespace", _text(words, t, header="40\t6  \r"), ".txt", {})
    add("blank_after_count", _text(words, t, header="40 6") + b"\n\n", ".txt", {})
    add("header_smaller", _text(words, t, header="25 6"), ".txt", {})
    add("header_only", b"0 4\n", ".txt", {})
    odd = ["a\u00a0b", "line\u2028sep", "cr\rinside", "nel\u0085x", "😀", "中文", "ünï", "tab\tkey",
           "x" * 300, ".\u00a0.\u00a0."]
    v, t = _values(rng, len(odd), 4, "g6")
    add("odd_keys", _text(odd, t, header=f"{len(odd)} 4"), ".txt", {})
    v, t = _values(rng, 60, 12, "mixed")
    add("number_spellings", _text([f"m{i}" for i in range(60)], t, header="60 12"), ".txt", {})
    syntax = [["1e-05", "2.5E+02", "+1", ".5", "3."], ["1_000", "-0", "0.0", "-0.0", "1e-46"],
              ["0.1000000000000000055511151231257827", "123456789012345678901234", "9007199254740993",
               "3.4028234663852886e38", "1.4e-45"],
              ["\t7", "\u0661\u0662", "0000000000000000000000000.5", "5e-324", "1E0"]]
    add("number_syntax", _text([f"s{i}" for i in range(4)], syntax, header="4 5"), ".txt", {})
    nonfin = [["nan", "NaN", "-inf", "Infinity", "1e50"], ["-nan", "inf", "+inf", "1e39", "0.5"]]
    add("nonfinite", _text(["n0", "n1"], nonfin, header="2 5"), ".txt", {},
        {"allow_nonfinite": True})
    dup = _text(["a", "b", "a", "c", "b"], [["1", "2"], ["3", "4"], ["5", "6"], ["7", "8"],
                                             ["9", "10"]], header="5 2")
    add("duplicates", dup, ".txt", {}, {"on_duplicate": "first"})
    latin = "café naïve über".split()
    v, t = _values(rng, 3, 3, "g6")
    body = b"3 3\n" + b"".join(w.encode("latin-1") + b" " + " ".join(r).encode() + b"\n"
                               for w, r in zip(latin, t))
    add("latin1", body, ".txt", {"encoding": "latin1"}, {"encoding": "latin1"})
    bad = b"3 2\nok 1 2\nbad\xff\xfeword 3 4\ntrunc\xe4\xb8 5 6\n"
    add("invalid_replace", bad, ".txt", {"unicode_errors": "replace"}, {"unicode_errors": "replace"})
    add("invalid_ignore", bad, ".txt", {"unicode_errors": "ignore"}, {"unicode_errors": "ignore"})
    wide = [["0.1", "70000", "1e-8"], ["65519.99", "-3.14159265358979", "2.5e-8"]]
    add("float16_text", _text(["h0", "h1"], wide, header="2 3"), ".txt",
        {"datatype": "float16"}, {"dtype": "float16", "allow_nonfinite": True})
    add("float64_text", _text(["h0", "h1"], wide, header="2 3"), ".txt",
        {"datatype": "float64"}, {"dtype": "float64"})
    v = (rng.standard_normal((30, 8)) * 0.4).astype(np.float32)
    bw = [f"b{i}" for i in range(29)] + ["ü"]
    add("binary_gensim", _binary(bw, v), ".bin", {"binary": True})
    add("binary_c", _binary(bw, v, sep=b"\n"), ".bin", {"binary": True})
    add("binary_xz", lzma.compress(_binary(bw, v, sep=b"\n")), ".bin.xz", {"binary": True})
    add("binary_limit", _binary(bw, v), ".bin", {"binary": True, "limit": 7}, {"limit": 7})
    add("binary_float64", _binary(bw, v), ".bin", {"binary": True, "datatype": "float64"},
        {"dtype": "float64"})
    add("binary_float16", _binary(bw, v * 1e5), ".bin", {"binary": True, "datatype": "float16"},
        {"dtype": "float16", "allow_nonfinite": True})
    v, t = _values(rng, 1500, 16, "g6")
    add("glove_1500", _text([f"r{i}" for i in range(1500)], t), ".txt", {"no_header": True})
    return out


def save_case():
    """Words and float32 vectors (edge values included) for the export comparison."""
    rng = np.random.default_rng(7)
    v = (rng.standard_normal((50, 9)) * 10.0 ** rng.integers(-6, 6, (50, 1))).astype(np.float32)
    v[0] = [0.0, -0.0, 1e-45, 1.1754944e-38, 3.4028235e38, -1e-4, 1e6, 999999.94, 1e-5]
    v[1] = np.float32([0.1, 1 / 3, 2**24, 123456.7, 1e7, 5e-5, 0.00010000001, -7.0, 1e-7])
    words = [f"s{i}" for i in range(48)] + ["caf\u00e9", "\u4e2d"]
    return words, v


def gensim_save(words, vectors, binary: bool) -> bytes:
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vectors.shape[1])
    kv.add_vectors(words, vectors)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out"
        kv.save_word2vec_format(str(path), binary=binary)
        return path.read_bytes()


def gensim_load(data: bytes, suffix: str, kw: dict):
    """gensim's keys (None for its phantom duplicate rows) and vectors for a file's bytes."""
    from gensim.models import KeyedVectors

    kw = dict(kw)
    if "datatype" in kw:
        kw["datatype"] = np.dtype(kw["datatype"]).type
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("case" + suffix)
        path.write_bytes(data)
        kv = KeyedVectors.load_word2vec_format(str(path), **kw)
    return list(kv.index_to_key), np.asarray(kv.vectors)


def main():
    import gensim

    out = {"gensim_version": np.array(gensim.__version__)}
    for name, data, suffix, gkw, okw in cases():
        keys, vectors = gensim_load(data, suffix, gkw)
        out[f"{name}.data"] = np.frombuffer(data, np.uint8)
        out[f"{name}.args"] = np.array(json.dumps({"suffix": suffix, "gensim": gkw, "ours": okw}))
        out[f"{name}.keys"] = np.array(json.dumps(keys))
        out[f"{name}.vectors"] = vectors
    words, vectors = save_case()
    out["save.text"] = np.frombuffer(gensim_save(words, vectors, False), np.uint8)
    out["save.binary"] = np.frombuffer(gensim_save(words, vectors, True), np.uint8)
    np.savez_compressed(OUT, **out)


if __name__ == "__main__":
    main()
