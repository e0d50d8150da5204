"""Table statistics: norms against numpy on the whole table, zero / non-finite / duplicate rows
by brute force, neighbours against most_similar, streaming, and the text rendering."""
from __future__ import annotations

import re

import numpy as np
import pytest

from embtool import similar, stats
from embtool.errors import EmbtoolError, ShapeError
from embtool.similar import most_similar
from embtool.stats import format_stats, table_stats


def odd_table(rng, n=600, dim=12, dtype=np.float32):
    w = rng.standard_normal((n, dim)).astype(dtype)
    w[4] = 0
    w[9] = -0.0  # equal to the zero row 4
    w[20] = w[11]
    w[21] = w[11]
    w[30, 2] = np.nan
    w[31] = w[30]  # same NaN bits: a duplicate
    w[40, 0] = np.inf
    w[50, 5] = -0.0
    w[51] = w[50]
    w[51, 5] = 0.0  # differs from row 50 only in the sign of a zero: a duplicate
    w[60] = 1e-30  # tiny: float32 norm underflows to 0, not a zero row
    w[61] = 1e30  # huge: float32 norm overflows, finite row
    return w


def brute_duplicates(w):
    folded = (w + w.dtype.type(0)).view(f"u{w.dtype.itemsize}")
    pairs = []
    for i in range(len(w)):
        for j in range(i):
            if np.array_equal(folded[i], folded[j]):
                pairs.append((i, j))
                break
    return pairs


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_counts_match_brute_force(dtype):
    rng = np.random.default_rng(51)
    w = odd_table(rng, dtype=dtype)
    got = table_stats(w)
    wf = w.astype(np.float64)
    zero = np.flatnonzero((wf == 0).all(axis=1))
    nonfinite = np.flatnonzero(~np.isfinite(wf).all(axis=1))
    assert got["zero_rows"] == {"count": len(zero), "examples": zero[:5].tolist()}
    assert got["nonfinite_rows"] == {"count": len(nonfinite), "examples": nonfinite[:5].tolist()}
    dups = brute_duplicates(w)
    assert got["duplicate_rows"] == {"count": len(dups), "examples": dups[:5]}
    assert got["rows"] == len(w) and got["dim"] == w.shape[1]


def test_norm_summary_and_histogram_match_numpy():
    rng = np.random.default_rng(52)
    w = odd_table(rng)
    got = table_stats(w, bins=7)
    norms = np.linalg.norm(w.astype(np.float64), axis=1)
    f32 = np.linalg.norm(w, axis=1).astype(np.float64)  # gensim's float32 norms where finite
    norms = np.where(np.isfinite(f32) & (f32 > 0), f32, norms)
    finite = norms[np.isfinite(norms)]
    assert len(finite) == len(w) - 3
    assert got["norms"]["min"] == finite.min() and got["norms"]["max"] == finite.max()
    assert got["norms"]["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert got["norms"]["std"] == pytest.approx(finite.std(), rel=1e-12)
    assert got["norms"]["quantiles"]["p50"] == pytest.approx(np.median(finite), rel=1e-12)
    assert got["norms"]["quantiles"]["p99"] == pytest.approx(np.quantile(finite, 0.99), rel=1e-12)
    counts, edges = np.histogram(finite, bins=7)
    assert got["histogram"]["counts"] == counts.tolist()
    assert np.allclose(got["histogram"]["edges"], edges)
    assert got["norms"]["min"] == 0.0 and got["norms"]["max"] > 1e30  # exact zero row, overflow fixed


def test_neighbours_are_most_similars():
    rng = np.random.default_rng(53)
    w = odd_table(rng, n=900)
    got = table_stats(w, sample=4)
    assert [x["row"] for x in got["neighbours"]] == [0, 225, 450, 675]
    for item in got["neighbours"]:
        want = most_similar(w, None, [item["row"]], topn=stats.NEIGHBOURS)
        want = [(r, x) for r, x in want if np.isfinite(x)]  # row 60's norm underflows: score inf
        assert [r for r, _ in item["neighbours"]] == [r for r, _ in want]
        assert np.allclose([s for _, s in item["neighbours"]], [s for _, s in want], atol=1e-6)


def test_sample_rows_skip_zero_and_nonfinite_rows():
    w = np.ones((10, 3), np.float32)
    w[0] = 0
    w[1, 0] = np.nan
    w[5] = 0
    got = table_stats(w, sample=2)
    assert [x["row"] for x in got["neighbours"]] == [2, 6]


def test_streaming_gives_the_same_result(monkeypatch):
    rng = np.random.default_rng(54)
    w = odd_table(rng, n=1000)
    whole = table_stats(w)
    monkeypatch.setattr(similar, "CHUNK_BYTES", 48 * 37)  # 36 rows per chunk
    monkeypatch.setattr(stats, "_HASH_BLOCK", 100)
    seen = []
    assert table_stats(w, progress=seen.append) == whole
    assert sum(seen) == len(w) and max(seen) == 36


def test_hash_collisions_are_resolved_exactly(monkeypatch):
    rng = np.random.default_rng(55)
    w = odd_table(rng, n=200)
    monkeypatch.setattr(stats.Scan, "hash", lambda self, raw: np.zeros(len(raw), np.uint64))
    dups = brute_duplicates(w)
    assert table_stats(w)["duplicate_rows"] == {"count": len(dups), "examples": dups[:5]}


def test_memory_mapped_table(tmp_path):
    w = odd_table(np.random.default_rng(56))
    np.save(tmp_path / "w.npy", w)
    assert table_stats(np.load(tmp_path / "w.npy", mmap_mode="r")) == table_stats(w)


def test_degenerate_tables():
    empty = table_stats(np.zeros((0, 4), np.float32))
    assert empty["norms"] is None and empty["histogram"] == {"edges": [], "counts": []}
    assert empty["neighbours"] == [] and empty["duplicate_rows"]["count"] == 0
    same = table_stats(np.ones((3, 2), np.float32), bins=2)
    assert same["histogram"]["counts"] == [3, 0] and same["histogram"]["edges"][0] == np.sqrt(np.float32(2))
    assert same["duplicate_rows"] == {"count": 2, "examples": [(1, 0), (2, 0)]}
    assert table_stats(np.zeros((3, 0), np.float32))["zero_rows"]["count"] == 3


def test_format_stats_mentions_every_part():
    text = format_stats(table_stats(odd_table(np.random.default_rng(57)), bins=4, sample=2))
    lines = text.splitlines()
    assert lines[0] == "stats      600 rows x 12"
    assert sum(re.match(r"^ +[-0-9.e+]+ \.\. [-0-9.e+]+ +\d+( #+)?$", x) is not None for x in lines) == 4
    assert any(x.startswith("zero rows  2 (rows 4, 9") for x in lines)
    assert any(x.startswith("non-finite 3 (rows 30, 31, 40") for x in lines)
    assert any(x.startswith("duplicates 5 (row=earlier row: 9=4, 20=11, 21=11, 31=30, 51=50") for x in lines)
    assert sum(x.startswith("  row ") for x in lines) == 2
    assert "no finite rows" in format_stats(table_stats(np.zeros((0, 3), np.float32)))


def test_refusals():
    with pytest.raises(ShapeError):
        table_stats(np.zeros(4, np.float32))
    with pytest.raises(EmbtoolError, match="bins"):
        table_stats(np.zeros((4, 2), np.float32), bins=0)
