"""read_vectors: quirks (docs/semantics.md §7.6), detection, errors with file and line,
compression, stdin, dtypes, duplicates, limits and the report."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

import naive_parse
from embtool.errors import ConfigError, FormatError
from embtool.formats import read as read_module, read_vectors, source, text
from embtool.vocab import DuplicateWordError



def load(tmp_path, data: bytes, name="v.txt", **kw):
    path = tmp_path / name
    path.write_bytes(data)
    return read_vectors(path, **kw)


def error(tmp_path, data: bytes, name="v.txt", **kw) -> str:
    with pytest.raises(FormatError) as e:
        load(tmp_path, data, name, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def bits(a):
    return np.asarray(a).view(np.uint32).tolist()


# -- separators, line ends, blank lines ---------------------------------------------------------

def test_crlf_bom_trailing_spaces_and_blank_lines_are_repaired_and_reported(tmp_path):
    data = b"\xef\xbb\xbf\n  \nthe 1 2 3 \r\n\r\nof 4 5 6\t\n\x0b\nand 7 8 9"
    got = load(tmp_path, data)
    assert got.words == ["the", "of", "and"]
    assert got.vectors.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    r = got.report
    assert (r.bom, r.crlf_lines, r.trailing_space_lines, r.blank_lines) == (True, 1, 2, 4)
    assert r.format == "glove" and r.rows == 3 and r.dim == 3
    s = got.summary()
    assert s.startswith("loaded 3 x 3 float32 from ") and "4 blank lines" in s and "BOM" in s


def test_blank_lines_inside_a_word2vec_file_are_skipped_not_rows(tmp_path):
    got = load(tmp_path, b"2 2\n\na 1 2\n \nb 3 4\n")
    assert got.words == ["a", "b"] and got.report.blank_lines == 2


def test_only_u0020_separates_fields(tmp_path):
    data = "a\u00a0b 1 2\nc\u3000d 3 4\ne\u2028f 5 6\ng\x85h 7 8\n".encode()
    got = load(tmp_path, data)
    assert got.words == ["a\u00a0b", "c\u3000d", "e\u2028f", "g\x85h"]


def test_keys_with_spaces_take_the_last_dim_fields_as_vector(tmp_path):
    data = (b"the 1 2 3\nat name@domain.com 4 5 6\n. . . 7 8 9\nof 1 1 1\nand 2 2 2\n")
    got = load(tmp_path, data)
    assert got.words == ["the", "at name@domain.com", ". . .", "of", "and"]
    assert got.vectors[1].tolist() == [4, 5, 6]
    assert got.report.spaced_keys == 2 and "2 words with spaces" in got.summary()


def test_glove_dim_is_the_most_common_field_count(tmp_path):
    # the first row has a key with a space: a first-row rule would take dim 4
    got = load(tmp_path, b"a b 1 2 3\nc 1 2 3\nd 4 5 6\n")
    assert got.report.dim == 3 and got.words == ["a b", "c", "d"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=hs.lists(hs.lists(hs.sampled_from([b"w", b"1", b"", b"x y"]), min_size=1, max_size=6)
                      .map(b" ".join), max_size=60),
       first=hs.integers(1, 400), whole=hs.integers(1, 4000))
def test_dim_from_a_short_first_sample_is_the_dim_of_the_whole_sample(monkeypatch, lines, first,
                                                                     whole):
    """``_infer_dim`` tries a short sample first: it decides only when it holds every line the
    rule looks at, so the dimension (or the error) is that of the whole sample."""
    monkeypatch.setattr(read_module._detect, "DIM_SAMPLE_LINES", 5)
    data = b"\n".join(lines) + b"\n"
    arr = np.frombuffer(data + bytes(64), np.uint8)

    def infer(samples):
        monkeypatch.setattr(read_module, "DIM_SAMPLES", samples)
        try:
            return read_module._infer_dim(arr, 0, len(data), "v.txt")
        except FormatError as e:
            return str(e)

    assert infer((first, max(first, whole))) == infer((max(first, whole),))


def test_dim_parameter_overrides_inference_and_must_match_a_header(tmp_path):
    got = load(tmp_path, b"a b 1 2\nc d 3 4\n", dim=2)
    assert got.words == ["a b", "c d"]
    assert "header gives dimension 2, not 3" in error(tmp_path, b"1 2\na 1 2\n", dim=3)


@pytest.mark.parametrize("data, needle", [
    (b"a 1 2 3\nb 1 2\nc 1 2 3\n", "line 2: 2 values, expected 3 (ragged row)"),
    (b"a 1 2 3\nb 1 2 3 4\nc 1 2 3\n", "line 2: 4 values after the word, expected 3"),
    (b"a 1 2 3\nb\nc 1 2 3\n", "line 2: 0 values, expected 3"),
    (b"a 1 2 3\nb\t1\t2\t3\nc 1 2 3\n", "not tabs"),
    (b"a 1 2 3\nb 1  2 3\nc 1 2 3\n", "line 2: empty field"),
    (b"a 1 2 3\nb  1 2 3\nc 1 2 3\n", "line 2: empty field"),
    (b"a 1 2 3\n 1 2 3\nc 1 2 3\n", "line 2: empty field"),
    (b"a 1 2 3\nb 1 2,5 3\nc 1 2 3\n", "line 2: value 2 of 3 is not a number: '2,5'"),
    (b"a 1 2 3\nb 1 0x1p3 3\nc 1 2 3\n", "value 2 of 3 is not a number: '0x1p3'"),
    (b"a 1 2 3\n\n\nb 1 2 3 x\n", "line 4: 4 values after the word, expected 3"),
    (b"a 1 2 3\n\n\nb 1 2 x\n", "line 4: value 3 of 3 is not a number: 'x'"),
    (b"2 3\na 1 2 3\nb 1 2\n", "line 3: 2 values, expected 3"),
    (b"2 3\na 1 2 3\n", "the header says 2 rows but the file has 1"),
])
def test_bad_rows_name_file_and_line(tmp_path, data, needle):
    msg = error(tmp_path, data)
    assert msg.startswith(str(tmp_path / "v.txt"))
    assert needle in msg


@pytest.mark.parametrize("mapped", [False, True])
def test_first_bad_line_is_reported_across_blocks(tmp_path, monkeypatch, mapped):
    monkeypatch.setattr(source, "BLOCK_SIZE", 64)
    monkeypatch.setattr(read_module, "MAP_FROM", 1 if mapped else 1 << 40)
    monkeypatch.setattr(text, "CHUNK", 16)
    lines = [f"w{i} 1 2 3" for i in range(50)]
    lines[37] = "w37 1 2"
    lines[41] = "w41 1 x 3"
    assert "line 38: 2 values" in error(tmp_path, ("\n".join(lines) + "\n").encode())


def test_header_count_too_large_is_fine_when_limit_is_met(tmp_path):
    got = load(tmp_path, b"9 2\na 1 2\nb 3 4\n", limit=2)
    assert got.words == ["a", "b"] and got.report.limit_reached


def test_limit_counts_rows_and_zero_reads_none(tmp_path):
    data = b"a 1 2\n\nb 3 4\nc 5 6\n"
    assert load(tmp_path, data, limit=2).words == ["a", "b"]
    empty = load(tmp_path, data, limit=0)
    assert empty.vectors.shape == (0, 2) and empty.words == []
    with pytest.raises(ConfigError):
        load(tmp_path, data, limit=-1)


def test_word2vec_header_only_gives_an_empty_table(tmp_path):
    got = load(tmp_path, b"0 3\n")
    assert got.vectors.shape == (0, 3) and got.report.format == "word2vec"


# -- duplicates -------------------------------------------------------------------------------

DUPS = b"a 1 1\nb 2 2\na 3 3\nc 4 4\nb 5 5\na 6 6\n"


def test_duplicates_first_keeps_first_occurrence(tmp_path):
    got = load(tmp_path, DUPS)
    assert got.words == ["a", "b", "c"] and got.vectors[:, 0].tolist() == [1, 2, 4]
    assert (got.report.duplicates, got.report.duplicate_words) == (3, 2)
    assert got.vocab().find("c") == 2


def test_duplicates_last_keeps_last_occurrence_in_its_place(tmp_path):
    got = load(tmp_path, DUPS, on_duplicate="last")
    assert got.words == ["c", "b", "a"] and got.vectors[:, 0].tolist() == [4, 5, 6]
    v = got.vocab()
    assert [v.find(w) for w in "abc"] == [2, 1, 0]


def test_duplicates_error_names_word_and_both_lines(tmp_path):
    with pytest.raises(DuplicateWordError) as e:
        load(tmp_path, DUPS, on_duplicate="error")
    assert "duplicate word 'a' on lines 1 and 3" in str(e.value)


def test_words_colliding_after_ignore_are_duplicates(tmp_path):
    got = load(tmp_path, b"ab 1\na\xffb 2\n\xff 3\n", unicode_errors="ignore")
    assert got.words == ["ab", ""] and got.report.duplicates == 1
    assert got.report.undecodable_words == 2 and got.report.empty_words == 1


# -- numbers ------------------------------------------------------------------------------------

def test_nonfinite_values_are_counted_and_refused(tmp_path):
    data = b"a 1 2\nb nan 2\nc inf 1e50\n"
    msg = error(tmp_path, data)
    assert "3 non-finite values" in msg and "line 2, value 1: 'nan'" in msg
    got = load(tmp_path, data, allow_nonfinite=True)
    assert (got.report.nonfinite, got.report.overflow) == (3, 1)
    assert np.isnan(got.vectors[1, 0]) and got.vectors[2].tolist() == [np.inf, np.inf]


def test_float16_overflow_is_counted(tmp_path):
    msg = error(tmp_path, b"a 1 70000\n", dtype="float16")
    assert "1 non-finite values" in msg and "float16" in msg
    got = load(tmp_path, b"a 1 70000\n", dtype="float16", allow_nonfinite=True)
    assert got.report.overflow == 1 and got.vectors.dtype == np.float16


def test_float16_rounds_the_decimal_once_like_gensim(tmp_path):
    # 0.00006104 -> float16 directly differs from float32 then float16 (double rounding)
    tok = "2049.0000000001"
    got = load(tmp_path, f"a {tok}\n".encode(), dtype="float16")
    assert got.vectors[0, 0] == np.float16(float(tok)) == 2050
    assert np.float16(np.float32(float(tok))) == 2048


@pytest.mark.parametrize("dtype, np_dtype", [("float64", np.float64), ("float32", np.float32)])
def test_text_values_are_parsed_at_the_dtype(tmp_path, dtype, np_dtype):
    toks = ["0.1", "3.141592653589793238", "1e-40", "-0"]
    got = load(tmp_path, ("a " + " ".join(toks) + "\n").encode(), dtype=dtype)
    want = np.array([np_dtype(float(t)) for t in toks])
    assert got.vectors.dtype == np_dtype
    assert got.vectors[0].view(np.uint8).tolist() == want.view(np.uint8).tolist()


def test_bfloat16_rounds_to_nearest_even_from_float32(tmp_path):
    vals = ["1.00390625", "1.01171875", "-3.4e38", "0.1", "65504.5"]
    got = load(tmp_path, ("a " + " ".join(vals) + "\n").encode(), dtype="bfloat16",
               allow_nonfinite=True)
    assert got.dtype == "bfloat16" and got.vectors.dtype == np.float32
    b = got.vectors.view(np.uint32)
    assert not (b & 0xFFFF).any()
    # 1 + 2**-8 is a tie between 1 and 1 + 2**-7: even mantissa (1.0) wins; 1 + 3*2**-8 rounds up
    assert got.vectors[0, :2].tolist() == [1.0, 1.015625]
    assert got.report.overflow == 1 and np.isneginf(got.vectors[0, 2])


@pytest.mark.torch
def test_bfloat16_matches_torch(tmp_path, torch):
    rng = np.random.default_rng(5)
    v = np.concatenate([rng.standard_normal(2000).astype(np.float32),
                        rng.integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32)
                        .view(np.float32)])
    v = v[np.isfinite(v) & (np.abs(v) < 3e38)]
    toks = [str(x) for x in v]
    got = load(tmp_path, ("a " + " ".join(toks) + "\n").encode(), dtype="bfloat16")
    want = torch.tensor(v).to(torch.bfloat16).to(torch.float32).numpy()
    assert bits(got.vectors[0]) == bits(want)


# -- words and encodings ------------------------------------------------------------------------

def test_invalid_utf8_word_is_an_error_naming_the_line(tmp_path):
    msg = error(tmp_path, b"ok 1\nb\xe4d 2\n")
    assert "line 2: word is not valid utf-8" in msg and "unicode_errors" in msg


def test_unicode_errors_replace_counts_words(tmp_path):
    got = load(tmp_path, b"ok 1\nb\xe4d 2\nx\xff\xfe 3\n", unicode_errors="replace")
    assert got.words == ["ok", "b\ufffdd", "x\ufffd\ufffd"]
    assert got.report.undecodable_words == 2 and "2 undecodable words" in got.summary()


def test_cp1252_encoding_decodes_words_and_strict_errors_name_the_line(tmp_path):
    got = load(tmp_path, b"caf\xe9 1\n\x80uro 2\n", encoding="cp1252")
    assert got.words == ["café", "€uro"]
    assert "line 2" in error(tmp_path, b"ok 1\nbad\x81 2\n", encoding="cp1252")


def test_vocab_arrays_are_utf8_in_row_order(tmp_path):
    got = load(tmp_path, "zé 1\nab 2\nz 3\n".encode())
    arrays = got.vocab_arrays()
    assert arrays["vocab.bytes"].tobytes() == "zéabz".encode()
    assert arrays["vocab.offsets"].tolist() == [0, 3, 5, 6]
    assert arrays["vocab.order"].tolist() == [1, 2, 0]


# -- detection -----------------------------------------------------------------------------------

@pytest.mark.parametrize("data, fmt", [
    (b"2 3\na 1 2 3\nb 4 5 6\n", "word2vec"),
    (b"2 3 \r\na 1 2 3 \r\nb 4 5 6\r\n", "word2vec"),
    (b"\xef\xbb\xbf2 3\na 1 2 3\nb 4 5 6\n", "word2vec"),
    (b"0 3\n", "word2vec"),
    (b"5 3\n7 4\n", "glove"),          # 1-dim GloVe rows, not a header + ragged row
    (b"the 1 2\nof 3 4\n", "glove"),
    (b"2 2\na b 1 2\nc 3 4\n", "word2vec"),
])
def test_format_detection(tmp_path, data, fmt):
    assert load(tmp_path, data).report.format == fmt


def test_binary_after_a_header_is_word2vec_binary(tmp_path):
    data = b"1 2\nw " + np.float32([0.5, -1]).tobytes()
    got = load(tmp_path, data, "v.txt")
    assert got.report.format == "word2vec-binary" and got.vectors.tolist() == [[0.5, -1]]
    # float bytes that look like ASCII text: the binary record layout decides
    data = b"2 1\nab ????\ncd AAAA"
    got = load(tmp_path, data, "v.txt")
    assert got.report.format == "word2vec-binary" and got.words == ["ab", "cd"]
    assert bits(got.vectors) == [[0x3F3F3F3F], [0x41414141]]


@pytest.mark.parametrize("data, needle", [
    (b"", "empty file"),
    (b"\xba\x16\x4f\x2f\x0c\x00\x00\x00rest", "fastText .bin model"),
    (b"\x28\xb5\x2f\xfd\x00\x00", "zstd"),
    (b"\x00\x01\x02binary junk\n", "binary data without a word2vec header"),
    (b"\x20\x00\x00\x00\x00\x00\x00\x00{\"weight\": {}}", "safetensors"),
    (b"\n\n  \n", "no vectors found"),
])
def test_unreadable_sources_are_refused_clearly(tmp_path, data, needle):
    assert needle in error(tmp_path, data)


def test_explicit_formats_are_checked(tmp_path):
    assert "expected a header 'count dim'" in error(tmp_path, b"a 1 2\n", format="word2vec")
    assert "not a .npy file" in error(tmp_path, b"a 1 2\n", format="npy")
    with pytest.raises(ConfigError):
        load(tmp_path, b"a 1\n", format="fasttext")
    # an explicit glove reads a header line as a row, and says so when it is ragged
    assert "word2vec header" in error(tmp_path, b"2 3\na 1 2 3\nb 1 2 3\n", format="glove")


def test_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        read_vectors(tmp_path / "nope.txt")


@pytest.mark.parametrize("options", [
    {"dtype": "int8"}, {"unicode_errors": "surrogateescape"}, {"on_duplicate": "keep"},
    {"encoding": "no-such-codec"}, {"dim": 0},
])
def test_bad_options_are_config_errors(tmp_path, options):
    with pytest.raises(ConfigError):
        load(tmp_path, b"a 1\n", **options)


# -- compression, stdin, progress ----------------------------------------------------------------

GLOVE = b"the 0.1 0.2\nof -1e-3 5\n"


@pytest.mark.parametrize("compress, name", [
    (gzip.compress, "v.txt.gz"), (bz2.compress, "v.bz2"), (lzma.compress, "v.xz"),
    (gzip.compress, "no_suffix.txt"), (lambda d: d, "plain_named.gz"),
])
def test_compression_is_recognised_by_magic(tmp_path, compress, name):
    got = load(tmp_path, compress(GLOVE), name)
    assert got.words == ["the", "of"] and bits(got.vectors) == bits(np.float32([[0.1, 0.2], [-1e-3, 5]]))


def test_stdin(monkeypatch):
    class Stdin:
        buffer = io.BufferedReader(io.BytesIO(gzip.compress(b"1 2\n" + GLOVE)))

    monkeypatch.setattr(sys, "stdin", Stdin)
    got = read_vectors("-")
    assert got.words == ["the"] and got.report.source == "<stdin>"
    assert got.report.compression == "gzip" and got.report.ignored_rows == 1


@pytest.mark.parametrize("name, compress, mapped", [("v.txt", lambda d: d, False),
                                                   ("v.txt", lambda d: d, True),
                                                   ("v.txt.gz", gzip.compress, True)])
def test_progress_reports_source_bytes_and_rows(tmp_path, monkeypatch, name, compress, mapped):
    monkeypatch.setattr(source, "BLOCK_SIZE", 256)
    monkeypatch.setattr(read_module, "MAP_FROM", 1 if mapped else 1 << 40)
    data = compress(b"".join(b"w%d 1 2 3\n" % i for i in range(300)))
    calls = []
    got = load(tmp_path, data, name, progress=lambda b, r: calls.append((b, r)))
    assert len(calls) > 3
    assert sum(c[0] for c in calls) == len(data)
    assert sum(c[1] for c in calls) == got.report.rows == 300


# -- word2vec binary -----------------------------------------------------------------------------

def binfile(words, vecs, sep=b"", header=None):
    head = header or f"{len(words)} {vecs.shape[1]}\n".encode()
    return head + b"".join(w + b" " + v.astype("<f4").tobytes() + sep for w, v in zip(words, vecs))


VECS = np.float32([[1, -2], [0.5, 3], [-0.0, 1e-30]])


def test_binary_with_crlf_separators_keeps_words_clean(tmp_path):
    got = load(tmp_path, binfile([b"a", b"b", b"c"], VECS, sep=b"\r\n"), "v.bin")
    assert got.words == ["a", "b", "c"] and bits(got.vectors) == bits(VECS)
    assert got.report.crlf_records == 2


def test_binary_truncated_or_count_too_large_names_the_byte_offset(tmp_path):
    data = binfile([b"a", b"b", b"c"], VECS)
    assert "byte" in error(tmp_path, data[:-3], "v.bin") and "inside row 3" in error(
        tmp_path, data[:-3], "v.bin")
    too_many = binfile([b"a", b"b", b"c"], VECS, header=b"4 2\n")
    assert "inside row 4" in error(tmp_path, too_many, "v.bin")
    assert load(tmp_path, too_many, "v.bin", limit=3).words == ["a", "b", "c"]


def test_binary_trailing_bytes_are_reported(tmp_path):
    got = load(tmp_path, binfile([b"a", b"b", b"c"], VECS) + b"\njunk", "v.bin")
    assert got.report.trailing_bytes == 4 and "4 trailing bytes" in got.summary()
    clean = load(tmp_path, binfile([b"a", b"b", b"c"], VECS, sep=b"\n"), "v.bin")
    assert clean.report.trailing_bytes == 0


def test_binary_word_without_space_is_an_error(tmp_path, monkeypatch):
    from embtool.formats import binary

    monkeypatch.setattr(binary, "MAX_WORD", 8)
    assert "no space within 8 bytes" in error(tmp_path, b"1 2\n" + b"x" * 40, "v.bin",
                                               format="word2vec-binary")


def test_binary_wrong_dim_shows_as_undecodable_word(tmp_path):
    data = binfile([b"alpha", b"beta"], np.float32([[1.5, -2.25, 7], [1, 2, 3]]), header=b"2 2\n")
    msg = error(tmp_path, data, "v.bin")
    assert "byte" in msg and "not valid utf-8" in msg


def test_binary_words_may_hold_inner_line_breaks_and_duplicates_name_offsets(tmp_path):
    got = load(tmp_path, binfile([b"a\nb", b"\xc3\xa9", b"c"], VECS), "v.bin")
    assert got.words == ["a\nb", "é", "c"]
    with pytest.raises(DuplicateWordError, match="'a' at byte offsets 4 and 24"):
        load(tmp_path, binfile([b"a", b"b", b"a"], VECS), "v.bin", on_duplicate="error")


def test_binary_nonfinite_is_refused(tmp_path):
    data = binfile([b"a"], np.float32([[np.nan, 1]]))
    assert "row 1 (byte 4), value 1" in error(tmp_path, data, "v.bin")


# -- npy -----------------------------------------------------------------------------------------

def test_npy_is_from_pretrained(tmp_path):
    a = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    np.save(tmp_path / "a.npy", a)
    got = read_vectors(tmp_path / "a.npy", limit=3)
    assert got.words is None and got.report.format == "npy" and got.report.limit_reached
    assert bits(got.vectors) == bits(a[:3].astype(np.float32))
    np.save(tmp_path / "i.npy", np.arange(4).reshape(2, 2))
    with pytest.raises(FormatError, match="floating point"):
        read_vectors(tmp_path / "i.npy")
    np.save(tmp_path / "one.npy", np.zeros(3, np.float32))
    with pytest.raises(FormatError, match="2-D"):
        read_vectors(tmp_path / "one.npy")
    (tmp_path / "g.npy.gz").write_bytes(gzip.compress((tmp_path / "a.npy").read_bytes()))
    calls = []
    got = read_vectors(tmp_path / "g.npy.gz", progress=lambda b, r: calls.append((b, r)))
    assert bits(got.vectors) == bits(a.astype(np.float32))
    assert calls == [((tmp_path / "g.npy.gz").stat().st_size, 4)]


# -- the reference parser: random files ----------------------------------------------------------

_word = hs.text(hs.characters(blacklist_characters=" \n\r\t\x0b\x0c\ufeff\x00",
                              blacklist_categories=("Cs",)), min_size=1, max_size=8)
_spelling = hs.sampled_from(["{:.6g}", "{!r}", "{:.17g}", "{:e}", "{:+.3f}", "{:.9E}", "{:.30f}"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=hs.lists(_word, min_size=1, max_size=30, unique=True),
       dim=hs.integers(1, 6), seed=hs.integers(0, 2**32 - 1),
       eol=hs.sampled_from(["\n", "\r\n", " \n", "\t\r\n"]), blank=hs.booleans(),
       spelling=_spelling, header=hs.booleans(), tiny=hs.booleans(), mapped=hs.booleans())
def test_random_files_match_the_reference(tmp_path, monkeypatch, words, dim, seed, eol, blank,
                                          spelling, header, tiny, mapped):
    monkeypatch.setattr(source, "BLOCK_SIZE", 128 if tiny else 32 << 20)
    monkeypatch.setattr(read_module, "MAP_FROM", 1 if mapped else 1 << 40)
    monkeypatch.setattr(text, "CHUNK", 29 if tiny else 1 << 20)
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal((len(words), dim)) * 10.0 ** rng.integers(-8, 8, (len(words), 1)))
    lines = [f"{len(words)} {dim}"] if header else []
    for w, row in zip(words, v):
        lines.append(w + " " + " ".join(spelling.format(float(x)) for x in row))
        if blank and rng.random() < 0.3:
            lines.append("")
    data = eol.join(lines).encode() + eol.encode()
    got = load(tmp_path, data)
    ref_words, ref = (naive_parse.parse_word2vec if header else naive_parse.parse_glove)(data)
    assert got.words == [w.decode() for w in ref_words]
    assert bits(got.vectors) == bits(ref)


def test_small_files_load_without_importing_numba_click_or_rich(tmp_path):
    import subprocess

    (tmp_path / "v.txt").write_bytes(GLOVE)
    code = ("import sys; from embtool.formats import read_vectors, write_vectors; "
            f"r = read_vectors({str(tmp_path / 'v.txt')!r}); "
            f"write_vectors({str(tmp_path / 'o.txt')!r}, r.words, r.vectors, format='glove'); "
            "print(sorted(m for m in ('numba', 'click', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in __import__("os").environ.items()
                              if k != "EMBTOOL_BACKEND"})
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "o.txt").read_bytes() == b"the 0.1 0.2\nof -0.001 5.0\n"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=hs.lists(hs.binary(max_size=90).map(lambda b: b.replace(b"\n", b"")), max_size=40),
       final=hs.booleans(), block=hs.integers(1, 200), mapped=hs.booleans())
def test_readers_give_whole_lines_with_padding(tmp_path, lines, final, block, mapped):
    """Blocks of whole lines covering the data, PAD readable bytes after each, find and count
    within the block, progress counting what was read: for the copying and the mapping reader."""
    data = b"\n".join(lines) + (b"\n" if final else b"")
    if not data or data.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")):
        return  # empty, or compressed data by its magic bytes (read as such: another test's matter)
    (tmp_path / "v.txt").write_bytes(data)
    src = source.open_source(tmp_path / "v.txt")
    reader = (source.MappedReader if mapped else source.BlockReader)(src, block)
    pos = 0
    while (nxt := reader.next()) is not None:
        arr, n = nxt
        assert len(arr) >= n + source.PAD and n > 0
        got = arr[:n].tobytes()
        assert got == data[pos:pos + n] and (got.endswith(b"\n") or pos + n == len(data))
        for cut in (0, n // 3, n - 1):
            assert reader.find(b"\n", cut, n) == got.find(b"\n", cut, n)
            assert reader.count(b"\n", cut, n) == got.count(b"\n", cut, n)
        pos += n
        assert src.consumed() >= pos
    assert pos == len(data) == src.consumed()
    src.close()


def test_an_aligned_table_grows_and_is_cut_to_its_rows(monkeypatch):
    """The page-aligned output table of a plain file, written a piece at a time while Numba
    starts: growing past the estimate copies it once (then it is an ordinary array), and the
    rows used are a view of it."""
    monkeypatch.setattr(text, "TOUCH_PIECE", 1200)

    class Starting:  # a thread starting Numba, alive for two pieces
        calls = 0

        def is_alive(self):
            self.calls += 1
            return self.calls <= 2

    grow = text.GrowingTable(3, np.float32, 4, touch=Starting(), aligned=True)
    assert grow.table.ctypes.data % text.PAGE == 0
    grow = text.GrowingTable(3, np.float32, 4000, touch=Starting(), aligned=True)
    step = text.TOUCH_PIECE // 12
    assert not grow.table[:2 * step].any()  # written while Numba started
    grow = text.GrowingTable(3, np.float32, 4, aligned=True)
    grow.table[:] = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert grow.used(2).tolist() == [[0, 1, 2], [3, 4, 5]]
    grow.ensure(10)
    assert len(grow.table) >= 10 and grow.table[:4].ravel().tolist() == list(range(12))
    grow.table[4:10] = 1
    assert grow.used(10).shape == (10, 3) and grow.used(10).flags.owndata


def test_duplicates_in_a_mapped_file_are_dropped_in_place(tmp_path):
    """A plain file large enough to be mapped parses into a page-aligned table (a view of a
    larger buffer); dropping duplicate rows compacts it in place, without a copy of the table."""
    rng = np.random.default_rng(5)
    rows = 12000
    values = rng.integers(-999, 999, (rows, 80)) / 100
    words = [f"w{i % (rows - 50)}" for i in range(rows)]  # the last 50 repeat earlier words
    data = "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in zip(words, values)).encode()
    assert len(data) > source.MAP_FROM
    got = load(tmp_path, data)
    ref_words, ref = naive_parse.parse_glove(data)
    assert got.words == [w.decode() for w in ref_words[:rows - 50]]
    assert bits(got.vectors) == bits(ref[:rows - 50]) and got.report.duplicates == 50
    assert got.vectors.base is not None and got.vectors.flags.c_contiguous
