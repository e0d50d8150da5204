"""embtool.vocab: the fixed on-disk layout, the byte order, duplicates, lookups over read-only
memory maps, and vocab.txt files."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from embtool.errors import FormatError, IndexRangeError
from embtool.vocab import (
    BYTES, OFFSETS, ORDER, DuplicateWordError, Vocab, arrays_from_spans, decode_spans, encode_vocab,
    encode_words, extend_vocab, read_vocab_file, sort_spans, write_vocab_file,
)


def spans(words: list[bytes]):
    offsets = np.zeros(len(words) + 1, np.int64)
    offsets[1:] = np.cumsum([len(w) for w in words])
    return np.frombuffer(b"".join(words), np.uint8), offsets


def test_layout_of_the_three_tensors():
    a = encode_vocab(["zebra", "é", "apple", "app", ""])
    assert a[BYTES].dtype == np.uint8 and a[OFFSETS].dtype == np.int64 and a[ORDER].dtype == np.int64
    assert a[BYTES].tobytes() == "zebraéappleapp".encode()
    assert a[OFFSETS].tolist() == [0, 5, 7, 12, 15, 15]
    # by UTF-8 bytes, unsigned, a prefix first: "" < "app" < "apple" < "zebra" < "é" (0xC3)
    assert a[ORDER].tolist() == [4, 3, 2, 0, 1]


@settings(max_examples=300, deadline=None)
@given(hs.lists(hs.binary(max_size=20), max_size=60))
def test_sort_spans_orders_like_python_bytes(words):
    data, offsets = spans(words)
    order, distinct = sort_spans(data, offsets)
    want = sorted(range(len(words)), key=lambda i: (words[i], i))
    assert order.tolist() == want
    assert distinct.tolist() == [k == 0 or words[want[k]] != words[want[k - 1]]
                                 for k in range(len(words))]


def test_sort_spans_long_common_prefixes_and_zero_bytes():
    words = [b"http://www.example.com/a", b"http://www.example.com/", b"http://www.example.com/a\0",
             b"a\0", b"a", b"a\0\0", b"http://www.example.com/b" * 3, b"\xff", b""]
    data, offsets = spans(words)
    order, _ = sort_spans(data, offsets)
    assert [words[i] for i in order] == sorted(words)


@settings(max_examples=200, deadline=None)
@given(hs.lists(hs.text(hs.characters(blacklist_categories=("Cs",)), max_size=8), unique=True,
                max_size=40))
def test_unicode_words_find_their_rows(words):
    v = Vocab.from_words(words)
    assert len(v) == len(words)
    assert list(v) == words and v.head(5) == words[:5]
    assert [v.find(w) for w in words] == list(range(len(words)))
    assert v.find_many(words + ["\ud800", "never seen \x00"]).tolist()[-2:] == [-1, -1]
    assert v.words(range(len(words))) == words


def test_duplicates_name_both_rows():
    with pytest.raises(DuplicateWordError, match="duplicate word 'b' at rows 1 and 3"):
        encode_vocab(["a", "b", "c", "b", "a"])


def test_encode_words_refuses_unencodable_words_naming_the_row():
    with pytest.raises(FormatError, match="row 1"):
        encode_words(["ok", "bad\ud800"])


def test_words_with_line_breaks_use_the_slow_paths():
    words = ["a\nb", "", "c", "\n"]
    a = encode_vocab(words)
    assert decode_spans(a[BYTES], a[OFFSETS]) == words
    assert Vocab.from_arrays(a).find("\n") == 3


def test_arrays_from_spans_matches_encode_vocab():
    words = ["x", "wörd", "ab", "a"]
    data, offsets = spans([w.encode() for w in words])
    got, want = arrays_from_spans(data, offsets), encode_vocab(words)
    assert all(got[k].tolist() == want[k].tolist() for k in (BYTES, OFFSETS, ORDER))


def test_vocab_over_read_only_memory_maps(tmp_path):
    words = [f"w{i:05d}" for i in range(5000)][::-1]
    for k, arr in encode_vocab(words).items():
        np.save(tmp_path / f"{k}.npy", arr)
    maps = {k: np.load(tmp_path / f"{k}.npy", mmap_mode="r") for k in (BYTES, OFFSETS, ORDER)}
    v = Vocab.from_arrays(maps)
    assert v.find("w00000") == 4999 and v.find("w04999") == 0 and v.find("w5") == -1
    assert v.word(-1) == "w00000" and "w00123" in v
    with pytest.raises(IndexRangeError):
        v.word(5000)


def test_inconsistent_arrays_are_refused():
    a = encode_vocab(["a", "b"])
    with pytest.raises(FormatError, match="inconsistent shapes"):
        Vocab(a[BYTES], a[OFFSETS][:-1], a[ORDER])
    with pytest.raises(FormatError, match="must start at 0"):
        Vocab(a[BYTES][:1], a[OFFSETS], a[ORDER])


def test_read_vocab_file(tmp_path):
    p = tmp_path / "vocab.txt"
    p.write_bytes(b"[PAD]\r\n[UNK]\n  spaced \n\xc3\xa9\n##ing")
    assert read_vocab_file(p) == ["[PAD]", "[UNK]", "  spaced ", "é", "##ing"]
    p.write_bytes(b"a\nb\n\nc\n")
    with pytest.raises(FormatError, match="line 3: empty line"):
        read_vocab_file(p)
    p.write_bytes(b"a\n\xff\n")
    with pytest.raises(FormatError, match="line 2: not valid UTF-8"):
        read_vocab_file(p)


def test_write_vocab_file_refuses_words_it_cannot_write(tmp_path):
    for bad in ["", "a\nb", "cr\r"]:
        with pytest.raises(FormatError, match="row 1"):
            write_vocab_file(tmp_path / "v.txt", ["ok", bad])
        assert not (tmp_path / "v.txt").exists()


@settings(max_examples=150, deadline=None)
@given(hs.lists(hs.text(max_size=5), unique=True, max_size=30).flatmap(
    lambda ws: hs.tuples(hs.just(ws), hs.integers(0, len(ws)))))
def test_extend_vocab_equals_encoding_all_words(case):
    words, k = case
    extended = extend_vocab(encode_vocab(words[:k]), words[k:])
    want = encode_vocab(words)
    assert all(extended[key].tolist() == want[key].tolist() for key in (BYTES, OFFSETS, ORDER))


def test_extend_vocab_refuses_present_or_repeated_words():
    a = encode_vocab(["the", "<pad>"])
    with pytest.raises(DuplicateWordError, match="rows 1 and 2"):
        extend_vocab(a, ["<pad>"])
    with pytest.raises(DuplicateWordError, match="rows 2 and 3"):
        extend_vocab(a, ["<unk>", "<unk>"])
