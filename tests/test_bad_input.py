"""Bad input of every kind: one ``Error:`` line naming the file and the problem, never "internal
error", no table changed, no file left behind; and the rules that decide what is bad (the one
integer rule, the one number rule, what counts as JSON, zero-width tables)."""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
import struct
import warnings

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from embtool.store import read_header
from embtool.table import Table

from helpers import assert_single_error_line, invoke, make_table


@pytest.fixture
def table(tmp_path):
    w = np.random.default_rng(3).standard_normal((20, 4)).astype(np.float32)
    return make_table(tmp_path / "t.safetensors", w)


@pytest.fixture
def words_table(tmp_path):
    src = tmp_path / "v.txt"
    src.write_text("the 1 2 3 4\nof 2 3 4 5\nand 0 0 1 0\nking 1 1 1 1\nqueen 1 1 1 0.5\n")
    out = tmp_path / "w.safetensors"
    assert invoke("load-pretrained", src, out).code == 0
    return out


def weight_of(path):
    with Table.open(path) as t:
        return np.array(t.weight())


def raw_safetensors(path, header: dict | bytes, data: bytes = b""):
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def leftovers(folder, *keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ---------------------------------------------------------------------- compressed input

VECTORS = b"".join(b"w%d %d.5 1 2 -3\n" % (i, i) for i in range(200))
COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}


@pytest.mark.parametrize("kind", sorted(COMPRESS))
@pytest.mark.parametrize("damage", ["flip", "truncate", "truncate-small"])
def test_damaged_compressed_input(tmp_path, kind, damage):
    data = bytearray(COMPRESS[kind](VECTORS if damage != "truncate-small" else b"a 1 2\n"))
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        del data[-6:]
    src = tmp_path / f"v.txt.{kind}"
    src.write_bytes(bytes(data))
    r = invoke("load-pretrained", src, tmp_path / "t.safetensors")
    assert_single_error_line(r, str(src), kind if kind != "gz" else "gzip")
    assert "aborted" not in r.err and "internal" not in r.err
    assert leftovers(tmp_path) == [src.name]


def test_damaged_compressed_analogies_and_pairs(tmp_path, words_table):
    pairs = tmp_path / "pairs.gz"
    pairs.write_bytes(gzip.compress(b"the\tof\t1\nand\tking\t2\nof\tqueen\t3\n")[:-7])
    assert_single_error_line(invoke("evaluate", words_table, "--pairs", pairs), str(pairs),
                             "gzip data ends early")
    good = tmp_path / "named-plain.gz"  # compression is told by the bytes, not by the name
    good.write_bytes(b"the\tof\t1\nand\tking\t2\nof\tqueen\t3\n")
    assert invoke("evaluate", words_table, "--pairs", good).code == 0


# ---------------------------------------------------------------------- word2vec headers

@pytest.mark.parametrize("fmt", ["word2vec", "word2vec-binary"])
@pytest.mark.parametrize("header,what", [(b"1 18446744073709551616", "dimension"),
                                         (b"1 1048577", "dimension"),
                                         (b"18446744073709551616 4", "count"),
                                         (b"1 " + b"9" * 5000, "dimension")])
def test_huge_word2vec_header(tmp_path, fmt, header, what):
    src = tmp_path / "v.vec"
    src.write_bytes(header + b"\na 1 2 3 4\n")
    r = invoke("load-pretrained", src, tmp_path / "t.safetensors", "--format", fmt)
    assert_single_error_line(r, f"{src}, line 1", f"header's {what}", "larger than")


def test_huge_header_on_stdin_allocates_little(tmp_path):
    r = invoke("load-pretrained", "-", tmp_path / "t.safetensors", "--format", "word2vec-binary",
               input=b"1 1048576\nab " + b"\0" * 100)
    assert_single_error_line(r, "<stdin>", "ends inside row 1")


# ---------------------------------------------------------------------- JSON

DEEP = "[" * 10_000 + "]" * 10_000


@pytest.mark.parametrize("option", ["-i", "--grad", "--offsets", "--per-sample-weights",
                                    "--vector", "--words", "header"])
def test_json_nested_10000_deep(tmp_path, table, words_table, option):
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    ids = tmp_path / "ids.json"
    ids.write_text("[1, 2]")
    before = table.read_bytes()
    if option == "-i":
        r = invoke("lookup", table, "-i", deep)
    elif option == "--grad":
        r = invoke("train-step", table, "-i", ids, "--grad", deep)
    elif option in ("--offsets", "--per-sample-weights"):
        r = invoke("lookup", table, "1", "2", option, DEEP, "--mode", "sum")
    elif option == "--vector":
        r = invoke("similar", table, "--vector", DEEP)
    elif option == "--words":
        r = invoke("lookup", words_table, "--words", DEEP)
    else:
        deep = raw_safetensors(tmp_path / "deep.safetensors", b'{"a":' + DEEP.encode() + b"}")
        r = invoke("info", deep)
    assert_single_error_line(r, "nested more than 64 deep")
    assert table.read_bytes() == before


def test_ids_nested_65_deep_and_64_deep(table):
    assert_single_error_line(invoke("lookup", table, "[" * 65 + "1" + "]" * 65), "nested more than 64")
    r = invoke("lookup", table, "[" * 63 + "1" + "]" * 63)  # 63 + the row: 64 dimensions
    assert r.code == 0 and json.loads(r.out)


@pytest.mark.parametrize("text,needle", [
    ('["a",1,1]', "must be numbers, not a string"),
    ("[true,false,true]", "must be numbers, not true"),
    ("[1,null,1]", "must be numbers, not null"),
    ("[1,{},1]", "must be numbers, not an object"),
    ("[1,[2],1]", "rectangular"),
])
def test_per_sample_weights_one_reader_inline_and_file(tmp_path, table, text, needle):
    f = tmp_path / "psw.json"
    f.write_text(text)
    for value in (text, str(f)):
        r = invoke("lookup", table, "1", "2", "3", "--offsets", "0", "--mode", "sum",
                   "--per-sample-weights", value)
        assert_single_error_line(r, needle)


def test_option_arrays_inline_equal_file(tmp_path, table):
    f = tmp_path / "psw.json"
    f.write_text("[0.5, 2, -1]")
    runs = [invoke("lookup", table, "1", "2", "3", "--offsets", off, "--mode", "sum",
                   "--per-sample-weights", psw)
            for off in ("0,2", "[0, 2]") for psw in ("[0.5, 2, -1]", str(f))]
    assert all(r.code == 0 for r in runs) and len({r.out for r in runs}) == 1
    assert_single_error_line(invoke("lookup", table, "1", "--per-sample-weights", "missing.json",
                                    "--offsets", "0"), "missing.json: no such file")


def test_json_lone_surrogate_and_long_integer(table, tmp_path):
    assert_single_error_line(invoke("lookup", table, "[1" + "0" * 5000 + "]"), "4300 digits")
    words = tmp_path / "w.json"
    words.write_text('["\\ud800"]')
    assert_single_error_line(invoke("lookup", table, "--words-file", words, "-w"), "")


def test_json_integers_beyond_64_bits(table):
    for text in ("[18446744073709551616]", "[9223372036854775808, -1]", "[-9223372036854775809]"):
        assert_single_error_line(invoke("lookup", table, text), "out of range")


# ---------------------------------------------------------------------- the integer rule

@pytest.mark.parametrize("token", ["1_0", "1.0", "1e1", "٣", "0x1", "+", "1 0x"])
def test_one_integer_rule(table, token):
    alone = invoke("lookup", table, token)
    with_other = invoke("lookup", table, token, "2")
    assert alone.code == with_other.code == 1, (alone.err, with_other.err)
    assert "not an integer" in alone.err and "not an integer" in with_other.err


def test_integer_rule_accepts_signs_and_zeros(table):
    w = weight_of(table)
    r = invoke("lookup", table, "+3", "007", "-f", "npy")
    assert r.code == 0
    import io
    assert np.array_equal(np.load(io.BytesIO(r.stdout_bytes)), w[[3, 7]])


def test_similar_row_numbers_follow_the_integer_rule(table):
    # as `lookup t 1_0`: an input error (exit 1), not a usage error
    assert_single_error_line(invoke("similar", table, "1_0"), "'1_0' is not a row number")
    assert_single_error_line(invoke("similar", table, "9" * 30), "out of range")


# ---------------------------------------------------------------------- init arguments

@pytest.mark.parametrize("n,d,needle", [
    (2**63, 4, "needs 147573952589676412928 bytes"),
    (4, 2**62, "needs 73786976294838206464 bytes"),
    (2**62, 0, "too many rows"),
])
def test_init_sizes_checked_before_writing(tmp_path, n, d, needle):
    p = tmp_path / "t.safetensors"
    assert_single_error_line(invoke("init", p, "-n", n, "-d", d), needle)
    assert leftovers(tmp_path) == []


def test_init_negative_seed(tmp_path):
    assert_single_error_line(invoke("init", tmp_path / "t.safetensors", "-n", 2, "-d", 2,
                                    "--seed", -1), "seed must be a non-negative integer")
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------- zero-width tables

def test_zero_width_table_everywhere(tmp_path, torch):
    p = tmp_path / "z.safetensors"
    assert invoke("init", p, "-n", 5, "-d", 0, "--padding-idx", 1, "--seed", 0).code == 0
    emb = torch.nn.Embedding(5, 0, padding_idx=1)
    assert weight_of(p).shape == (5, 0)
    r = invoke("lookup", p, "[[0, 1], [4, 4]]", "-f", "npy")
    import io
    got = np.load(io.BytesIO(r.stdout_bytes))
    assert got.shape == tuple(emb(torch.tensor([[0, 1], [4, 4]])).shape) == (2, 2, 0)
    for fmt in ("json", "jsonl", "csv", "tsv", "table"):
        assert invoke("lookup", p, "0", "3", "-f", fmt).code == 0, fmt
    bag = torch.nn.functional.embedding_bag(torch.tensor([0, 2, 3]), emb.weight, torch.tensor([0, 1]),
                                            mode="max")
    r = invoke("lookup", p, "0", "2", "3", "--offsets", "0,1", "--mode", "max", "-f", "npy")
    assert np.load(io.BytesIO(r.stdout_bytes)).shape == tuple(bag.shape) == (2, 0)
    assert invoke("renorm", p, "--max-norm", "1").code == 0
    assert invoke("info", p, "--stats").code == 0
    assert_single_error_line(invoke("similar", p, "0"), "norm 0")
    ids, grad = tmp_path / "i.json", tmp_path / "g.json"
    ids.write_text("[0, 2]")
    grad.write_text("[[], []]")
    for opt in ("sgd", "adagrad", "adam", "adamw"):
        r = invoke("train-step", p, "-i", ids, "--grad", grad, "--optimizer", opt, "--reset-optimizer")
        assert r.code == 0, r.err
    assert weight_of(p).shape == (5, 0)
    for name in ("z.vec", "z.bin", "z.npy"):
        assert invoke("export", p, tmp_path / name).code == 0
        back = tmp_path / f"back-{name}.safetensors"
        assert invoke("load-pretrained", tmp_path / name, back).code == 0, name
        assert weight_of(back).shape == (5, 0)
    assert_single_error_line(invoke("export", p, tmp_path / "z.txt"), "GloVe text cannot hold")


def test_zero_width_word2vec_from_gensim(tmp_path, gensim):
    kv = gensim.models.KeyedVectors(0)
    kv.add_vectors(["a", "b"], np.zeros((2, 0), np.float32))
    for binary, name in ((False, "g.vec"), (True, "g.bin")):
        kv.save_word2vec_format(str(tmp_path / name), binary=binary)
        out = tmp_path / f"{name}.safetensors"
        assert invoke("load-pretrained", tmp_path / name, out).code == 0
        with Table.open(out) as t:
            assert t.shape == (2, 0) and list(t.vocab) == ["a", "b"]


# ---------------------------------------------------------------------- encodings, evaluate

@pytest.mark.parametrize("encoding", ["rot13", "hex", "base64", "zip", "bz2_codec", "no-such"])
def test_encoding_must_be_a_text_codec(tmp_path, words_table, encoding):
    src = tmp_path / "v.txt"
    src.write_text("a 1 2\n")
    pairs = tmp_path / "p.txt"
    pairs.write_text("the\tof\t1\n")
    for r in (invoke("load-pretrained", src, tmp_path / "o.safetensors", "--encoding", encoding),
              invoke("evaluate", words_table, "--pairs", pairs, "--encoding", encoding)):
        assert_single_error_line(r, repr(encoding))


@pytest.mark.parametrize("encoding", ["punycode", "idna", "utf-16", "utf-32"])
def test_decoders_that_fail_their_own_way(tmp_path, words_table, encoding):
    src = tmp_path / "v.txt"
    src.write_bytes(b"\xff\xfe\xfd\tx 1 2\n")
    r = invoke("load-pretrained", src, tmp_path / "o.safetensors", "--encoding", encoding)
    assert r.code in (0, 1) and "internal" not in r.err and len(r.err.strip().splitlines()) <= 2
    pairs = tmp_path / "p.txt"
    pairs.write_bytes("the\tof\t1\nand\tking\t2\n".encode("utf-16-le"))  # utf-16 without a BOM
    r = invoke("evaluate", words_table, "--pairs", pairs, "--encoding", encoding)
    assert r.code == 1 and "internal" not in r.err and len(r.err.strip().splitlines()) == 1


def test_evaluate_utf16_without_bom_and_empty_delimiter(tmp_path, words_table):
    pairs = tmp_path / "p.txt"
    pairs.write_bytes("the\tof\t1\nand\tking\t2\n".encode("utf-16-le"))
    assert_single_error_line(invoke("evaluate", words_table, "--pairs", pairs, "--encoding", "utf-16"),
                             f"{pairs}, line 1", "cannot decode as utf-16")
    pairs.write_bytes("the\tof\t1\nand\tking\t2\nof\tqueen\t3\n".encode("utf-16"))
    assert invoke("evaluate", words_table, "--pairs", pairs, "--encoding", "utf-16").code == 0
    assert_single_error_line(invoke("evaluate", words_table, "--pairs", pairs, "--delimiter", ""),
                             "delimiter", "empty")


# ---------------------------------------------------------------------- damaged vocabularies

def damage_vocab(src, dst, name, change):
    tensors = load_file(str(src))
    tensors[name] = change(tensors[name].copy())
    save_file(tensors, str(dst), metadata=read_header(src).metadata)
    return dst


def _swap_ends(a):
    a[[0, -1]] = a[[-1, 0]]
    return a


@pytest.mark.parametrize("name,change,needle", [
    ("vocab.offsets", lambda a: a.astype(np.float64), "vocab.offsets must be a 1-D int64"),
    ("vocab.offsets", lambda a: np.where(np.arange(len(a)) == 2, 10**9, a), "vocab.offsets entry 2"),
    ("vocab.offsets", lambda a: a[::-1].copy(), "vocab.offsets must start at 0"),
    ("vocab.bytes", lambda a: np.where(np.arange(len(a)) == 0, 0xFF, a).astype(np.uint8),
     "not valid UTF-8"),
    ("vocab.order", lambda a: np.where(np.arange(len(a)) == 1, 99, a), "vocab.order entry 1 is 99"),
    ("vocab.order", lambda a: np.zeros_like(a), "vocab.order names row 0 more than once"),
    ("vocab.order", lambda a: a[1:].copy(), "is not in vocab.order (a row without a word) but has"),
    ("vocab.order", _swap_ends, "not sorted"),
    ("vocab.order", np.sort, "not sorted"),
])
def test_damaged_vocabulary_is_refused(tmp_path, words_table, name, change, needle):
    bad = damage_vocab(words_table, tmp_path / "bad.safetensors", name, change)
    before = bad.read_bytes()
    for args in (("lookup", bad, "--words", "the"), ("similar", bad, "king"),
                 ("export", bad, tmp_path / "out.txt"), ("info", bad)):
        assert_single_error_line(invoke(*args), str(bad), needle)
    assert bad.read_bytes() == before and not (tmp_path / "out.txt").exists()


def test_word_split_inside_a_character_is_refused(tmp_path):
    src = tmp_path / "v.txt"
    src.write_text("é 1\nb 2\n")
    good = tmp_path / "g.safetensors"
    assert invoke("load-pretrained", src, good).code == 0
    # move the boundary one byte into "é": both halves decode together, neither alone
    bad = damage_vocab(good, tmp_path / "bad.safetensors", "vocab.offsets",
                       lambda a: np.array([0, 1, 3], np.int64))
    assert_single_error_line(invoke("lookup", bad, "-w", "b"), "not valid UTF-8")


def test_incomplete_vocabulary(tmp_path, words_table):
    tensors = load_file(str(words_table))
    del tensors["vocab.order"]
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=read_header(words_table).metadata)
    assert_single_error_line(invoke("lookup", bad, "-w", "the"), "incomplete vocabulary", "vocab.order")


def test_sorted_vocabulary_still_found(words_table):
    r = invoke("lookup", words_table, "--words", "the", "queen", "-f", "csv")
    assert r.code == 0 and r.out.splitlines()[1].startswith("0,the,")


# ---------------------------------------------------------------------- safetensors headers

@pytest.mark.parametrize("meta", ["", [], 0, {"a": 1}, {"a": None}, True])
def test_metadata_must_be_a_string_map(tmp_path, meta):
    p = raw_safetensors(tmp_path / "m.safetensors",
                        {"__metadata__": meta, "weight": {"dtype": "F32", "shape": [1, 1],
                                                          "data_offsets": [0, 4]}}, b"\0" * 4)
    for cmd in ("info", "lookup"):
        assert_single_error_line(invoke(cmd, p, *(["0"] if cmd == "lookup" else [])),
                                 "__metadata__ must map strings to strings")


def test_null_metadata_is_no_metadata(tmp_path):
    p = raw_safetensors(tmp_path / "m.safetensors",
                        {"__metadata__": None, "weight": {"dtype": "F32", "shape": [1, 1],
                                                          "data_offsets": [0, 4]}}, b"\0" * 4)
    assert invoke("lookup", p, "0").out.strip() == "[[0.0]]"
    assert load_file(str(p))["weight"].shape == (1, 1)  # the safetensors library agrees


@pytest.mark.parametrize("shape,ok", [([2**64, 0], False), ([2**62, 0], False), ([0, 2**61], False),
                                      ([2**40, 0], True), ([0, 0], True)])
def test_zero_byte_tensors_with_enormous_shapes(tmp_path, shape, ok):
    p = raw_safetensors(tmp_path / "z.safetensors",
                        {"weight": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}})
    for args in (("info", p), ("lookup", p, "[]")):
        r = invoke(*args)
        if ok:
            assert r.code == 0, r.err
        else:
            assert_single_error_line(r, "too large for an array")


# ---------------------------------------------------------------------- export: all or nothing

def test_export_writes_all_outputs_or_none(tmp_path, words_table):
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "o.npy"
    r = invoke("export", words_table, out, "--vocab-out", folder / "nodir" / "v.txt")
    assert_single_error_line(r, "nodir/v.txt", "no such folder")
    assert ".tmp" not in r.err
    assert leftovers(folder) == []
    r = invoke("export", words_table, out, "--vocab-out", folder / "v.txt")
    assert r.code == 0 and leftovers(folder) == ["o.npy", "v.txt"]


# ---------------------------------------------------------------------- the number rule

@pytest.mark.parametrize("field", [b"0.5", b"nan", b"-Infinity", b"1_000", b"0.5\t", b"\xd9\xa3"])
def test_number_before_the_vector_is_too_many_values(tmp_path, field):
    src = tmp_path / "v.txt"
    src.write_bytes(b"a 1 2 3 4\nb " + field + b" 1 2 3 4\nc 5 6 7 8\n")
    r = invoke("load-pretrained", src, tmp_path / "t.safetensors")
    assert_single_error_line(r, f"{src}, line 2", "5 values after the word, expected 4")
    assert leftovers(tmp_path) == ["v.txt"]


@pytest.mark.parametrize("field", [b"x", b"0x1p3", b"1,5", b"nanx"])
def test_key_with_spaces_when_the_field_is_no_number(tmp_path, field):
    src = tmp_path / "v.txt"
    src.write_bytes(b"a 1 2 3 4\nb " + field + b" 1 2 3 4\nc 5 6 7 8\n")
    out = tmp_path / "t.safetensors"
    assert invoke("load-pretrained", src, out).code == 0
    with Table.open(out) as t:
        assert t.vocab.word(1) == "b " + field.decode()


# ---------------------------------------------------------------------- warnings

def test_overflowing_query_vector_prints_one_line(table):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for vec in ("[1e39,0,0,0]", "[1e308,1e308,0,0]", "[NaN,0,0,0]"):
            r = invoke("similar", table, "--vector", vec)
            assert_single_error_line(r, "cosine similarity is undefined")
