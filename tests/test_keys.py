"""embtool.keys: words and row numbers to rows, unknown-word policies, and the suggestions for an
unknown word against a brute-force edit distance."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from embtool import keys
from embtool.errors import ConfigError, IndexRangeError, KeyNotFoundError
from embtool.vocab import Vocab

from helpers import make_table

GLOVE = Path(__file__).parent.parent / "sample_data" / "glove.6B.50d.10k.txt.gz"


@pytest.fixture(scope="module")
def glove_words():
    with gzip.open(GLOVE, "rt", encoding="utf-8") as f:
        return [line.split(" ", 1)[0] for line in f]


def osa(a: str, b: str) -> int:
    """Optimal string alignment distance, the textbook way (the reference for keys)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def brute_force(words, word, limit=keys.SUGGESTIONS):
    """closest_words by definition: case variants by row, then (distance, row), ASCII case folded."""
    rows = {w: i for i, w in enumerate(words)}
    variants = {word.lower(), word.capitalize(), word.title(), word.upper(), word.casefold(),
                word.swapcase()} - {word}
    out = [w for w in sorted(variants, key=lambda v: rows.get(v, -1)) if w in rows]
    d = keys.max_distance(len(word.encode()))
    fold = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
    near = sorted((osa(word.translate(fold), w.translate(fold)), i, w) for i, w in enumerate(words)
                  if abs(len(w.encode()) - len(word.encode())) <= d)
    out += [w for dist, _, w in near if 0 < dist <= d or (dist == 0 and w != word)]
    return list(dict.fromkeys(x for x in out if x != word))[:limit]


def typos(words, rng, n):
    """Words with one or two random edits (insert, delete, substitute, swap), some re-cased."""
    out = []
    for w in rng.choice([w for w in words if w.isalpha() and len(w) >= 3], n):
        w = list(w)
        for _ in range(rng.integers(1, 3)):
            i = int(rng.integers(0, len(w)))
            op = rng.integers(0, 4)
            c = chr(int(rng.integers(97, 123)))
            if op == 0:
                w.insert(i, c)
            elif op == 1 and len(w) > 1:
                del w[i]
            elif op == 2:
                w[i] = c
            elif i + 1 < len(w):
                w[i], w[i + 1] = w[i + 1], w[i]
        w = "".join(w)
        out.append(w.upper() if rng.random() < 0.1 else w)
    return out


def test_closest_words_match_brute_force(glove_words):
    words = glove_words[:1500]  # the Python reference is slow
    vocab = Vocab.from_words(words)
    rng = np.random.default_rng(0)
    for word in typos(words, rng, 30) + ["King", "PARIS", "teh", "kign", "xyzzy", "ab", "--x"]:
        if word in words:
            continue
        assert keys.closest_words(vocab, word) == brute_force(words, word), word


def test_closest_words_beyond_the_head_by_prefix(monkeypatch, glove_words):
    """Rows past HEAD_ROWS are searched among words that begin as the query does."""
    monkeypatch.setattr(keys, "HEAD_ROWS", 50)
    vocab = Vocab.from_words(glove_words)
    assert glove_words.index("government") > 50
    assert "government" in keys.closest_words(vocab, "governmnet")
    assert "government" in keys.closest_words(vocab, "ogvernment")  # the first two swapped


def test_suggestions_in_the_error_and_case_first(tmp_path):
    from embtool.table import Table, create
    from embtool.config import Config
    from embtool.vocab import encode_vocab

    words = ["the", "king", "queen", "kin", "sing", "King's", "[CLS]"]
    path = tmp_path / "t.safetensors"
    create(path, {"weight": np.zeros((len(words), 2), np.float32), **encode_vocab(words)}, Config())
    with Table.open(path) as t:
        with pytest.raises(KeyNotFoundError, match=r"'kign' is not in the vocabulary .*; did you mean 'king', 'kin'\?$"):
            keys.rows_for_words(t, ["the", "kign"])
        with pytest.raises(KeyNotFoundError, match=r"nor are 1 more"):
            keys.rows_for_words(t, ["kign", "quen"])
        with pytest.raises(KeyNotFoundError, match=r"did you mean 'king'"):
            keys.rows_for_keys(t, ["KING"])
        with pytest.raises(KeyNotFoundError, match=r"did you mean '\[CLS\]'"):
            keys.rows_for_keys(t, ["[cls]"])
        found = keys.rows_for_words(t, ["queen", "xyzzy", "the", "abc"], unknown="skip")
        assert found.ids.tolist() == [2, 0] and found.words == ["queen", "the"]
        assert found.skipped == ["xyzzy", "abc"]
        assert keys.skipped_message(found.skipped) == "skipped 2 unknown words: 'xyzzy', 'abc'"
        with pytest.raises(ConfigError, match="no unk row"):
            keys.rows_for_words(t, ["xyzzy"], unknown="unk")
        assert keys.rows_for_words(t, [["the", "kin"]]).ids.tolist() == [[0, 3]]
        assert keys.rows_for_keys(t, ["3"], as_ids=True) == [3]
        with pytest.raises(IndexRangeError, match="row 7 is out of range"):
            keys.rows_for_keys(t, ["7"], as_ids=True)


def test_row_numbers_without_vocabulary(tmp_path):
    from embtool.table import Table

    p = make_table(tmp_path / "t.safetensors", np.zeros((4, 2), np.float32))
    with Table.open(p) as t:
        assert keys.rows_for_keys(t, ["3", "0"]) == [3, 0]
        with pytest.raises(KeyNotFoundError, match="'king' is not a row number .the table has no vocabulary"):
            keys.rows_for_keys(t, ["king"])
        with pytest.raises(ConfigError, match="no vocabulary"):
            keys.rows_for_words(t, ["king"])


def test_skipped_message_names_at_most_ten():
    msg = keys.skipped_message([f"w{i}" for i in range(13)])
    assert msg.startswith("skipped 13 unknown words: 'w0', ") and msg.endswith("'w9' and 3 more")
