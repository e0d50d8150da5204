"""read_vectors against gensim's load_word2vec_format: committed fixtures (tests/golden/
make_formats.py) and live comparisons when gensim imports.  Keys must be equal and arrays
bit-identical (-0.0 and NaN payloads included), with tiny blocks and chunks so that every block and chunk boundary code path runs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from embtool.formats import read_vectors, source, text

sys.path.insert(0, str(Path(__file__).parent / "golden"))
import make_formats  # noqa: E402

GOLDEN = np.load(Path(__file__).parent / "golden" / "formats.npz")
NAMES = [k[:-5] for k in GOLDEN.files if k.endswith(".data")]
CASES = {c[0]: c for c in make_formats.cases()}


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return np.array_equal(a.view(f"u{a.dtype.itemsize}"), b.view(f"u{b.dtype.itemsize}"))


def load_ours(tmp_path, name, data, suffix, kw):
    path = tmp_path / (name + suffix)
    path.write_bytes(data)
    return read_vectors(path, **kw)


def expected(keys, vectors):
    """gensim's result without its phantom rows (a duplicate leaves a None key and a zero row at
    the end: docs/semantics.md §7.5, the bug our loader does not copy)."""
    real = [k is not None for k in keys]
    assert all(real[: sum(real)]), "phantom rows are always at the end"
    phantom = vectors[sum(real):]
    assert not phantom.any()
    return [k for k in keys if k is not None], vectors[: sum(real)]


@pytest.fixture(params=["default", "tiny"])
def blocks(request, monkeypatch):
    """Default block/chunk sizes, or tiny ones so a small file spans many blocks and chunks."""
    if request.param == "tiny":
        monkeypatch.setattr(source, "BLOCK_SIZE", 1 << 10)
        monkeypatch.setattr(text, "CHUNK", 97)
    return request.param


def test_fixture_covers_the_generated_cases():
    assert sorted(NAMES) == sorted(CASES)
    for name in NAMES:
        assert GOLDEN[f"{name}.data"].tobytes() == CASES[name][1], name


@pytest.mark.parametrize("name", NAMES)
def test_matches_gensim_golden(tmp_path, blocks, name):
    args = json.loads(str(GOLDEN[f"{name}.args"]))
    keys, vectors = expected(json.loads(str(GOLDEN[f"{name}.keys"])), GOLDEN[f"{name}.vectors"])
    got = load_ours(tmp_path, name, GOLDEN[f"{name}.data"].tobytes(), args["suffix"], args["ours"])
    assert got.words == keys
    assert same_bits(got.vectors, vectors)
    assert got.report.rows == len(keys)


@pytest.mark.gensim
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_gensim_live(tmp_path, gensim, name):
    _, data, suffix, gkw, okw = CASES[name]
    keys, vectors = expected(*make_formats.gensim_load(data, suffix, gkw))
    got = load_ours(tmp_path, name, data, suffix, okw)
    assert got.words == keys
    assert same_bits(got.vectors, vectors)


def test_duplicates_drop_the_phantom_row(tmp_path):
    args = json.loads(str(GOLDEN["duplicates.args"]))
    raw = json.loads(str(GOLDEN["duplicates.keys"]))
    assert raw.count(None) == 2  # gensim keeps len == header count
    got = load_ours(tmp_path, "d", GOLDEN["duplicates.data"].tobytes(), args["suffix"], {})
    assert got.words == ["a", "b", "c"]
    assert got.report.duplicates == 2 and got.report.duplicate_words == 2
    assert got.vectors.tolist() == [[1, 2], [3, 4], [7, 8]]


def test_header_smaller_reads_count_rows_and_reports_the_rest(tmp_path):
    args = json.loads(str(GOLDEN["header_smaller.args"]))
    got = load_ours(tmp_path, "h", GOLDEN["header_smaller.data"].tobytes(), args["suffix"], {})
    assert got.report.rows == 25 and got.report.ignored_rows == 15
    assert "15 more rows" in got.report.warnings[0]
    assert "15 rows beyond the header count" in got.summary()


def test_bom_is_skipped_where_gensim_needs_utf8_sig(tmp_path):
    got = load_ours(tmp_path, "b", GOLDEN["glove_bom.data"].tobytes(), ".txt", {})
    assert got.report.bom and got.words[0] == "w0"
