"""Analogy and word-pair evaluation: gensim 4.4's numbers (committed fixture and live), the
batched analogy search against its exact fallback, correlations against naive formulas and
scipy, progress, and malformed files."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from embtool import evaluate, similar
from embtool.errors import ConfigError, FormatError
from embtool.evaluate import evaluate_analogies, evaluate_pairs, pearson, rankdata, spearman
from embtool.vocab import Vocab

import naive_query as naive

GOLDEN = np.load(Path(__file__).parent / "golden" / "query.npz")
TABLE = GOLDEN["table"]
WORDS = [str(w) for w in GOLDEN["words"]]
VOCAB = Vocab.from_words(WORDS)
SETTINGS = sorted({int(k[9:].split("_")[0]) for k in GOLDEN.files if k.startswith("analogies") and k[9].isdigit()})


@pytest.fixture
def files(tmp_path):
    qa, wp = tmp_path / "questions.txt", tmp_path / "pairs.tsv"
    qa.write_text(str(GOLDEN["analogies_text"]))
    wp.write_text(str(GOLDEN["pairs_text"]))
    return qa, wp


def section_counts(result):
    return [[s["correct"], s["incorrect"]] for s in result["sections"]]


@pytest.mark.parametrize("setting", SETTINGS)
def test_analogies_match_gensim_golden(files, setting):
    kw = json.loads(str(GOLDEN[f"analogies{setting}_args"]))
    got = evaluate_analogies(TABLE, VOCAB, files[0], **kw)
    assert section_counts(got) == GOLDEN[f"analogies{setting}_counts"].tolist()
    assert got["accuracy"] == float(GOLDEN[f"analogies{setting}_score"])
    assert got["sections"][-1]["section"] == "Total accuracy"
    assert [got["correct"], got["incorrect"]] == section_counts(got)[-1]


@pytest.mark.parametrize("setting", SETTINGS)
def test_pairs_match_gensim_golden(files, setting):
    kw = json.loads(str(GOLDEN[f"analogies{setting}_args"]))
    got = evaluate_pairs(TABLE, VOCAB, files[1], **kw)
    p, s, oov = GOLDEN[f"pairs{setting}_result"]
    assert abs(got["pearson"] - p) <= 1e-9 and abs(got["spearman"] - s) <= 1e-9
    assert got["oov_ratio"] == pytest.approx(oov, abs=1e-12)


def test_fallback_path_gives_the_same_answers(monkeypatch, files):
    """A huge error margin sends every question through the exact matrix-vector pass: same counts."""
    kw = json.loads(str(GOLDEN["analogies0_args"]))
    want = evaluate_analogies(TABLE, VOCAB, files[0], **kw)
    calls = []
    real_each = similar.search_each
    monkeypatch.setattr(similar, "search_each", lambda *a, **k: calls.append(len(a[1])) or real_each(*a, **k))
    monkeypatch.setattr(evaluate, "CANDIDATES", 6)
    monkeypatch.setattr(similar, "margin", lambda dim: 10.0)
    monkeypatch.setattr(evaluate, "QUESTIONS_PER_PASS", 37)
    got = evaluate_analogies(TABLE, VOCAB, files[0], **kw)
    assert section_counts(got) == section_counts(want)
    assert sum(calls) == want["questions"] - want["oov"]  # every question answered exactly


def structured(rng, n=6000, dim=48):
    words = [f"w{i}" for i in range(n)]
    for i in range(100, n, 53):
        words[i] = words[i - 1].upper()
    for i in range(101, n, 59):
        words[i] = words[i - 2].capitalize() + "q"
    w = rng.standard_normal((n, dim)).astype(np.float32)
    offset = rng.standard_normal(dim).astype(np.float32) * 2
    pairs = [tuple(int(x) for x in rng.integers(0, n, 2)) for _ in range(600)]
    for x, y in pairs:
        w[y] = w[x] + offset + rng.standard_normal(dim).astype(np.float32) * 0.8
    w[3] = 0
    return words, w, pairs


def question_lines(rng, words, pairs, count=900):
    lines = []
    for q in range(count):
        if q % 300 == 0:
            lines.append(f": part {q // 300}\n")
        (a, b), (c, d) = (pairs[i] for i in rng.integers(0, len(pairs), 2))
        ws = [words[a], words[b], words[c], words[d]]
        if rng.random() < 0.3:
            ws = [x.lower() for x in ws]
        if rng.random() < 0.01:
            ws[0] = words[3]  # zero row: gensim answers from NaN scores
        lines.append(" ".join(ws) + "\n")
    return lines


@pytest.mark.parametrize("kw", [dict(), dict(restrict_vocab=2000, dummy4unknown=True),
                                dict(case_insensitive=False), dict(restrict_vocab=None)])
def test_analogies_match_live_gensim(gensim, tmp_path, kw):
    rng = np.random.default_rng(31)
    words, w, pairs = structured(rng)
    path = tmp_path / "q.txt"
    path.write_text("".join(question_lines(rng, words, pairs)))
    kv = gensim.models.KeyedVectors(w.shape[1])
    kv.add_vectors(words, w)
    score, sections = kv.evaluate_word_analogies(str(path), **kw)
    got = evaluate_analogies(w, Vocab.from_words(words), path, **kw)
    want = [[len(s["correct"]), len(s["incorrect"])] for s in sections]
    # gensim answers questions with a zero-norm input row from NaN scores (an arbitrary row);
    # embtool counts them incorrect: compare the questions gensim did not answer from NaNs.
    zero_word = words[3].upper() if kw.get("case_insensitive", True) else words[3]
    nan_right = sum(1 for s in sections[:-1] for q in s["correct"] if q[0] == zero_word)
    assert nan_right == 0
    assert section_counts(got) == want
    assert got["accuracy"] == score


def test_pairs_match_live_gensim(gensim, tmp_path):
    rng = np.random.default_rng(32)
    words, w, _ = structured(rng)
    lines = ["# comment\n"]
    for _ in range(400):
        a, b = rng.integers(0, len(words), 2)
        wa = words[a].lower() if rng.random() < 0.3 else words[a]
        wb = "unknown" if rng.random() < 0.1 else words[b]
        lines.append(f"{wa};{wb};{rng.integers(0, 10) / 2}\n")
    lines.append(f"{words[3]};{words[5]};3.5\n")  # zero row: similarity 0.0
    path = tmp_path / "p.csv"
    path.write_text("".join(lines))
    kv = gensim.models.KeyedVectors(w.shape[1])
    kv.add_vectors(words, w)
    for kw in (dict(), dict(dummy4unknown=True), dict(case_insensitive=False, restrict_vocab=3000)):
        p, s, oov = kv.evaluate_word_pairs(str(path), delimiter=";", **kw)
        got = evaluate_pairs(w, Vocab.from_words(words), path, delimiter=";", **kw)
        assert abs(got["pearson"] - p[0]) <= 1e-9 and abs(got["spearman"] - s[0]) <= 1e-9
        assert got["oov_ratio"] == pytest.approx(oov, abs=1e-12)


def test_lines_bytes_and_compressed_inputs_agree(files, tmp_path):
    text = files[0].read_text()
    want = evaluate_analogies(TABLE, VOCAB, files[0])
    assert evaluate_analogies(TABLE, VOCAB, text.splitlines(keepends=True)) == want
    assert evaluate_analogies(TABLE, VOCAB, [x.encode() for x in text.splitlines(keepends=True)]) == want
    gz = tmp_path / "q.txt.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    assert evaluate_analogies(TABLE, VOCAB, gz) == want
    gzp = tmp_path / "p.tsv.gz"
    gzp.write_bytes(gzip.compress(files[1].read_bytes()))
    assert evaluate_pairs(TABLE, VOCAB, gzp) == evaluate_pairs(TABLE, VOCAB, files[1])


def test_progress_adds_up_to_the_file_size(monkeypatch, files):
    monkeypatch.setattr(evaluate, "QUESTIONS_PER_PASS", 50)
    seen = []
    evaluate_analogies(TABLE, VOCAB, files[0], progress=seen.append)
    assert len(seen) > 3 and sum(seen) == files[0].stat().st_size


def test_result_shape_and_oov(files):
    got = evaluate_analogies(TABLE, VOCAB, files[0], dummy4unknown=True)
    assert set(got) == {"accuracy", "correct", "incorrect", "oov", "oov_ratio", "oov_answered", "questions",
                        "sections"}
    assert got["oov_answered"] == 0  # unknown words are skipped unless asked otherwise
    lines = [x for x in files[0].read_text().splitlines() if not x.startswith(": ")]
    assert got["questions"] == sum(len(x.split()) == 4 for x in lines)
    assert got["oov"] > 0 and got["oov_ratio"] == pytest.approx(100 * got["oov"] / got["questions"])
    assert got["correct"] + got["incorrect"] == got["questions"]  # dummy4unknown counts OOV wrong


def test_case_variants_resolve_to_the_earliest_row():
    words = ["b", "A", "a", "c", "d", "x"]
    w = np.eye(6, dtype=np.float32)
    known = evaluate.known_words(Vocab.from_words(words), 300000, True)
    assert known["A"] == 1 and known["B"] == 0
    assert evaluate.known_words(Vocab.from_words(words), 300000, False)["a"] == 2
    assert evaluate.known_words(Vocab.from_words(words), 2, True) == {"B": 0, "A": 1}
    del w


@pytest.mark.parametrize("seed", range(20))
def test_correlations_match_naive_formulas(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 60))
    x = np.round(rng.standard_normal(n), 1)  # ties
    y = np.round(x + rng.standard_normal(n), int(rng.integers(0, 3)))
    assert abs(pearson(x, y) - naive.pearson(list(x), list(y))) <= 1e-12
    assert abs(spearman(x, y) - naive.spearman(list(x), list(y))) <= 1e-12
    assert rankdata(x).tolist() == naive.average_ranks(list(x))


def test_correlations_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(40)
    for n in (2, 3, 10, 500):
        x = np.round(rng.standard_normal(n), 1)
        x[0] = 5.0  # never constant
        y = rng.standard_normal(n).astype(np.float32).astype(np.float64)
        assert abs(pearson(x, y) - stats.pearsonr(x, y)[0]) <= 1e-9
        assert abs(spearman(x, y) - stats.spearmanr(x, y)[0]) <= 1e-9


def test_constant_or_nan_input_gives_nan():
    assert np.isnan(pearson([1, 1, 1], [1, 2, 3])) and np.isnan(spearman([1, 2, 3], [5, 5, 5]))
    assert np.isnan(pearson([1, np.nan, 2], [1, 2, 3])) and np.isnan(spearman([1, np.nan, 2], [1, 2, 3]))


@pytest.mark.parametrize("which,text,message", [
    ("analogies", "\na b c d\n", r"q.txt, line 1: missing section header"),
    ("analogies", ": only a header\nthree words only\n", "no analogy questions"),
    ("pairs", "w1\tunknown\t1\nw1 w2 3\nw1\tw2\tnot-a-number\nw1\tw2\t2\n", "1 word pair"),
])
def test_malformed_files_are_refused(tmp_path, which, text, message):
    path = tmp_path / "q.txt"
    path.write_text(text)
    with pytest.raises(FormatError, match=message):
        (evaluate_analogies if which == "analogies" else evaluate_pairs)(TABLE, VOCAB, path)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "q.txt"
    path.write_bytes(b": s\nw1 w2 w3 w4\nw1 \xff w3 w4\n")
    with pytest.raises(FormatError, match=r"q.txt, line 3: invalid UTF-8"):
        evaluate_analogies(TABLE, VOCAB, path)
    pairs = tmp_path / "p.tsv"
    pairs.write_bytes(b"w1\tw2\t1\n" * 3 + b"w1\t\xff\t2\n")
    with pytest.raises(FormatError, match=r"p.tsv, line 4: cannot decode"):
        evaluate_pairs(TABLE, VOCAB, pairs)


def test_evaluation_needs_a_vocabulary(files):
    with pytest.raises(ConfigError, match="vocabulary"):
        evaluate_analogies(TABLE, None, files[0])
    with pytest.raises(ConfigError, match="vocabulary"):
        evaluate_pairs(TABLE, None, files[1])
