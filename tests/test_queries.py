"""Queries as text lines (plain terms with ``-`` for subtraction, or JSON) answered in batches:
parsing, resolution against the vocabulary, errors naming the line, and live gensim results."""
from __future__ import annotations

import numpy as np
import pytest

import embtool
from embtool import queries as qs
from embtool.errors import ConfigError, EmbtoolError, FormatError, IndexRangeError, KeyNotFoundError
from embtool.table import Config, create
from embtool.vocab import Vocab, encode_vocab

WORDS = ["king", "queen", "man", "woman", "-", "--", "-lrb-", "[CLS]", "new york", "{", "42", "lrb-"]


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(7)
    words = WORDS + [f"w{i}" for i in range(300)]
    w = rng.standard_normal((len(words), 24)).astype(np.float32)
    path = tmp_path / "t.safetensors"
    create(path, {"weight": w, **encode_vocab(words)}, Config())
    with embtool.open(path) as t:
        yield t


def rows(line, vocab=Vocab.from_words(WORDS), as_ids=False, n=len(WORDS)):
    return qs.resolve(qs.parse_line(line, "f, line 3"), vocab, n, as_ids=as_ids)


@pytest.mark.parametrize("line,positive,negative", [
    ("king", [0], []),
    ("  king   woman -man \t", [0, 3], [2]),
    ("-", [4], []),  # words of the table stay words
    ("--", [5], []),
    ("-lrb-", [6], []),
    ("king --", [0, 5], []),
    ("[CLS]", [7], []),  # not JSON: a word
    ("{", [9], []),
    ("42", [10], []),  # a number is a word in a table with a vocabulary
    ('"new york"', [8], []),  # a JSON string: one word, spaces and all
    ('["new york", "-lrb-", 1]', [8, 6, 1], []),  # a JSON list: positive terms, ids as integers
    ('{"positive": ["king", "woman"], "negative": ["man"]}', [0, 3], [2]),
    ('{"negative": ["-"]}', [], [4]),
])
def test_lines_with_a_vocabulary(line, positive, negative):
    assert rows(line) == (positive, negative)


def test_lines_of_row_ids():
    assert rows("3 7 -2", vocab=None) == ([3, 7], [2])
    assert rows("3 7 -2", as_ids=True) == ([3, 7], [2])
    assert rows("[3, 7]", vocab=None) == ([3, 7], [])
    with pytest.raises(FormatError, match="f, line 3: 'king' is not a row number \\(the table has no vocabulary\\)"):
        rows("king", vocab=None)
    with pytest.raises(IndexRangeError, match="f, line 3: row 12 is out of range for a table of 12 rows"):
        rows("12", vocab=None)
    with pytest.raises(ConfigError, match="f, line 3: the table has no vocabulary"):
        rows('["king"]', vocab=None)


@pytest.mark.parametrize("line,error,message", [
    ("xyzzy", KeyNotFoundError, "f, line 3: word 'xyzzy' is not in the vocabulary"),
    ("king -xyzzy", KeyNotFoundError, "word 'xyzzy' is not in the vocabulary"),
    ('["lrb", 2]', KeyNotFoundError, "word 'lrb' is not in the vocabulary"),
    ('{"positive": "king"}', FormatError, "f, line 3: positive must be a list of words"),
    ('{"positive": ["king"], "topn": 3}', FormatError, "not 'topn'"),
    ('[1.5]', FormatError, "the list must be a list of words (strings) and row ids (integers)"),
    ('[true]', FormatError, "the list must be a list"),
    ("[99]", IndexRangeError, "f, line 3: row 99 is out of range"),
])
def test_bad_lines(line, error, message):
    with pytest.raises(error) as info:
        rows(line)
    assert message in str(info.value)


def test_blank_lines_are_no_queries():
    assert qs.parse_line("   ") is None and qs.parse_line("") is None


def test_a_words_file_has_one_word_per_line(tmp_path, table):
    path = tmp_path / "w.txt"
    path.write_text("new york\n-lrb-\n\n[CLS]\n")
    got = list(qs.similar_many(table, path, words=True, topn=3))
    assert [r.query.text for r in got] == ["new york", "-lrb-", "[CLS]"]
    for r in got:
        assert [(table.vocab.word(row), s) for row, s in r.neighbours] == table.most_similar(r.query.text, topn=3)


def test_reading_a_file_names_the_lines(tmp_path):
    path = tmp_path / "q.txt"
    path.write_bytes(b"king\r\n\n  \nqueen -man\n\xff\n")
    got = qs.read_queries(path)
    first, second = next(got), next(got)
    assert (first.text, first.where) == ("king", f"{path}, line 1")
    assert (second.text, second.where) == ("queen -man", f"{path}, line 4")
    with pytest.raises(FormatError, match=f"{path}, line 5: not UTF-8"):
        next(got)


def test_batches_give_the_results_of_single_queries_and_of_gensim(table, gensim):
    lines = ["king", "king woman -man", '{"positive": ["queen"], "negative": ["-lrb-"]}',
             "w5 w6 w7 -w8 -w9", "[3, 4]", "-", "w100"] * 3
    got = list(qs.neighbours(table, (qs.parse_line(x, f"line {i}") for i, x in enumerate(lines)),
                             topn=7, batch=4))
    kv = gensim.models.KeyedVectors(table.embedding_dim)
    kv.add_vectors(list(table), np.array(table.weight()))
    for line, result in zip(lines, got, strict=True):
        assert result.query.text == line
        pos, neg = qs.resolve(result.query, table.vocab, len(table))
        single = table.most_similar(pos, neg, topn=7)
        assert [(table.vocab.word(r), s) for r, s in result.neighbours] == single
        want = kv.most_similar([kv.index_to_key[r] for r in pos], [kv.index_to_key[r] for r in neg], topn=7)
        assert [w for w, _ in single] == [w for w, _ in want]
        assert np.allclose([s for _, s in single], [s for _, s in want], rtol=0, atol=1e-6)


def test_unknown_words_fail_or_skip(table):
    lines = [qs.parse_line("king"), qs.parse_line("xyzzy", "q.txt, line 2"), qs.parse_line("queen")]
    with pytest.raises(KeyNotFoundError, match="q.txt, line 2: word 'xyzzy'"):
        list(qs.neighbours(table, lines))
    got = list(qs.neighbours(table, lines, unknown="skip", topn=2))
    assert [r.neighbours is None for r in got] == [False, True, False]
    assert got[1].unknown == "xyzzy"
    assert qs.skipped_message([got[1]]) == "skipped 1 query with an unknown word: q.txt, line 2 ('xyzzy')"
    many = qs.skipped_message([got[1]] * 12)
    assert many.startswith("skipped 12 queries") and many.endswith("and 2 more")


def test_refused_queries_name_their_line(table, tmp_path):
    other = tmp_path / "z.safetensors"
    w = np.array(table.weight())
    w[2] = 0
    create(other, {"weight": w, **encode_vocab(list(table))}, Config())
    with embtool.open(other) as t, pytest.raises(EmbtoolError, match="q, line 9: row 2 \\('man'\\) has norm 0.0"):
        list(qs.neighbours(t, [qs.parse_line("king"), qs.parse_line("man", "q, line 9")]))


def test_records(table):
    (result,) = qs.neighbours(table, [qs.parse_line("king woman -man")], topn=2)
    rec = qs.record(result, table.vocab)
    assert rec["query"] == "king woman -man" and [set(x) for x in rec["neighbours"]] == [{"id", "word", "score"}] * 2
    flat = qs.flat_records(result, table.vocab)
    assert [(r["query"], r["rank"]) for r in flat] == [("king woman -man", 1), ("king woman -man", 2)]
    assert flat[0]["word"] == rec["neighbours"][0]["word"]
