"""write_vectors: gensim-identical bytes (committed fixture and live), refused words, and export ->
load round trips (hypothesis) that must give bit-identical tables.  The formatting kernels are
checked against numpy's str(np.float32) in test_kernels_text.py."""
from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

import naive_parse
from embtool.errors import ConfigError, FormatError
from embtool.formats import read_vectors, write_vectors, write_vocab_file
from embtool.vocab import read_vocab_file

sys.path.insert(0, str(Path(__file__).parent / "golden"))
import make_formats  # noqa: E402

GOLDEN = np.load(Path(__file__).parent / "golden" / "formats.npz")
FORMATS = ["glove", "word2vec", "word2vec-binary"]


def bits(a):
    a = np.asarray(a)
    return a.view(f"u{a.dtype.itemsize}").tolist()


@pytest.mark.parametrize("fmt, key", [("word2vec", "save.text"), ("word2vec-binary", "save.binary")])
def test_export_is_byte_identical_to_gensim_golden(tmp_path, fmt, key):
    words, vectors = make_formats.save_case()
    write_vectors(tmp_path / "out", words, vectors, format=fmt)
    assert (tmp_path / "out").read_bytes() == GOLDEN[key].tobytes()


@pytest.mark.gensim
@pytest.mark.parametrize("binary", [False, True])
def test_export_is_byte_identical_to_gensim_live(tmp_path, gensim, binary):
    rng = np.random.default_rng(11)
    v = (rng.standard_normal((300, 20)) * 10.0 ** rng.integers(-9, 9, (300, 1))).astype(np.float32)
    words = [f"x{i}" for i in range(300)]
    write_vectors(tmp_path / "out", words, v, format="word2vec-binary" if binary else "word2vec")
    assert (tmp_path / "out").read_bytes() == make_formats.gensim_save(words, v, binary)


@pytest.mark.parametrize("word, what", [
    ("", "row 1 is empty"), ("a b", "row 1 contains a space"), ("a\nb", "row 1 contains a line break"),
])
@pytest.mark.parametrize("fmt", FORMATS)
def test_words_the_format_cannot_hold_are_refused_naming_the_row(tmp_path, fmt, word, what):
    with pytest.raises(FormatError, match=what):
        write_vectors(tmp_path / "out", ["ok", word], np.zeros((2, 3), np.float32), format=fmt)
    assert not (tmp_path / "out").exists()


def test_a_leading_bom_in_the_first_word_is_refused_for_text(tmp_path):
    with pytest.raises(FormatError, match="row 0 starts with U\\+FEFF"):
        write_vectors(tmp_path / "o", ["\ufeffa"], np.zeros((1, 2)), format="glove")
    write_vectors(tmp_path / "o", ["\ufeffa"], np.zeros((1, 2)), format="word2vec-binary")
    assert read_vectors(tmp_path / "o").words == ["\ufeffa"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError):
        write_vectors(tmp_path / "o", ["a"], np.zeros((1, 2)), format="fasttext")
    with pytest.raises(FormatError, match="2 words for 1 rows"):
        write_vectors(tmp_path / "o", ["a", "b"], np.zeros((1, 2)), format="glove")
    with pytest.raises(FormatError, match="no vocabulary"):
        write_vectors(tmp_path / "o", None, np.zeros((1, 2)), format="glove")
    with pytest.raises(FormatError, match="2-D"):
        write_vectors(tmp_path / "o", ["a"], np.zeros(2), format="glove")


def test_npy_and_vocab_file(tmp_path):
    v = np.arange(6, dtype=np.float64).reshape(3, 2)
    write_vectors(tmp_path / "v.npy", None, v, format="npy")
    write_vocab_file(tmp_path / "vocab.txt", ["a", "é", "c d"])
    assert np.load(tmp_path / "v.npy").tolist() == v.tolist()
    assert read_vocab_file(tmp_path / "vocab.txt") == ["a", "é", "c d"]


def test_float64_rows_use_the_shortest_float64_repr(tmp_path):
    v = np.array([[0.1, 1 / 3, 1e-300, 2.5]])
    write_vectors(tmp_path / "o.txt", ["a"], v, format="glove")
    assert (tmp_path / "o.txt").read_bytes() == b"a 0.1 0.3333333333333333 1e-300 2.5\n"
    back = read_vectors(tmp_path / "o.txt", dtype="float64")
    assert bits(back.vectors) == bits(v)


def test_float16_rows_round_trip_at_float16_and_float32(tmp_path):
    v = np.float16([[0.1, 65504, -6e-8, 1 / 3]])
    write_vectors(tmp_path / "o.txt", ["a"], v, format="glove")
    assert bits(read_vectors(tmp_path / "o.txt", dtype="float16").vectors) == bits(v)
    assert bits(read_vectors(tmp_path / "o.txt").vectors) == bits(v.astype(np.float32))


def test_compressed_output_and_progress(tmp_path):
    v = np.float32(np.random.default_rng(0).standard_normal((2000, 4)))
    calls = []
    write_vectors(tmp_path / "o.txt.gz", [f"w{i}" for i in range(2000)], v, format="word2vec",
                  progress=lambda b, r: calls.append((b, r)))
    raw = gzip.decompress((tmp_path / "o.txt.gz").read_bytes())
    assert raw.startswith(b"2000 4\n") and sum(c[1] for c in calls) == 2000
    assert sum(c[0] for c in calls) == len(raw) - len(b"2000 4\n")
    assert bits(read_vectors(tmp_path / "o.txt.gz").vectors) == bits(v)


def test_stdout(monkeypatch):
    class Stdout:
        buffer = io.BytesIO()

    monkeypatch.setattr(sys, "stdout", Stdout)
    write_vectors("-", ["a"], np.float32([[1, 0.5]]), format="glove")
    assert Stdout.buffer.getvalue() == b"a 1.0 0.5\n"


_word = hs.text(hs.characters(blacklist_characters=" \n\ufeff\x00", blacklist_categories=("Cs",)),
                min_size=1, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=hs.lists(_word, min_size=1, max_size=12, unique=True),
       data=hs.data(), fmt=hs.sampled_from(FORMATS))
def test_export_then_load_is_bit_identical(tmp_path, words, data, fmt):
    dim = data.draw(hs.integers(1, 5))
    values = data.draw(hs.lists(hs.floats(width=32, allow_nan=False, allow_infinity=False),
                                min_size=len(words) * dim, max_size=len(words) * dim))
    v = np.float32(values).reshape(len(words), dim)
    path = tmp_path / "out"
    write_vectors(path, words, v, format=fmt)
    back = read_vectors(path)
    assert back.words == words
    assert bits(back.vectors) == bits(v)
    assert back.report.format == fmt


def test_nonfinite_values_are_written_as_gensim_does_and_load_when_allowed(tmp_path):
    v = np.float32([[np.nan, np.inf, -np.inf, 1]])
    write_vectors(tmp_path / "o", ["a"], v, format="glove")
    assert (tmp_path / "o").read_bytes() == b"a nan inf -inf 1.0\n"
    back = read_vectors(tmp_path / "o", allow_nonfinite=True)
    assert back.report.nonfinite == 3 and np.isnan(back.vectors[0, 0])
