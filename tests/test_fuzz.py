"""Property-based and mutation tests of every input embtool reads (the rules: ``fuzzing.py``).

Generated inputs: vector text (GloVe, word2vec; plain, gzip, bz2, xz; file or stdin), word2vec
binary, safetensors headers, vocabulary and optimizer tensors, index / gradient / offset / weight
files and inline values, batches files, analogy and word-pair files, and option values.  Each is
made valid, then (mostly) damaged by byte and structure mutations.  A success must give the right
result: exactly the generated values for an undamaged input, values that some input line holds
for a damaged one, the rows of the table for an index, the reference bag for a bag.

Cases are derandomised (the same cases on every run) and run in-process; ``EMBTOOL_FUZZ_CASES``
(default 5000) is the number of generated cases, shared among the tests by weight.  Hypothesis
draws the seed of each case (a failure shrinks to a small seed); the content and its mutations
are drawn from ``random.Random(seed)``, which costs a fraction of drawing each value through
hypothesis (about 2 ms a case instead of 6).  Every case in ``tests/corpus/`` (inputs that once broke
a rule) is replayed as well.
"""
from __future__ import annotations

import bz2
import functools
import gzip
import io
import json
import lzma
import random
import struct
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import hypothesis
from hypothesis import HealthCheck, given, settings, strategies as st

from embtool.config import Config
from embtool.table import Table, create
from embtool.vocab import encode_vocab

import naive_query
from fuzzing import CASES, SEED, Case, corpus_cases, counter, run_case
from helpers import invoke

FUZZ = settings(derandomize=SEED is None, database=None, deadline=None, print_blob=SEED is not None,
                suppress_health_check=list(HealthCheck))
seeds = st.integers(0, 2**32 - 1)
#: the tests' shares of the generated cases
WEIGHTS = {"text": 0.19, "binary": 0.08, "header": 0.11, "tensors": 0.10, "indices": 0.16,
           "train": 0.10, "options": 0.12, "evaluate": 0.06, "models": 0.05, "log": 0.03}


def fuzz(kind: str):
    """A fuzz test of ``kind``: hypothesis draws the seed of each case, a share of the cases
    (counted in ``generated``); with EMBTOOL_FUZZ_SEED, other cases than the fixed ones."""
    def decorate(test):
        @functools.wraps(test)
        def counted(*args, **kwargs):
            generated[kind] += 1
            return test(*args, **kwargs)
        run = given(seed=seeds)(counted)
        if SEED is not None:
            run = hypothesis.seed(int(SEED))(run)
        return settings(FUZZ, max_examples=max(1, round(CASES * WEIGHTS[kind])))(run)
    return decorate


N, D = 12, 4
WORDS = ["the", "of", "and", "king", "queen", "man", "woman", "é", "中文", "a b", "x1", "Ω"]


def _weight():
    w = np.random.default_rng(11).standard_normal((N, D)).astype(np.float32)
    w[5] *= 3  # some rows above max_norm 1..3
    return w


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


class Base(dict):
    """The base tables (bytes by name) and their weight; a short repr for hypothesis' reports."""

    def __init__(self, files, weight):
        super().__init__(files=files, weight=weight)

    def __repr__(self):
        return "<base tables>"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Table files (bytes) the cases start from, and what they hold."""
    d = tmp_path_factory.mktemp("base")
    w = _weight()
    vocab = encode_vocab(WORDS)
    files = {}

    def make(name, tensors, cfg=Config(), dtype="F32"):
        create(d / name, tensors, cfg, weight_dtype=dtype, force=True)
        files[name] = (d / name).read_bytes()

    (d / "ids.json").write_text("[[0, 1], [5, 1]]")
    (d / "grad.json").write_text(json.dumps(np.ones((2, 2, D)).tolist()))
    make("plain", {"weight": w}, Config(padding_idx=2))
    make("words", {"weight": w, **vocab})
    make("frozen", {"weight": w, **vocab}, Config(frozen=True, max_norm=1.5))
    make("f16", {"weight": w.astype(np.float16)}, dtype="F16")
    make("bf16", {"weight": w}, dtype="BF16")
    make("f64", {"weight": w.astype(np.float64)}, dtype="F64")
    make("zero", {"weight": np.zeros((5, 0), np.float32)})
    fasttext = d / "fasttext"  # a table with subword n-grams, from the sample fastText model
    r = invoke("load-pretrained", SAMPLE_FASTTEXT, fasttext)
    assert r.code == 0, r.err
    files["fasttext"] = fasttext.read_bytes()
    sharded = d / "sharded"  # the words table in 3 shards: {file name: bytes} of its folder
    sharded.mkdir()
    r = invoke("shard", d / "words", sharded / "t.index.json", "--shards", "3")
    assert r.code == 0, r.err
    files["sharded"] = {p.name: p.read_bytes() for p in sharded.iterdir()}
    logged = d / "logged"  # a sparse table whose last three steps are in its write-ahead log
    logged.mkdir()
    t = logged / "t.safetensors"
    create(t, {"weight": w, **vocab}, Config(sparse=True))
    states = []
    for _ in range(4):  # the first adds the optimizer state (a rewrite), the others are logged
        r = invoke("train-step", t, "-i", d / "ids.json", "--grad", d / "grad.json", "--optimizer", "adagrad")
        assert r.code == 0, r.err
        states.append(t.read_bytes())
    files["logged"] = {p.name: p.read_bytes() for p in logged.iterdir()}
    files["logged states"] = states
    for name, opt in (("adagrad", "adagrad"), ("adam", "adam")):
        (d / name).write_bytes(files["words"])
        r = invoke("train-step", d / name, "-i", d / "ids.json", "--grad", d / "grad.json",
                   "--optimizer", opt)
        assert r.code == 0, r.err
        files[name] = (d / name).read_bytes()
    return Base(files, w)


#: generated cases run per test kind in this session
generated: dict = defaultdict(int)


# ------------------------------------------------------------------------------ mutations

TOKENS = [b" ", b"\t", b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b"\xef\xbb\xbf", b"nan", b"-inf",
          b"1_0", b"-", b"+", b".", b"e", b"1e999", b"\xc3", b"\xd9\xa3", b"0x1p3", b"  ", b"\x0b",
          b"\x0c", b"99999999999999999999", b"[", b"]", b"{", b'"', b"\\ud800", b"true", b"1",
          b"0", b"-1", b"\xe4\xb8\xad", b"\xc2\xa0", b"Infinity", b"1,5", b"\x1f\x8b", b"BZh",
          b"\xc2\x85", b"[" * 100]
OPS = ("flip", "insert", "delete", "truncate", "dup", "swap", "set")
def mutations(r: random.Random, least: int = 0) -> list:
    """Up to four byte mutations (operation, position, byte, token)."""
    return [(r.choice(OPS), r.randrange(1 << 20), r.randrange(256), r.choice(TOKENS))
            for _ in range(r.randint(least, 4))]


def coin(r: random.Random, p: float = 0.5) -> bool:
    return r.random() < p


def mutate(data: bytes, ops) -> bytes:
    """Byte mutations at positions drawn modulo the length (so shrinking keeps them small)."""
    b = bytearray(data)
    for op, pos, byte, token in ops:
        n = len(b)
        i = pos % (n + 1)
        if op == "flip" and n:
            b[i % n] ^= 1 << (byte % 8)
        elif op == "set" and n:
            b[i % n] = byte
        elif op == "insert":
            b[i:i] = token
        elif op == "delete":
            del b[i:i + 1 + byte % 16]
        elif op == "truncate":
            del b[i:]
        elif op == "dup":
            b[i:i] = b[i:i + 1 + byte]
        elif op == "swap" and n > 1:
            j = (pos // 7 + byte) % n
            b[i % n], b[j] = b[j], b[i % n]
    return bytes(b)


COMPRESSORS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}


def delivery(r, data: bytes, ops):
    """(bytes as stored, decompressed bytes as meant or None, compression): the damage is done
    before or after compressing."""
    kind = r.choice([None, None, None, "gz", "bz2", "xz"])
    if kind is None:
        damaged = mutate(data, ops)
        return damaged, damaged, None
    if coin(r):
        damaged = mutate(data, ops)
        return COMPRESSORS[kind](damaged), damaged, kind
    return mutate(COMPRESSORS[kind](data), ops), (data if not ops else None), kind


def source_args(r, name: str, stored: bytes):
    """The source as a file (``name``) or as stdin: (argument, files, stdin)."""
    if r.randint(0, 5) == 0:
        return "-", {}, stored
    return name, {name: stored}, None


def sample(r, pool, most: int) -> list:
    return r.sample(pool, r.randint(0, min(most, len(pool))))


# ------------------------------------------------------------------------------ vector text

LETTERS = "abcdefghijklmnopqrstuvwxyzéüß中文ÅΩ"
SPELLINGS = (lambda v: str(np.float32(v)), lambda v: "%.9g" % v, lambda v: "%e" % v,
             lambda v: "%+.4f" % v, lambda v: repr(float(v)), lambda v: "%.0f" % v,
             lambda v: "%.3E" % v)


def some_words(r, most=7) -> list[str]:
    words = {"".join(r.choice(LETTERS) for _ in range(r.randint(1, 5))) for _ in range(r.randint(1, most))}
    return sorted(words, key=lambda w: r.random())


def vector_text(r):
    """A valid GloVe or word2vec text file: (bytes, words, values as float64)."""
    words = some_words(r)
    dim = r.randint(1, 4)
    tokens = [[r.choice(SPELLINGS)(float(np.float32(r.uniform(-1e4, 1e4)))) for _ in range(dim)]
              for _ in words]
    eol = r.choice([b"\n", b"\n", b"\r\n"])
    lines = [(w + " " + " ".join(t)).encode() for w, t in zip(words, tokens)]
    if coin(r):
        lines = [line + r.choice([b" ", b"\t", b""]) for line in lines]
    if r.randint(0, 3) == 0:
        lines.insert(r.randint(0, len(lines)), b"")
    if coin(r):
        lines.insert(0, b"%d %d" % (len(words), dim))
    data = eol.join(lines) + (eol if coin(r) else b"")
    if r.randint(0, 5) == 0:
        data = b"\xef\xbb\xbf" + data
    return data, words, np.array([[float(t) for t in row] for row in tokens], np.float64)


DTYPE_NP = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "f16": np.float16}
LOAD_OPTIONS = {
    "--format": ["auto", "glove", "word2vec", "word2vec-binary", "npy", "safetensors", "text"],
    "--limit": ["0", "1", "2", "5", "-1", "1_0", "x", "٣"],
    "--dtype": ["float32", "float64", "float16", "bfloat16", "f16", "int8"],
    "--encoding": ["utf-8", "latin-1", "utf-16", "ascii", "rot13", "punycode", "idna", "cp1252",
                   "utf-8-sig", "", "nope"],
    "--unicode-errors": ["strict", "replace", "ignore", "x"],
    "--on-duplicate": ["first", "last", "error"],
    "--padding-token": ["<pad>", "a", "", " ", "\n"],
    "--unk-token": ["<unk>", "a", "<pad>"],
    "--padding-idx": ["0", "-1", "3", "99", "none", "1_0"],
    "--max-norm": ["1", "0", "-1", "nan", "inf", "none"],
    "--norm-type": ["2", "1", "0", "-1", "nan", "inf"],
    "--tensor": ["weight"],
}
LOAD_FLAGS = ["--allow-nonfinite", "--freeze", "--no-freeze", "--force"]


def load_options(r) -> list:
    """Options of load-pretrained: mostly plain ones, sometimes odd or wrong values."""
    opts = []
    for name in sample(r, sorted(LOAD_OPTIONS) + LOAD_FLAGS, 3):
        opts += [name] if name in LOAD_FLAGS else [name, r.choice(LOAD_OPTIONS[name])]
    return opts


def _option(opts, name, default=None):
    return opts[opts.index(name) + 1] if name in opts else default


def plain_options(opts) -> bool:
    """Options that keep the loaded words and values exactly as in the file (bfloat16 rounds
    twice, through float32)."""
    odd = {"--padding-token", "--unk-token", "--encoding", "--unicode-errors", "--format"}
    return not odd & set(opts) and _option(opts, "--dtype") != "bfloat16"


def loaded(folder):
    with Table.open(folder / "out.safetensors") as t:
        words = list(t.vocab) if t.vocab is not None else None
        return words, np.array(t.weight())


def check_exact(words, values, opts):
    """An undamaged file with plain options: the generated words and dtype(float(token))."""
    dtype = DTYPE_NP.get(_option(opts, "--dtype", "float32"))
    limit = _option(opts, "--limit")

    def check(r, folder):
        got_words, got = loaded(folder)
        n = len(words) if limit is None else min(int(limit), len(words))
        assert got_words == words[:n], (got_words, words[:n])
        if dtype is not None:
            with np.errstate(over="ignore"):
                want = values[:n].astype(dtype)
            assert np.array_equal(got, want, equal_nan=True), (got, want)
    return check


def _float(token: bytes):
    try:
        return float(token)
    except ValueError:
        try:
            return float(token.decode("utf-8"))
        except (ValueError, UnicodeError):
            return None


def check_consistent(meant: bytes | None, opts):
    """A damaged input that loaded: each row's word and values are those of some input line (text)
    or record (binary)."""
    dtype = DTYPE_NP.get(_option(opts, "--dtype", "float32"))

    def check(r, folder):
        if meant is None or dtype is None or not plain_options(opts):
            return
        words, table = loaded(folder)
        if words is None:
            return
        dim = table.shape[1]
        if "(word2vec-binary" in r.err:
            if dtype not in (np.float32, np.float64):
                return  # float32 values rounded: their bytes are not in the file
            for row, word in enumerate(words):
                rec = word.encode() + b" " + table[row].astype("<f4").tobytes()
                assert rec in meant or (row == 0 and rec in meant.replace(b"\xef\xbb\xbf", b"")), \
                    f"row {row} {word!r}: no such record"
            return
        index = defaultdict(list)
        for line in meant.split(b"\n"):
            fields = line.rstrip(b" \t\r\x0b\x0c").split(b" ")
            if len(fields) < dim + 1:
                continue
            vals = [_float(t) for t in fields[len(fields) - dim:]] if dim else []
            if None in vals:
                continue
            key = b" ".join(fields[:len(fields) - dim])
            index[key].append(vals)
            index[key.removeprefix(b"\xef\xbb\xbf")].append(vals)
        for row, word in enumerate(words):
            cands = index.get(word.encode("utf-8"), [])
            with np.errstate(over="ignore"):
                ok = any(np.array_equal(np.array(c, np.float64).astype(dtype), table[row], equal_nan=True)
                         for c in cands)
            assert ok, f"row {row} {word!r} {table[row]} is in no input line ({cands[:3]})"
    return check


@fuzz("text")
def test_fuzz_vector_text(work, seed):
    r = random.Random(seed)
    text, words, values = vector_text(r)
    ops = mutations(r) if r.randint(0, 3) else []
    stored, meant, kind = delivery(r, text, ops)
    name, files, stdin = source_args(r, "v.txt" + (f".{kind}" if kind else ""), stored)
    opts = load_options(r)
    if r.randint(0, 9) == 0:
        files["out.safetensors"] = b"old"
    exact = not ops and plain_options(opts) and "--force" not in opts and "out.safetensors" not in files
    check = check_exact(words, values, opts) if exact else check_consistent(meant, opts)
    run_case(Case(["load-pretrained", name, "out.safetensors", *opts], files, stdin,
                  outputs=("out.safetensors",)), work, check)


# ------------------------------------------------------------------------------ word2vec binary

SPECIAL_FLOATS = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 3.4e38, 1e-45]


def word2vec_binary(r):
    words = some_words(r)
    dim = r.randint(0, 4)
    values = np.array([[r.choice(SPECIAL_FLOATS) if r.randint(0, 20) == 0 else r.uniform(-10, 10)
                        for _ in range(dim)] for _ in words], np.float32).reshape(len(words), dim)
    count = len(words) + r.choice([0, 0, 0, -1, 1])
    sep = r.choice([b"", b"\n", b"\r\n"])
    body = b"".join(sep + w.encode() + b" " + v.astype("<f4").tobytes() for w, v in zip(words, values))
    return b"%d %d\n" % (max(count, 0), dim) + body, words, values, count == len(words)


@fuzz("binary")
def test_fuzz_word2vec_binary(work, seed):
    r = random.Random(seed)
    blob, words, values, exact_count = word2vec_binary(r)
    ops = mutations(r) if r.randint(0, 2) else []
    stored, meant, kind = delivery(r, blob, ops)
    name, files, stdin = source_args(r, "v.bin", stored)
    opts = r.choice([[], [], ["--format", "word2vec-binary"], ["--allow-nonfinite"], ["--limit", "2"],
                     ["--dtype", "float64"], ["--format", "word2vec"]])
    finite = bool(np.isfinite(values).all())

    def check(result, folder):
        got_words, got = loaded(folder)
        if not ops and exact_count and (finite or "--allow-nonfinite" in opts) and "--format" not in opts:
            n = len(words) if "--limit" not in opts else min(2, len(words))
            assert got_words == words[:n]
            assert np.array_equal(got, values[:n].astype(got.dtype), equal_nan=True)
        else:
            check_consistent(meant, opts)(result, folder)

    run_case(Case(["load-pretrained", name, "out.safetensors", *opts], files, stdin,
                  outputs=("out.safetensors",)), work, check)


# ------------------------------------------------------------------------------ safetensors headers

JSON_ATOMS = [None, True, False, 0, 1, 2, 4, 12, -1, 2**63, 2**64, 2**70, -(2**70), 1.5, -0.0, 1e308,
              "", "F32", "F16", "BF16", "I64", "U8", "none", "a", "\u0085", "\ud800"]


def json_value(r, depth=0):
    kind = r.randint(0, 9)
    if depth > 2 or kind < 6:
        return r.choice(JSON_ATOMS)
    if kind < 8:
        return [json_value(r, depth + 1) for _ in range(r.randint(0, 3))]
    return {r.choice(["", "a", "dtype", "shape"]): json_value(r, depth + 1) for _ in range(r.randint(0, 2))}


META_KEYS = ["embtool.format_version", "embtool.padding_idx", "embtool.max_norm", "embtool.norm_type",
             "embtool.scale_grad_by_freq", "embtool.sparse", "embtool.frozen", "embtool.unk_idx",
             "embtool.optim.name", "embtool.optim.hparams", "embtool.optim.step", "embtool.optim.tensor",
             "other"]
META_VALUES = ["1", "2", "none", "0", "-1", "99", "1_0", "nan", "inf", "-0.5", "true", "false", "yes",
               "", "sgd", "adagrad", "adam", "{}", '{"lr": 1e400}', '{"lr": "x"}', '{"nope": 1}',
               "[" * 3000, '{"lr": 0.1, "betas": [0.9]}', "weight", "vocab.order", "٣", "1e999",
               '{"lr": 100000000000000000000000000000000000000000000}', '{"betas": [0.9, 2]}']


def split_file(blob: bytes):
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def join_file(header, data: bytes, pad: bool = True) -> bytes:
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-(len(text) + 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def damaged_header(r, blob: bytes) -> bytes:
    header, data = split_file(blob)
    names = sorted(k for k in header if k != "__metadata__")
    kind = r.randint(0, 6)
    if kind == 0:  # a field of a tensor entry
        header[r.choice(names)][r.choice(["dtype", "shape", "data_offsets", "extra"])] = json_value(r)
    elif kind == 1:
        header["__metadata__"] = json_value(r)
    elif kind == 2:
        header.setdefault("__metadata__", {})[r.choice(META_KEYS)] = r.choice(META_VALUES)
    elif kind == 3:
        del header[r.choice(names)]
    elif kind == 4:  # a dimension changed, the data not
        shape = header[r.choice(names)]["shape"]
        if shape:
            shape[r.randint(0, len(shape) - 1)] = r.choice([0, 1, 3, 2**40, 2**62, 2**64])
    elif kind == 5:
        header[r.choice(["", "x", "weight2", "vocab.bytes"])] = json_value(r)
    else:
        return mutate(blob, mutations(r, least=1))
    return join_file(header, data, pad=coin(r))


def commands(*lines: str) -> list[list[str]]:
    """Command lines, words separated by spaces; ``T`` is the table."""
    return [["t.safetensors" if w == "T" else w for w in line.split()] for line in lines]


READ_COMMANDS = commands("info T", "info T --json", "info T --stats", "lookup T 0 1", "lookup T -w king é",
                         "lookup T 3 --max-norm 1", "similar T 2 -k 3", "similar T king -k 3",
                         "export T out.vec", "export T out.npy", "renorm T --max-norm 1 --dry-run",
                         "load-pretrained T out.safetensors", "lookup T 0 1 2 --offsets 0,1 --mode sum")
WRITE_COMMANDS = commands("freeze T", "unfreeze T", "renorm T --max-norm 1",
                          "lookup T 0 5 --max-norm 1 --write-back",
                          "train-step T -i ids.json --grad grad.json",
                          "train-step T -i ids.json --grad grad.json --optimizer adam")
SIDE_FILES = {"ids.json": b"[[0, 1], [5, 1]]",
              "grad.json": json.dumps(np.ones((2, 2, D)).tolist()).encode()}
OUTPUTS = ("out*",)


def check_lookup_against_library(args):
    """A lookup of row ids that succeeded returns what the safetensors library reads."""
    def check(r, folder):
        if args != ["lookup", "t.safetensors", "0", "1"]:
            return
        from safetensors import safe_open
        try:
            with safe_open(str(folder / "t.safetensors"), "numpy") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except Exception:  # the library refuses (or cannot hold) what embtool reads: no oracle
            return
        if "embtool.format_version" in meta and meta.get("embtool.max_norm", "none") != "none":
            return  # the table's max_norm renormalises the rows looked up
        if "weight" in tensors and tensors["weight"].dtype == np.float32:
            got = np.array(json.loads(r.out), np.float32)
            assert np.array_equal(got, tensors["weight"][[0, 1]], equal_nan=True)
    return check


@fuzz("header")
def test_fuzz_safetensors_header(base, work, seed):
    r = random.Random(seed)
    table = r.choice(["plain", "words", "adagrad", "adam", "f16", "bf16", "frozen"])
    blob = damaged_header(r, base["files"][table])
    args = r.choice(READ_COMMANDS + WRITE_COMMANDS)
    writes = ("t.safetensors",) if args in WRITE_COMMANDS else ()
    run_case(Case(args, {"t.safetensors": blob, **SIDE_FILES}, outputs=OUTPUTS, writes=writes),
             work, check_lookup_against_library(args))


# ------------------------------------------------------------------------------ tensor data

INT_VALUES = [-1, 0, 1, N - 1, N, N + 1, 2**31, 2**63 - 1, -(2**63), 4, 8, 200]


def damaged_tensor(r, blob: bytes, names):
    header, _ = split_file(blob)
    (n,) = struct.unpack("<Q", blob[:8])
    name = r.choice(names)
    begin, end = header[name]["data_offsets"]
    lo, dtype = 8 + n + begin, header[name]["dtype"]
    size = {"I64": 8, "F32": 4, "U8": 1}.get(dtype, 1)
    count = (end - begin) // size
    b = bytearray(blob)
    if count == 0:
        return bytes(b), name
    kind = r.randint(0, 3)
    at = lo + r.randrange(count) * size
    if kind == 0 and dtype == "I64":
        b[at:at + 8] = struct.pack("<q", r.choice(INT_VALUES))
    elif kind == 1:  # swap two elements
        j = lo + r.randrange(count) * size
        b[at:at + size], b[j:j + size] = b[j:j + size], b[at:at + size]
    elif kind == 2 and dtype == "F32":
        b[at:at + 4] = struct.pack("<f", r.choice(SPECIAL_FLOATS + [-1.0]))
    else:
        b[at + r.randrange(size)] ^= 1 << r.randrange(8)
    return bytes(b), name


TENSOR_COMMANDS = commands("lookup T -w king é", "lookup T -w the", "similar T queen -k 2", "info T",
                           "export T out.vec", "export T out.npy", "lookup T --words-file w.txt",
                           "evaluate T --pairs p.txt", "train-step T -i ids.json --grad grad.json")


def naive_vocab(path):
    from safetensors.numpy import load_file
    t = load_file(str(path))
    data, offs = t["vocab.bytes"], t["vocab.offsets"]
    return [data[offs[i]:offs[i + 1]].tobytes().decode() for i in range(len(offs) - 1)], t["weight"]


def check_words_lookup(args, table):
    def check(r, folder):
        if args[:3] != ["lookup", "t.safetensors", "-w"] or table == "frozen":
            return  # (the frozen table has a max_norm: its rows come back renormalised)
        words, weight = naive_vocab(folder / "t.safetensors")
        records = json.loads(r.out)  # one record (id, word, vector) per word
        assert [rec["word"] for rec in records] == args[3:]
        got = np.array([rec["vector"] for rec in records], np.float32)
        for i, w in enumerate(args[3:]):
            assert words.count(w) == 1, f"{w!r} found although the vocabulary has it {words.count(w)} times"
            assert np.array_equal(got[i], weight[words.index(w)])
    return check


@fuzz("tensors")
def test_fuzz_table_tensors(base, work, seed):
    r = random.Random(seed)
    table = r.choice(["words", "adagrad", "adam", "frozen"])
    blob = base["files"][table]
    names = sorted(n for n in split_file(blob)[0] if n.startswith(("vocab.", "optim.")))
    blob, name = damaged_tensor(r, blob, names)
    args = r.choice(TENSOR_COMMANDS)
    files = {"t.safetensors": blob, **SIDE_FILES, "w.txt": "king\nthe\n".encode(),
             "p.txt": b"the\tof\t1\nking\tqueen\t2\nman\twoman\t3\n"}
    run_case(Case(args, files, outputs=OUTPUTS, writes=("t.safetensors",) if args[0] == "train-step" else (),
                  note=name), work, check_words_lookup(args, table))


# ------------------------------------------------------------------------------ indices

ID_TOKENS = ["0", "1", "5", "11", "12", "-1", "+3", "007", "1_0", "1.0", "1e1", "٣", "0x1", "true",
             "null", '"a"', "NaN", "99999999999999999999", "-9223372036854775809", "[", "]", ",", " ",
             "\t", "\n", "\u00a0", "\x00", "[]", "[[", "]]", "{}", "[1,", "2.5", "\u0085"]
SHAPES = [(), (0,), (3,), (2, 2), (1, 3), (2, 0), (1, 1, 2), (4,)]


def ids_input(r):
    """(text, array or None): valid ids (the array) or a token soup (None)."""
    if r.randint(0, 2):
        shape = r.choice(SHAPES)
        arr = np.array([r.randrange(N) for _ in range(int(np.prod(shape)))], np.int64).reshape(shape)
        if arr.ndim == 1 and coin(r):
            return r.choice([" ", "\n", "\t", "  ", " \r\n"]).join(map(str, arr.tolist())), arr
        return json.dumps(arr.tolist(), separators=r.choice([(",", ":"), (", ", ": ")])), arr
    return "".join(r.choice(ID_TOKENS) for _ in range(r.randint(1, 8))), None


def check_gather(arr, weight):
    def check(r, folder):
        got = np.array(json.loads(r.out), np.float32)
        if arr is None:
            rows = got.reshape(-1, D)
            assert all((weight == row).all(1).any() for row in rows), "a row that is not in the table"
            return
        got = got.reshape(arr.shape + (D,))
        assert np.array_equal(got, weight[arr]), (got, weight[arr])
    return check


def as_npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def bag_options(r, n_ids):
    """Bag options and what they mean (None where the spelling is wrong on purpose)."""
    opts, meaning = [], {}
    if coin(r):
        offs = sorted(r.randint(0, max(n_ids, 0)) for _ in range(r.randint(1, 3)))
        if r.randint(0, 4) == 0:
            offs = [r.randint(-2, n_ids + 2) for _ in range(r.randint(1, 3))]
        good = [",".join(map(str, offs)), json.dumps(offs), " ".join(map(str, offs))]
        spelled = r.choice(good + ["[" + ",".join(map(str, offs)), "1_0", "[true]", "offsets.json"])
        opts += ["--offsets", spelled]
        meaning["offsets"] = offs if spelled in good else None
    mode = r.choice([None, "sum", "mean", "max"])
    if mode:
        opts += ["--mode", mode]
    meaning["mode"] = mode or "mean"
    if r.randint(0, 3) == 0:
        psw = [float(np.float32(r.uniform(-3, 3))) for _ in range(n_ids)]
        spelled = r.choice([json.dumps(psw), json.dumps(psw[:-1]), '["a",1,1]', "[true,false]", "[1e39]",
                            "psw.json"])
        opts += ["--per-sample-weights", spelled]
        meaning["psw"] = np.array(psw, np.float32) if spelled == json.dumps(psw) else None
    if r.randint(0, 4) == 0:
        opts += ["--include-last-offset"]
        meaning["last"] = True
    if r.randint(0, 4) == 0:
        opts += ["--padding-idx", r.choice(["1", "-1", "none", "40"])]
        meaning["odd"] = True
    return opts, meaning


def check_bag(arr, meaning, weight):
    def check(r, folder):
        if arr is None or meaning.get("odd") or ("psw" in meaning and meaning["psw"] is None):
            return
        offs, last = meaning.get("offsets"), meaning.get("last", False)
        if arr.ndim == 2 and "offsets" not in meaning:
            flat, offs = arr.reshape(-1), list(range(0, arr.size, arr.shape[1] or 1))
            last = False  # each row a bag: the flag has nothing to say
        elif arr.ndim == 1 and offs is not None:
            flat = arr
        else:
            return
        want = naive_query.bag(weight, flat, list(offs), meaning["mode"], meaning.get("psw"),
                               include_last_offset=last, padding_idx=2)
        got = np.array(json.loads(r.out), np.float32).reshape(want.shape)
        assert np.array_equal(got, want, equal_nan=True), (got, want)
    return check


@fuzz("indices")
def test_fuzz_indices(base, work, seed):
    r = random.Random(seed)
    text, arr = ids_input(r)
    how = r.choice(["args", "args", "file", "stdin", "npy"])
    files, stdin = {"t.safetensors": base["files"]["plain"], "psw.json": b"[1, 2, 3]",
                    "offsets.json": b"[0, 1]"}, None
    if how == "args":
        src = [text] if text.lstrip().startswith("[") else (text.split() or ["[]"])
    elif how == "file":
        files["ids.txt"], src = text.encode(), ["-i", "ids.txt"]
    elif how == "stdin":
        stdin, src = text.encode(), ["-i", "-"]
    else:
        files["ids.npy"] = as_npy(arr if arr is not None else np.array([1.5, 2]))
        src = ["-i", "ids.npy"]
    n_ids = arr.size if arr is not None and arr.ndim == 1 else 0
    weight = base["weight"]
    command = r.choice(["gather", "gather", "bag", "bag", "renorm", "renorm-dry", "write-back"])
    writes, check = (), None
    if command == "gather":
        args, check = ["lookup", "t.safetensors", *src], check_gather(arr, weight)
    elif command == "bag":
        opts, meaning = bag_options(r, n_ids)
        args = ["lookup", "t.safetensors", *src, *opts]
        check = check_bag(arr, meaning, weight) if opts else check_gather(arr, weight)
    elif command == "write-back":
        args = ["lookup", "t.safetensors", *src, "--max-norm", "1", "--write-back"]
        writes = ("t.safetensors",)
    else:
        args = ["renorm", "t.safetensors", *src, "--max-norm", "1"]
        args += ["--dry-run"] if command == "renorm-dry" else []
        writes = ("t.safetensors",) if command == "renorm" else ()
    run_case(Case(args, files, stdin, writes=writes), work, check)


# ------------------------------------------------------------------------------ train-step

OPTIMIZER_OPTIONS = ["--lr", "--momentum", "--dampening", "--weight-decay", "--lr-decay",
                     "--initial-accumulator-value", "--eps"]
NUMBERS = ["0.1", "0", "-1", "1e400", "nan", "inf", "-0.0", "1_0", "x", "", "1e-45", "٣", "0.9", "1e38"]


def grad_file(r, shape):
    """A gradient for ids of ``shape`` (right or wrong), in some container: (name, bytes)."""
    g_shape = shape + (D,) if r.randint(0, 4) else r.choice([(2,), shape + (D + 1,), (0, D)])
    g = np.array([r.choice(SPECIAL_FLOATS) if r.randint(0, 15) == 0 else r.uniform(-10, 10)
                  for _ in range(int(np.prod(g_shape)))], np.float32).reshape(g_shape)
    kind = r.choice(["json", "npy", "safetensors", "bad"])
    if kind == "json":
        return "g.json", json.dumps(g.tolist()).encode()
    if kind == "npy":
        with np.errstate(over="ignore"):
            return "g.npy", as_npy(g if r.randint(0, 5) else g.astype(np.float16))
    if kind == "safetensors":
        from safetensors.numpy import save
        return "g.safetensors", save({"g": g} if r.randint(0, 4) else {"g": g, "h": g})
    return "g.json", mutate(json.dumps(g.tolist()).encode(), mutations(r, least=1))


def batches_file(r) -> bytes:
    from safetensors.numpy import save
    tensors = {}
    for s in range(r.randint(0, 3)):
        ids = np.array([r.randint(-1, N) for _ in range(r.randint(1, 3))], np.int64)
        tensors[f"ids.{s}"] = ids
        tensors[f"grad.{s}"] = np.ones((len(ids), r.choice([D, D, D, 2])), np.float32)
    if r.randint(0, 3) == 0 and tensors:
        tensors.pop(r.choice(sorted(tensors)))
    if r.randint(0, 5) == 0:
        tensors["x.0"] = np.zeros(1, np.float32)
    blob = save(tensors) if tensors else b"\x00" * 8
    if r.randint(0, 3) == 0:
        blob = mutate(blob, mutations(r, least=1))
    return blob


@fuzz("train")
def test_fuzz_train_step(base, work, seed):
    r = random.Random(seed)
    table = r.choice(["words", "adagrad", "adam", "frozen", "f16", "zero", "plain"])
    files = {"t.safetensors": base["files"][table]}
    if r.randint(0, 4) == 0:
        files["b.safetensors"] = batches_file(r)
        src = ["--batches", "b.safetensors"]
    else:
        text, arr = ids_input(r)
        files["ids.txt"] = text.encode()
        gname, blob = grad_file(r, arr.shape if arr is not None else (2,))
        files[gname] = blob
        src = ["-i", "ids.txt", "--grad", gname]
    opts = []
    if coin(r):
        opts += ["--optimizer", r.choice(["sgd", "adagrad", "sparse-adam", "adam", "adamw", "lion"])]
    for _ in range(r.randint(0, 2)):
        opts += [r.choice(OPTIMIZER_OPTIONS), r.choice(NUMBERS)]
    if r.randint(0, 4) == 0:
        opts += ["--betas", r.choice(NUMBERS), r.choice(NUMBERS)]
    if r.randint(0, 4) == 0:
        opts += [r.choice(["--reset-optimizer", "--nesterov", "--amsgrad", "--maximize"])]
    run_case(Case(["train-step", "t.safetensors", *src, *opts], files, writes=("t.safetensors",)), work)


# ------------------------------------------------------------------------------ option values

WEIRD = ["0", "1", "3", "-1", "-3", "12", "13", "99999999999999999999", "1_0", "1.5", "nan", "inf",
         "-inf", "1e400", "-0", "none", "", " ", "٣", "0x10", "true", "x", "7", "2", "40", "-12"]


WORD_ARGS = ["king", "the", "é", "中文", "a b", "zzz", "", "[\"king\", \"the\"]", "[[\"king\"], [\"x1\"]]",
             "[[\"king\"], [\"x1\", \"the\"]]", "[1, 2]", "[\"king\"", "[" * 80 + "]" * 80, "\ud800",
             "-", "--", "[]", "[[]]", "\u0085"]


def words_case(r):
    args = ["lookup", "t.safetensors", "-w", *[r.choice(WORD_ARGS) for _ in range(r.randint(1, 3))]]
    if coin(r):
        args += ["--unknown", r.choice(["error", "skip", "unk", "subword", "x"])]
    if r.randint(0, 3) == 0:
        args = ["lookup", "t.safetensors", "--words-file", "w.txt"] + args[4:]
    return args


def option_case(r):
    which = r.choice(["init", "similar", "lookup", "renorm", "export", "info", "words"])
    if which == "words":
        return words_case(r), r.choice(["words", "words", "plain", "fasttext"])
    table = r.choice(["words", "plain", "f64", "zero", "bf16", "fasttext"])
    if which == "init":
        args = ["init", "out.safetensors", "-n", r.choice(WEIRD), "-d", r.choice(WEIRD)]
        for opt in sample(r, ["--seed", "--scale", "--init", "--dtype", "--padding-idx", "--max-norm",
                              "--norm-type"], 3):
            value = (r.choice(["normal", "uniform", "zeros", "xavier"]) if opt == "--init" else
                     r.choice(["float32", "bf16", "half", "float64", "int8"]) if opt == "--dtype"
                     else r.choice(WEIRD))
            args += [opt, value]
        return args, table
    if which == "similar":
        args = ["similar", "t.safetensors",
                r.choice(["king", "the", "0", "3", "11", "12", "-1", "1_0", "zzz", "-", "a b"])]
        for opt in sample(r, ["-k", "--restrict-vocab", "-n", "--ids", "--vector", "--unknown"], 2):
            if opt == "--ids":
                args += [opt]
            elif opt == "--unknown":
                args += [opt, r.choice(["error", "subword", "skip"])]
            elif opt == "--vector":
                args += [opt, r.choice(["[1,0,0,0]", "[1,0]", "[0,0,0,0]", "[1e39,0,0,0]", "[]"])]
            elif opt == "-n":
                args += [opt, r.choice(["man", "1", "king", "x"])]
            else:
                args += [opt, r.choice(WEIRD)]
        return args, table
    if which == "lookup":
        args = ["lookup", "t.safetensors", "0", "3"]
        for opt in sample(r, ["--max-norm", "--norm-type", "--padding-idx", "-f", "--tensor"], 3):
            value = (r.choice(["json", "jsonl", "csv", "tsv", "npy", "table", "xml"]) if opt == "-f"
                     else r.choice(["weight", "vocab.order", "nope"]) if opt == "--tensor"
                     else r.choice(WEIRD))
            args += [opt, value]
        return args, table
    if which == "renorm":
        return ["renorm", "t.safetensors", "--max-norm", r.choice(WEIRD), "--norm-type", r.choice(WEIRD),
                "--dry-run"], table
    if which == "export":
        return ["export", "t.safetensors",
                r.choice(["out.txt", "out.vec", "out.bin", "out.npy", "out.txt.gz", "out.xyz", "out"]),
                *r.choice([[], ["--format", "glove"], ["--format", "npy"], ["--vocab-out", "out.vocab.txt"],
                           ["--vocab-out", "nodir/v.txt"], ["--tensor", "x"]])], table
    return ["info", "t.safetensors", *r.choice([[], ["--json"], ["--stats"], ["--tensor", "vocab.bytes"]])], \
        table


def check_option_result(args):
    def check(r, folder):
        if args[0] == "init":
            with Table.open(folder / "out.safetensors") as t:
                assert t.shape == (int(args[3]), int(args[5]))
                if "--init" in args and args[args.index("--init") + 1] == "zeros":
                    assert not np.asarray(t.weight()).any()
        elif args[0] == "similar" and "--vector" not in args and "-n" not in args and r.out.strip():
            scores = [x["score"] for x in json.loads(r.out)]
            assert scores == sorted(scores, reverse=True) or any(s != s for s in scores)
    return check


@fuzz("options")
def test_fuzz_option_values(base, work, seed):
    r = random.Random(seed)
    args, table = option_case(r)
    words = "\n".join(r.choice(WORD_ARGS) for _ in range(r.randint(0, 3))).encode("utf-8", "surrogatepass")
    run_case(Case(args, {"t.safetensors": base["files"][table], "w.txt": words},
                  outputs=OUTPUTS),
             work, check_option_result(args))


# ------------------------------------------------------------------------------ evaluate files

ANALOGIES = b": capital\nking queen man woman\nthe of and x1\n: other\nKING QUEEN MAN WOMAN\n"
PAIRS = b"king\tqueen\t1.5\nman\twoman\t2\nthe\tof\t-1\n# comment\nx1\t\xc3\xa9\t0.5\n"


@fuzz("evaluate")
def test_fuzz_evaluate_files(base, work, seed):
    r = random.Random(seed)
    analogies = coin(r)
    stored, _, _ = delivery(r, ANALOGIES if analogies else PAIRS, mutations(r) if r.randint(0, 3) else [])
    args = ["evaluate", "t.safetensors", "--analogies" if analogies else "--pairs", "e.txt"]
    for opt in sample(r, ["--restrict-vocab", "--case-sensitive", "--dummy4unknown", "--delimiter",
                          "--encoding", "-f", "--unknown"], 2):
        if opt in ("--case-sensitive", "--dummy4unknown"):
            args += [opt]
        elif opt == "--unknown":
            args += [opt, r.choice(["skip", "subword", "error", "unk", ""])]
        elif opt == "--delimiter":
            args += [opt, r.choice(["\t", " ", "", ",", "\n"])]
        elif opt == "--encoding":
            args += [opt, r.choice(["utf-8", "utf-16", "latin-1", "rot13", "punycode"])]
        elif opt == "-f":
            args += [opt, r.choice(["json", "table"])]
        else:
            args += [opt, r.choice(WEIRD)]
    table = base["files"][r.choice(["words", "plain", "zero", "fasttext"])]
    run_case(Case(args, {"t.safetensors": table, "e.txt": stored}), work)


# ------------------------------------------------------------------------------ model files

EMB = "embeddings.word_embeddings.weight"
TOKENS_V = ["[PAD]", "[UNK]", "the", "of", "##s", "é", "中", "a b", "Ġthe", "▁of"]


def _tokenizer(r) -> dict:
    """A Hugging Face tokenizer.json of one of the three model types."""
    kind = r.choice(["WordPiece", "BPE", "Unigram"])
    model = {"type": kind}
    if kind == "Unigram":
        model["vocab"] = [[t, -float(i)] for i, t in enumerate(TOKENS_V)]
    else:
        model["vocab"] = {t: i for i, t in enumerate(TOKENS_V)}
        if kind == "BPE":
            model["merges"] = ["t h", "th e"]
    return {"version": "1.0", "added_tokens": [{"id": 0, "content": "[PAD]", "special": True}],
            "model": model}


def _vocabulary(r) -> tuple[str, bytes]:
    """(file name, bytes) of a vocabulary in one of the formats --vocab reads."""
    kind = r.choice(["tokenizer", "txt", "map", "lines"])
    words = TOKENS_V[:r.choice([N - 3, len(TOKENS_V), N])]
    if kind == "tokenizer":
        return "tokenizer.json", json.dumps(_tokenizer(r), ensure_ascii=coin(r)).encode()
    if kind == "map":
        return "vocab.json", json.dumps({w: i for i, w in enumerate(words)}).encode()
    sep = r.choice([b"\n", b"\r\n"])
    body = sep.join(w.encode() for w in words) + sep
    return ("vocab.txt" if kind == "txt" else "words.txt"), (b"\xef\xbb\xbf" + body if coin(r, 0.2) else body)


def _model_bytes(r, w) -> bytes:
    from safetensors.numpy import save

    tensors = {EMB: w.astype(r.choice([np.float32, np.float16])), "pooler.dense.weight": w[:D, :D].copy()}
    if coin(r, 0.3):
        tensors["quantized"] = np.arange(8, dtype=np.int8).reshape(2, 4)
    return save(tensors, metadata={"format": "pt"} if coin(r) else None)


@fuzz("models")
def test_fuzz_model_files(base, work, seed):
    """Model files as users have them, damaged: a checkpoint with a tokenizer or vocabulary beside
    it, a two-shard checkpoint index, a fastText .bin model, embtool's own sharded table."""
    r = random.Random(seed)
    kind = r.choice(["vocab", "vocab", "index", "fasttext", "sharded", "sharded", "folder", "folder"])
    ops = mutations(r, least=1) if r.randint(0, 4) else []
    if kind == "vocab":
        name, vocab = _vocabulary(r)
        model = _model_bytes(r, base["weight"])
        damaged_model = coin(r, 0.25)
        files = {"model.safetensors": mutate(model, ops) if damaged_model else model,
                 name: vocab if damaged_model else mutate(vocab, ops)}
        args = ["load-pretrained", "model.safetensors", "out.safetensors", "--vocab", name]
        args += r.choice([[], ["--tensor", EMB], ["--tensor", "pooler.dense.weight"], ["--tensor", "nope"],
                          ["--on-duplicate", r.choice(["error", "first", "last", "x"])]])
    elif kind == "index":
        from safetensors.numpy import save

        w = base["weight"]
        shards = {"model-00001-of-00002.safetensors": save({"pooler.dense.weight": w[:D, :D].copy()}),
                  "model-00002-of-00002.safetensors": save({EMB: w})}
        index = {"metadata": {"total_size": int(w.nbytes + D * D * 4)},
                 "weight_map": {"pooler.dense.weight": "model-00001-of-00002.safetensors",
                                EMB: "model-00002-of-00002.safetensors"}}
        text = json.dumps(index).encode()
        target = r.choice([None, *shards])
        files = {n: (mutate(b, ops) if n == target else b) for n, b in shards.items()}
        files["model.safetensors.index.json"] = text if target else mutate(text, ops)
        command = r.choice([["info", "model.safetensors.index.json"],
                            ["load-pretrained", "model.safetensors.index.json", "out.safetensors"],
                            ["lookup", "model.safetensors.index.json", "0", "3"],
                            ["similar", "model.safetensors.index.json", "2", "--ids"]])
        args = command + r.choice([[], ["--tensor", EMB], ["--tensor", "nope"]])
    elif kind == "folder":  # a transformers or sentence-transformers folder, one file damaged
        from safetensors.numpy import save

        w = base["weight"]
        if coin(r):
            folder = {"m/config.json": json.dumps({"model_type": "bert", "vocab_size": N}).encode(),
                      "m/model.safetensors": _model_bytes(r, w),
                      "m/tokenizer.json": json.dumps(_tokenizer(r)).encode()}
        else:
            folder = {"m/modules.json": json.dumps([{"idx": 0, "name": "0", "path": "0_StaticEmbedding",
                                                     "type": "sentence_transformers.models.StaticEmbedding"}]).encode(),
                      "m/0_StaticEmbedding/model.safetensors": save({"embedding.weight": w}),
                      "m/0_StaticEmbedding/tokenizer.json": json.dumps(_tokenizer(r)).encode()}
        target = r.choice(sorted(folder))
        files = {n: (mutate(b, ops) if n == target else b) for n, b in folder.items()}
        args = r.choice([["info", "m"], ["load-pretrained", "m", "out.safetensors"], ["lookup", "m", "0", "3"],
                         ["lookup", "m", "-w", "the", "of"], ["similar", "m", "the", "-k", "3"]])
    elif kind == "sharded":  # embtool's own sharded table, one of its files damaged
        shard_files = base["files"]["sharded"]
        target = r.choice(sorted(shard_files))
        files = {n: (mutate(b, ops) if n == target else b) for n, b in shard_files.items()}
        files["ids.json"], files["grad.json"] = b"[[0, 1], [5, 1]]", json.dumps(np.ones((2, 2, D)).tolist()).encode()
        writing = r.choice([["renorm", "t.index.json", "--max-norm", "1"],
                            ["train-step", "t.index.json", "-i", "ids.json", "--grad", "grad.json",
                             "--optimizer", r.choice(["sgd", "adagrad", "adam"])],
                            ["freeze", "t.index.json"], None, None, None])
        args = writing or r.choice([["info", "t.index.json"], ["info", "t.index.json", "--stats"],
                                    ["lookup", "t.index.json", "0", "5", "11"],
                                    ["lookup", "t.index.json", "-w", "king", "the"],
                                    ["similar", "t.index.json", "king", "-k", "3"],
                                    ["unshard", "t.index.json", "out.safetensors"]])
        run_case(Case(args, files, outputs=OUTPUTS, writes=tuple(shard_files) if writing else ()), work)
        return
    else:
        data = SAMPLE_FASTTEXT.read_bytes()
        files = {"m.bin": mutate(data, [(op, pos % 400, b, t) for op, pos, b, t in ops] if coin(r) else ops)}
        args = ["load-pretrained", "m.bin", "out.safetensors", *r.choice([[], ["--format", "fasttext"]])]
    run_case(Case(args, files, outputs=OUTPUTS), work)


SAMPLE_FASTTEXT = Path(__file__).parent.parent / "sample_data" / "small.fasttext.bin"


# ------------------------------------------------------------------------------ a damaged log

@fuzz("log")
def test_fuzz_write_ahead_log(base, work, seed):
    """A table's write-ahead log damaged (bit rot, a torn or cut file): every command either
    refuses it with one Error line or recovers the table to one of its committed states, never
    to anything else (a frame whose checksum fails ends the committed log)."""
    r = random.Random(seed)
    files = dict(base["files"]["logged"])
    files["t.safetensors-wal"] = mutate(files["t.safetensors-wal"], mutations(r, least=1))
    files["ids.json"], files["grad.json"] = b"[[0, 1], [5, 1]]", json.dumps(np.ones((2, 2, D)).tolist()).encode()
    args = r.choice([["info", "t.safetensors"], ["info", "t.safetensors", "--stats"],
                     ["lookup", "t.safetensors", "0", "5"], ["lookup", "t.safetensors", "-w", "the", "king"],
                     ["similar", "t.safetensors", "the", "-k", "3"], ["checkpoint", "t.safetensors"],
                     ["export", "t.safetensors", "out.txt"]])
    table = ("t.safetensors", "t.safetensors-wal")
    run_case(Case(args, files, outputs=OUTPUTS, writes=table, recovery=table), work)
    assert (work / "t.safetensors").read_bytes() in base["files"]["logged states"], \
        f"the table is in no committed state after {args}"


# ------------------------------------------------------------------------------ the corpus

@pytest.mark.parametrize("path", corpus_cases(), ids=lambda p: p.stem)
def test_corpus_case(work, path):
    """Every input that once broke a rule, replayed with the same rules."""
    run_case(Case.from_json(path.read_text()), work)


def test_generated_case_count(capsys):
    """The run generated its cases (when every fuzz test ran in this session)."""
    if set(generated) != set(WEIGHTS):
        pytest.skip("not every fuzz test ran in this session")
    with capsys.disabled():
        print(f"\nfuzz: {sum(generated.values())} generated cases ({dict(generated)}); all runs: "
              f"{counter['ok']} exit 0, {counter['error']} exit 1, {counter['usage']} exit 2")
    assert sum(generated.values()) >= CASES - len(WEIGHTS)
