"""most_similar: gensim 4.4's keys, order and scores (committed fixture and live), the naive
reference, streaming, and the refused queries (the top-k kernels are checked against a full sort
in test_kernels.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embtool import similar
from embtool.errors import ConfigError, EmbtoolError, IndexRangeError, ShapeError
from embtool.kernels import numpy_kernels
from embtool.kernels.common import EMPTY
from embtool.similar import decode, most_similar
from embtool.vocab import Vocab

import naive_query as naive

GOLDEN = np.load(Path(__file__).parent / "golden" / "query.npz")
TABLE = GOLDEN["table"]
SIMILAR_CASES = sorted({int(k[7:].split("_")[0]) for k in GOLDEN.files if k.startswith("similar") and k[7].isdigit()})


def assert_same_ranking(got, rows, scores, tol=1e-6):
    """Same rows in the same order with scores within ``tol``; rows whose scores lie within
    ``tol`` of each other may come in either order (gensim leaves ties unspecified)."""
    assert len(got) == len(rows)
    got_rows = [r for r, _ in got]
    got_scores = np.array([s for _, s in got])
    assert np.allclose(got_scores, scores, rtol=0, atol=tol, equal_nan=True), (got_scores - scores)
    for i in range(len(rows)):
        if got_rows[i] != rows[i]:
            near = np.abs(np.asarray(scores) - scores[i]) <= tol
            assert got_rows[i] in set(np.asarray(rows)[near]), (i, got_rows, list(rows))


def golden_query(i):
    q = json.loads(str(GOLDEN[f"similar{i}_args"]))

    def item(x):
        if x == "vector":
            return GOLDEN["similar_vector"]
        return (x[0], x[1]) if isinstance(x, list) else x

    return [item(x) for x in q["positive"]], [item(x) for x in q["negative"]], q


@pytest.mark.parametrize("case", SIMILAR_CASES)
@pytest.mark.parametrize("chunk_rows", [None, 64, 100])
def test_matches_gensim_golden(case, chunk_rows):
    pos, neg, q = golden_query(case)
    got = most_similar(TABLE, None, pos, neg, topn=q["topn"], restrict_vocab=q["restrict_vocab"],
                       chunk_rows=chunk_rows)
    assert_same_ranking(got, GOLDEN[f"similar{case}_rows"], GOLDEN[f"similar{case}_scores"])


@pytest.mark.parametrize("case", SIMILAR_CASES)
def test_matches_naive_reference(case):
    pos, neg, q = golden_query(case)
    got = most_similar(TABLE, None, pos, neg, topn=q["topn"], restrict_vocab=q["restrict_vocab"])
    want = naive.most_similar(TABLE, pos, neg, q["topn"], q["restrict_vocab"])
    assert_same_ranking(got, [r for r, _ in want], np.array([s for _, s in want]))


def keyed_vectors(gensim, weight):
    kv = gensim.models.KeyedVectors(weight.shape[1])
    kv.add_vectors([f"w{i}" for i in range(len(weight))], weight)
    return kv


def test_matches_live_gensim(gensim):
    rng = np.random.default_rng(21)
    w = rng.standard_normal((3000, 40)).astype(np.float32)
    w[5] = 0
    kv = keyed_vectors(gensim, w)
    for trial in range(60):
        pos = [int(x) for x in rng.integers(6, 3000, int(rng.integers(1, 4)))]
        neg = [int(x) for x in rng.integers(6, 3000, int(rng.integers(0, 3)))]
        if trial % 4 == 0:
            pos = [(pos[0], float(rng.uniform(0.1, 3)))] + pos[1:]
            neg = [(x, float(rng.uniform(-1, 1))) for x in neg]
        if trial % 5 == 0:
            pos.append(rng.standard_normal(40).astype(np.float32) * 4)
        topn, restrict = int(rng.integers(1, 30)), [None, 50, 1000, 5000][trial % 4]

        def key(x):
            if isinstance(x, tuple):
                return (f"w{x[0]}", x[1])
            return x if isinstance(x, np.ndarray) else f"w{x}"

        want = kv.most_similar([key(x) for x in pos], [key(x) for x in neg], topn=topn, restrict_vocab=restrict)
        got = most_similar(w, None, pos, neg, topn=topn, restrict_vocab=restrict, chunk_rows=int(rng.integers(4, 4000)))
        assert_same_ranking(got, [kv.get_index(k) for k, _ in want], np.array([s for _, s in want]))


def test_scores_are_gensims_bit_for_bit_on_single_row_queries(gensim):
    rng = np.random.default_rng(22)
    w = rng.standard_normal((2000, 64)).astype(np.float32)
    kv = keyed_vectors(gensim, w)
    for row in (0, 17, 1999):
        want = kv.most_similar(f"w{row}", topn=20)
        got = most_similar(w, None, row, topn=20)
        assert [r for r, _ in got] == [kv.get_index(k) for k, _ in want]
        assert [s for _, s in got] == [s for _, s in want]


def test_other_table_dtypes_are_searched_in_float32():
    rng = np.random.default_rng(23)
    w = rng.standard_normal((500, 16))
    for dtype in (np.float64, np.float16):
        got = most_similar(w.astype(dtype), None, [3, 4], [9], topn=7, chunk_rows=64)
        want = most_similar(w.astype(dtype).astype(np.float32), None, [3, 4], [9], topn=7)
        assert got == want


def test_zero_rows_rank_last_and_ties_by_lower_row():
    w = np.array([[1, 0], [0, 0], [1, 0], [0, 1], [2, 0], [-1, 0], [0, 0]], np.float32)
    got = most_similar(w, None, np.array([1.0, 0.0], np.float32), topn=None, chunk_rows=4)
    rows = [r for r, _ in got]
    assert rows[:3] == [0, 2, 4]  # three rows with cosine exactly 1: lower row first
    assert rows[3:5] == [3, 5] and rows[5:] == [1, 6]
    assert np.isnan([s for _, s in got][5:]).all()


def test_input_rows_are_excluded_vectors_are_not():
    w = np.random.default_rng(24).standard_normal((100, 8)).astype(np.float32)
    assert 3 not in [r for r, _ in most_similar(w, None, [3], topn=99)]
    assert len(most_similar(w, None, [3], topn=200)) == 99
    got = most_similar(w, None, [w[3]], topn=1)
    assert got[0][0] == 3 and abs(got[0][1] - 1) < 1e-6
    assert most_similar(w, None, [3], topn=0) == [] and most_similar(w, None, [3], topn=-2) == []


def test_restrict_vocab_searches_the_first_rows():
    w = np.random.default_rng(25).standard_normal((300, 8)).astype(np.float32)
    got = most_similar(w, None, [250], topn=None, restrict_vocab=40)
    assert sorted(r for r, _ in got) == list(range(40))
    assert most_similar(w, None, [1], restrict_vocab=0) == most_similar(w, None, [1])


def test_streams_chunks_without_touching_the_whole_table(monkeypatch):
    """Rows are read in slices of at most the chunk size (plus the query rows)."""
    w = np.random.default_rng(26).standard_normal((1000, 8)).astype(np.float32)

    class Recorder:
        ndim, shape, dtype = 2, w.shape, w.dtype
        largest = 0

        def __getitem__(self, key):
            part = w[key]
            Recorder.largest = max(Recorder.largest, len(part) if part.ndim == 2 else 1)
            return part

    got = most_similar(Recorder(), None, [5, 6], [7], topn=10, chunk_rows=96)
    assert Recorder.largest == 96
    assert got == most_similar(w, None, [5, 6], [7], topn=10)


@pytest.mark.parametrize("positive,negative,error,message", [
    ([], [], EmbtoolError, "cannot compute similarity with no input"),
    (None, None, EmbtoolError, "cannot compute similarity with no input"),
    ([100], [], IndexRangeError, "row id 100 is out of range [0, 100)"),
    ([-1], [], IndexRangeError, "row id -1 is out of range"),
    ([np.zeros(5, np.float32)], [], ShapeError, "query vector has shape (5,)"),
    (["king"], [], EmbtoolError, "must be a row id, a vector or an (item, weight) pair"),
    ([0], [], EmbtoolError, "row 0 has norm 0.0"),
    ([1], [1], EmbtoolError, "the query has norm 0.0"),
    ([np.zeros(8, np.float32)], [], EmbtoolError, "the query has norm 0.0"),
    ([(3, 0.0)], [], EmbtoolError, "the query has norm 0.0"),
    ([2], [], EmbtoolError, "row 2 has norm nan"),
])
def test_refused_queries(positive, negative, error, message):
    w = np.random.default_rng(28).standard_normal((100, 8)).astype(np.float32)
    w[0] = 0
    w[2, 1] = np.nan
    with pytest.raises(error) as info:
        most_similar(w, None, positive, negative)
    assert message in str(info.value)


def test_error_names_the_word_when_there_is_a_vocabulary():
    w = np.zeros((4, 3), np.float32)
    with pytest.raises(EmbtoolError, match="row 2 \\('w2'\\) has norm 0.0"):
        most_similar(w, Vocab.from_words(["w0", "w1", "w2", "w3"]), [2])


def test_small_queries_do_not_import_numba(tmp_path):
    """A query on a small table stays on the numpy kernels (Numba's import costs ~0.3 s)."""
    np.save(tmp_path / "w.npy", np.random.default_rng(29).standard_normal((2000, 50)).astype(np.float32))
    code = ("import sys, numpy as np; from embtool.similar import most_similar; "
            f"most_similar(np.load({str(tmp_path / 'w.npy')!r}, mmap_mode='r'), None, [3], topn=10); "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_negative_restrict_vocab_is_refused():
    with pytest.raises(ConfigError):
        most_similar(np.ones((4, 3), np.float32), None, [1], restrict_vocab=-2)


def test_chunks_are_multiples_of_four_rows():
    w = np.zeros((10, 300), np.float32)
    assert similar.chunk_size(w) % 4 == 0 and similar.chunk_size(w, 7) == 4
    assert similar.chunk_size(w) * 300 * 4 <= similar.CHUNK_BYTES


def random_queries(rng, n, count, vectors=True):
    queries = []
    for trial in range(count):
        pos = [int(x) for x in rng.integers(6, n, int(rng.integers(1, 4)))]
        neg = [int(x) for x in rng.integers(6, n, int(rng.integers(0, 3)))]
        if trial % 4 == 0:
            pos = [(pos[0], float(rng.uniform(0.1, 3)))] + pos[1:]
        if vectors and trial % 5 == 0:
            pos.append(rng.standard_normal(40).astype(np.float32) * 4)
        queries.append((pos, neg))
    return queries


@pytest.mark.parametrize("topn,restrict", [(1, None), (10, None), (7, 500), (None, 300)])
def test_many_queries_give_the_results_of_one_call_each(topn, restrict):
    """Matrix products over each chunk, then rescoring: bit for bit the single-query results."""
    rng = np.random.default_rng(40)
    w = rng.standard_normal((3000, 40)).astype(np.float32)
    w[5] = 0
    w[700:710] = w[700]  # exact ties
    queries = random_queries(rng, 3000, 60) + [([700], []), ([w[700]], [])]
    got = similar.most_similar_many(w, None, queries, topn=topn, restrict_vocab=restrict, chunk_rows=1000)
    for (pos, neg), result in zip(queries, got):
        want = most_similar(w, None, pos, neg, topn=topn, restrict_vocab=restrict)
        assert [r for r, _ in result] == [r for r, _ in want]
        assert np.array_equal([s for _, s in result], [s for _, s in want], equal_nan=True)


def test_many_queries_match_live_gensim(gensim):
    rng = np.random.default_rng(41)
    w = rng.standard_normal((5000, 40)).astype(np.float32)
    kv = keyed_vectors(gensim, w)
    queries = random_queries(rng, 5000, 200, vectors=False)
    got = similar.most_similar_many(w, None, queries, topn=12)

    def key(x):
        return (f"w{x[0]}", x[1]) if isinstance(x, tuple) else f"w{x}"

    for (pos, neg), result in zip(queries, got):
        want = kv.most_similar([key(x) for x in pos], [key(x) for x in neg], topn=12)
        assert_same_ranking(result, [kv.get_index(k) for k, _ in want], np.array([s for _, s in want]))


def test_uncertain_proposals_are_answered_by_a_single_query_pass(monkeypatch):
    rng = np.random.default_rng(42)
    w = rng.standard_normal((2000, 24)).astype(np.float32)
    queries = random_queries(rng, 2000, 20, vectors=False)
    want = similar.most_similar_many(w, None, queries, topn=5)
    calls = []
    real_each = similar.search_each
    monkeypatch.setattr(similar, "search_each", lambda *a, **k: calls.append(len(a[1])) or real_each(*a, **k))
    monkeypatch.setattr(similar, "margin", lambda dim: 10.0)
    assert similar.most_similar_many(w, None, queries, topn=5) == want
    assert calls == [20]


def test_known_norms_give_the_same_results():
    rng = np.random.default_rng(43)
    w = rng.standard_normal((1500, 30)).astype(np.float32)
    w[9] = 0
    norms = np.linalg.norm(w, axis=1)
    queries = random_queries(rng, 1500, 10, vectors=False)
    for topn in (3, None):
        got = similar.most_similar_many(w, None, queries, topn=topn, norms=norms, chunk_rows=200)
        want = similar.most_similar_many(w, None, queries, topn=topn, chunk_rows=64)
        for a, b in zip(got, want, strict=True):
            assert [r for r, _ in a] == [r for r, _ in b]
            assert np.array_equal([s for _, s in a], [s for _, s in b], equal_nan=True)


def test_queries_of_rows_are_computed_together_as_one_at_a_time():
    """``mean_units`` (all queries at once) is ``unit_query``'s item-by-item loop bit for bit."""
    rng = np.random.default_rng(44)
    w = (rng.standard_normal((400, 33)) * rng.uniform(0.01, 50, (400, 1))).astype(np.float32)
    lists = []
    for _ in range(80):
        m = int(rng.integers(1, 11))
        lists.append([(int(r), float(rng.choice([1.0, -1.0, rng.uniform(-3, 3)])))
                      for r in rng.integers(0, 400, m)])
    units, exclude = similar.unit_queries(w, lists)
    for items, unit, ex in zip(lists, units, exclude):
        want, want_ex = similar.unit_query(w, items)
        assert np.array_equal(unit, want)
        assert ex[ex >= 0].tolist() == want_ex.tolist()


def test_with_known_norms_scores_are_gensims_bit_for_bit(gensim):
    """Known norms: one matrix-vector product over all rows, as gensim computes it."""
    rng = np.random.default_rng(45)
    w = rng.standard_normal((2003, 64)).astype(np.float32)
    kv = keyed_vectors(gensim, w)
    norms = np.linalg.norm(w, axis=1)
    for row in (0, 17, 2002):
        want = kv.most_similar(f"w{row}", topn=20)
        got = most_similar(w, None, row, topn=20, norms=norms)
        assert [r for r, _ in got] == [kv.get_index(k) for k, _ in want]
        assert [s for _, s in got] == [s for _, s in want]


def test_one_query_is_merged_in_pieces(monkeypatch):
    rng = np.random.default_rng(46)
    w = rng.standard_normal((1000, 8)).astype(np.float32)
    norms = np.linalg.norm(w, axis=1)
    want = most_similar(w, None, [4], topn=30, norms=norms)
    monkeypatch.setattr(similar, "SELECT_SCORES", 96)
    assert most_similar(w, None, [4], topn=30, norms=norms) == want


#: scores that rank in special ways: NaN, signed zeros and infinities, ties, a subnormal.
SCORE_POOL = np.float32([0.5, -0.0, 0.0, np.nan, -np.inf, np.inf, 0.25, -1, 1e-30, -1e-30])


@pytest.mark.parametrize("seed", range(30))
def test_selection_above_the_kth_score_is_the_kernels(seed):
    """``similar._select`` (kernel until k numbers are known, then only the rows at or above the
    k-th score) gives the top-k kernel's keys exactly, ties, NaN, -0.0 and exclusions included
    (the kernel of either backend: tests/test_kernels.py checks they agree)."""
    rng = np.random.default_rng(100 + seed)
    q, k = int(rng.integers(1, 5)), int(rng.integers(1, 9))
    exclude = rng.integers(-1, 60, (q, int(rng.integers(0, 4))))
    got = np.full((q, k), EMPTY, np.int64)
    want = got.copy()
    start = 0
    for _ in range(int(rng.integers(1, 6))):
        n = int(rng.integers(0, 25))
        pool = SCORE_POOL if seed % 2 else np.round(rng.standard_normal(8), 1).astype(np.float32)
        s = np.ascontiguousarray(rng.choice(pool, (q, n)))
        similar._select(s, start, exclude, got)
        numpy_kernels.select(s, start, exclude, want)
        start += n
    assert np.array_equal(got, want)
