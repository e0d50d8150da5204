"""Write tests/golden/query.npz: F.embedding_bag (PyTorch 2.13, CPU) and gensim 4.4
most_similar / evaluate_word_analogies / evaluate_word_pairs results on small inputs.

Run with torch and gensim installed:  python tests/golden/make_query.py
The inputs are stored next to the outputs, so the tests need neither oracle nor this script.
Settings are stored as JSON strings (key ``*_args``).
"""
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from gensim.models import KeyedVectors

BAG_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16}


def bag_cases(rng):
    """(weight, indices, offsets or None, kwargs) covering every mode, option and dtype."""
    cases = []
    for dtype in BAG_DTYPES:
        for mode in ("sum", "mean", "max"):
            for padding_idx in (None, 2, -1):
                for psw in ((False, True) if mode == "sum" else (False,)):
                    for ilo in (False, True):
                        v, d = int(rng.integers(5, 12)), int(rng.integers(1, 20))
                        w = rng.standard_normal((v, d)).astype(dtype)
                        w[1, 0] = np.nan  # NaN ignored in max unless first
                        w[3] = -0.0
                        n = int(rng.integers(0, 40))
                        idx = rng.integers(0, v, n)
                        cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(1, 7))))
                        cuts[0] = 0  # empty bags come from repeated cuts
                        off = np.append(cuts, n) if ilo else cuts
                        kw = dict(mode=mode, padding_idx=padding_idx, include_last_offset=ilo)
                        p = rng.standard_normal(n).astype(dtype) if psw else None
                        cases.append((w, idx, off, kw, p))
    for mode in ("sum", "mean", "max"):  # 2-D input: fixed-length bags
        w = rng.standard_normal((9, 6)).astype(np.float32)
        cases.append((w, rng.integers(0, 9, (5, 4)), None, dict(mode=mode, padding_idx=4), None))
    return cases


def add_bags(out, rng):
    for i, (w, idx, off, kw, psw) in enumerate(bag_cases(rng)):
        y = F.embedding_bag(torch.from_numpy(idx), torch.from_numpy(w),
                            None if off is None else torch.from_numpy(off),
                            per_sample_weights=None if psw is None else torch.from_numpy(psw), **kw)
        out[f"bag{i}_weight"] = w
        out[f"bag{i}_indices"] = idx
        if off is not None:
            out[f"bag{i}_offsets"] = off
        if psw is not None:
            out[f"bag{i}_psw"] = psw
        out[f"bag{i}_args"] = np.array(json.dumps(kw))
        out[f"bag{i}_out"] = y.numpy()


def structured_table(rng, words, dim, pairs):
    """Random rows, and rows ``y = x + offset + noise`` so that analogies are often right."""
    w = rng.standard_normal((len(words), dim)).astype(np.float32)
    offset = rng.standard_normal(dim).astype(np.float32) * 2
    for x, y in pairs:
        w[y] = w[x] + offset + rng.standard_normal(dim).astype(np.float32) * 0.7
    return w


def make_words(n):
    words = [f"w{i}" for i in range(n)]
    for i in range(50, n, 37):
        words[i] = words[i - 1].upper()  # case variants: the earlier row must win
    words[7] = "Zero"
    return words


def add_similar(out, w, words, rng):
    kv = KeyedVectors(w.shape[1])
    kv.add_vectors(words, w)
    queries = []
    for q in range(24):
        pos = [int(x) for x in rng.integers(10, len(words), int(rng.integers(1, 3)))]
        neg = [int(x) for x in rng.integers(10, len(words), int(q % 3 == 0))]
        queries.append(dict(positive=pos, negative=neg, topn=int(rng.integers(1, 15)),
                            restrict_vocab=[None, 200, 1000][q % 3]))
    queries.append(dict(positive=[[11, 0.5], [12, 2.0]], negative=[[13, 0.25]], topn=8, restrict_vocab=None))
    vec = rng.standard_normal(w.shape[1]).astype(np.float32) * 3
    out["similar_vector"] = vec
    queries.append(dict(positive=["vector", 20], negative=[], topn=10, restrict_vocab=None))
    for i, q in enumerate(queries):
        def key(x):
            if x == "vector":
                return vec
            if isinstance(x, list):
                return (words[x[0]], x[1])
            return words[x]
        res = kv.most_similar([key(x) for x in q["positive"]], [key(x) for x in q["negative"]],
                              topn=q["topn"], restrict_vocab=q["restrict_vocab"])
        out[f"similar{i}_args"] = np.array(json.dumps(q))
        out[f"similar{i}_rows"] = np.array([kv.get_index(k) for k, _ in res], np.int64)
        out[f"similar{i}_scores"] = np.array([s for _, s in res], np.float64)


def analogy_text(words, pairs, rng):
    lines = []
    for s in range(3):
        lines.append(f": section {s}\n")
        for _ in range(150):
            (a, b), (c, d) = (pairs[i] for i in rng.integers(0, len(pairs), 2))
            q = [words[a], words[b], words[c], words[d]]
            if rng.random() < 0.3:
                q = [x.lower() for x in q]
            if rng.random() < 0.05:
                q[1] = "unknown"
            if rng.random() < 0.03:
                q = q[:3]  # skipped: not 4 words
            lines.append(" ".join(q) + "\n")
    return "".join(lines)


def pairs_text(words, rng):
    lines = ["# word1\tword2\tscore\n"]
    for _ in range(200):
        a, b = rng.integers(0, len(words), 2)
        wa, wb = words[a], words[b]
        if rng.random() < 0.2:
            wa = wa.lower()
        if rng.random() < 0.1:
            wb = "unknown"
        lines.append(f"{wa}\t{wb}\t{rng.integers(0, 20) / 2}\n")  # repeated gold scores: ties
    lines.append("not a pair line\n")
    return "".join(lines)


EVAL_SETTINGS = [dict(restrict_vocab=300000, case_insensitive=True, dummy4unknown=False),
                 dict(restrict_vocab=900, case_insensitive=True, dummy4unknown=True),
                 dict(restrict_vocab=300000, case_insensitive=False, dummy4unknown=False)]


def add_evaluation(out, w, words, pairs, rng):
    kv = KeyedVectors(w.shape[1])
    kv.add_vectors(words, w)
    analogies, word_pairs = analogy_text(words, pairs, rng), pairs_text(words, rng)
    out["analogies_text"] = np.array(analogies)
    out["pairs_text"] = np.array(word_pairs)
    with tempfile.TemporaryDirectory() as tmp:
        qa, wp = Path(tmp, "questions.txt"), Path(tmp, "pairs.tsv")
        qa.write_text(analogies)
        wp.write_text(word_pairs)
        for i, setting in enumerate(EVAL_SETTINGS):
            score, sections = kv.evaluate_word_analogies(str(qa), **setting)
            out[f"analogies{i}_args"] = np.array(json.dumps(setting))
            out[f"analogies{i}_score"] = np.array(score)
            out[f"analogies{i}_counts"] = np.array(
                [(len(s["correct"]), len(s["incorrect"])) for s in sections], np.int64)
            pearson, spearman, oov_ratio = kv.evaluate_word_pairs(str(wp), **setting)
            out[f"pairs{i}_result"] = np.array([pearson[0], spearman[0], oov_ratio])


def main():
    rng = np.random.default_rng(20261122)
    out = {"torch_version": np.array(torch.__version__)}
    add_bags(out, rng)
    words = make_words(1200)
    pairs = [tuple(int(x) for x in rng.integers(10, len(words), 2)) for _ in range(150)]
    w = structured_table(rng, words, 16, pairs)
    w[7] = 0  # a zero row: NaN score in gensim, ranked last
    out["words"] = np.array(words)
    out["table"] = w
    add_similar(out, w, words, rng)
    add_evaluation(out, w, words, pairs, rng)
    np.savez_compressed(Path(__file__).with_name("query.npz"), **out)


if __name__ == "__main__":
    main()
