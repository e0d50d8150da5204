"""The Python API: what ``dir``/``help`` show, a cheap ``import embtool``, and a table used like
gensim's KeyedVectors (keys, rows, ``in``, ``len``, ``most_similar`` with gensim's numbers)."""
from __future__ import annotations

import pydoc
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import embtool
from embtool.errors import IndexRangeError, KeyNotFoundError
from embtool.table import Config, create
from embtool.vocab import encode_vocab

WORDS = ["king", "queen", "man", "woman"] + [f"w{i}" for i in range(196)]


@pytest.fixture(scope="module")
def weight():
    return np.random.default_rng(3).standard_normal((len(WORDS), 12)).astype(np.float32)


@pytest.fixture
def table(tmp_path, weight):
    path = tmp_path / "t.safetensors"
    create(path, {"weight": weight, **encode_vocab(WORDS)}, Config(frozen=True))
    with embtool.open(path) as t:
        yield t


def test_dir_and_help_list_the_public_names():
    names = set(embtool.__all__) - {"__version__"}
    assert {"open", "Table", "lookup", "most_similar", "load_pretrained", "EmbtoolError"} <= names
    assert names <= set(dir(embtool))
    text = pydoc.render_doc(embtool, renderer=pydoc.plaintext)
    for name in names:
        assert name in text
        assert getattr(embtool, name).__doc__, name


def test_import_embtool_stays_cheap():
    code = "import sys, embtool; dir(embtool); print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'numba', 'click', 'rich') or m.startswith('embtool.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_repr_len_contains_iter(table, tmp_path):
    text = repr(table)
    for part in ("t.safetensors", "200 x 12", "F32", "200 words", "frozen", "tensor='weight'"):
        assert part in text
    assert len(table) == 200
    assert "king" in table and 5 in table and "xyzzy" not in table and 200 not in table
    assert -1 not in table and None not in table
    assert list(table)[:4] == WORDS[:4]
    bare = tmp_path / "bare.safetensors"
    create(bare, {"weight": np.zeros((3, 2), np.float32)}, Config())
    with embtool.open(bare) as t:
        assert "no vocabulary" in repr(t) and "frozen" not in repr(t)
        assert list(t) == [0, 1, 2] and "king" not in t
    assert "closed" in repr(t)


def test_rows_by_word_id_list_array_and_slice(table, weight):
    assert np.array_equal(table["queen"], weight[1])
    assert np.array_equal(table[5], weight[5]) and np.array_equal(table[np.int32(5)], weight[5])
    assert np.array_equal(table[["king", 7, "man"]], weight[[0, 7, 2]])
    assert np.array_equal(table[[["king", "queen"], ["man", "woman"]]], weight[:4].reshape(2, 2, 12))
    assert np.array_equal(table[np.array([[3], [4]])], weight[[3, 4]].reshape(2, 1, 12))
    assert np.array_equal(table[10:13], weight[10:13])
    row = table["king"]
    row[:] = 0  # a copy: the table is not changed
    assert np.array_equal(table["king"], weight[0])


@pytest.mark.parametrize("key,error,message", [
    ("xyzzy", KeyNotFoundError, "word 'xyzzy' is not in the vocabulary of"),
    (200, IndexRangeError, "row 200 is out of range for a table of 200 rows"),
    (-1, IndexRangeError, "row -1 is out of range"),
    (["king", "xyzzy"], KeyNotFoundError, "'xyzzy'"),
    (np.array([1, 250]), IndexRangeError, "row 250 is out of range"),
    (1.5, TypeError, "a key is a word or a row id, not float"),
])
def test_bad_keys(table, key, error, message):
    with pytest.raises(error) as info:
        table[key]
    assert message in str(info.value)


def test_bf16_rows_are_widened(tmp_path, weight):
    path = tmp_path / "b.safetensors"
    create(path, {"weight": weight, **encode_vocab(WORDS)}, Config(), weight_dtype="BF16")
    with embtool.open(path) as t:
        got = t[["king", 3]]
        assert got.dtype == np.float32
        assert np.array_equal(got, t.weight()[[0, 3]])
        assert np.array_equal(t[5:9], t.weight()[5:9])
        # a search widens chunk by chunk, never the whole table, with the same results
        assert not isinstance(t.streamed(), np.ndarray)
        want = embtool.most_similar(t.weight(), None, [0, 7], [3], topn=6)
        assert t.most_similar(["king", 7], [3], topn=6) == [(WORDS[r], s) for r, s in want]


def test_most_similar_is_gensims(table, weight, gensim):
    kv = gensim.models.KeyedVectors(12)
    kv.add_vectors(WORDS, weight)
    vec = np.random.default_rng(4).standard_normal(12).astype(np.float32)
    cases = [
        dict(positive="king"),
        dict(positive=["king", "woman"], negative=["man"], topn=5),
        dict(positive=[("king", 2.0), "woman"], negative="man", topn=3),
        dict(positive=["queen", vec], topn=4),
        dict(positive="w50", restrict_vocab=60, topn=8),
        dict(negative=["w3"], topn=6),
    ]
    for kw in cases:
        got = table.most_similar(**kw)
        want = kv.most_similar(**kw)
        assert [w for w, _ in got] == [w for w, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1e-6)
    mixed = table.most_similar(["king", 3], topn=5)  # ids work where words do
    assert mixed == table.most_similar(["king", "woman"], topn=5)
    many = table.most_similar_many(["king", ["king", "woman"], {"positive": ["king"], "negative": ["man"]}], topn=4)
    assert many == [table.most_similar("king", topn=4), table.most_similar(["king", "woman"], topn=4),
                    table.most_similar("king", "man", topn=4)]


def test_most_similar_without_a_vocabulary_gives_row_ids(tmp_path, weight):
    path = tmp_path / "bare.safetensors"
    create(path, {"weight": weight}, Config())
    with embtool.open(path) as t:
        got = t.most_similar(0, topn=3)
        assert [r for r, _ in got] == [r for r, _ in embtool.most_similar(weight, None, [0], topn=3)]
        with pytest.raises(KeyNotFoundError, match="has no vocabulary"):
            t.most_similar("king")


def test_a_model_folder_is_queried_by_its_tokenizer_words():
    folder = Path(__file__).parent.parent / "sample_data" / "static-model"
    with embtool.open(folder) as t:
        assert "1,002 words" in repr(t) and list(t)[:2] == ["[PAD]", "[UNK]"]
        word = t.vocab.word(100)
        want = embtool.most_similar(t.weight(), None, [100], topn=4)
        assert t.most_similar(word, topn=4) == [(t.vocab.word(r), s) for r, s in want]
        assert np.array_equal(t[word], t.weight()[100])
