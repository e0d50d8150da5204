"""The text kernels (parse_tokens, count_rows, parse_rows, scan_records, format_rows): the numpy
and Numba twins give identical results on generated and adversarial input, every value the exact
fast path accepts equals Python's float(token), and formatting equals numpy's str(np.float32)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import naive_parse
from embtool.kernels import common
from embtool.kernels import numba_kernels as nb
from embtool.kernels import numpy_kernels as npk
from test_kernels import examples, many_slices  # noqa: F401 (an autouse fixture)

PAD = 64
TOKEN_CHARS = "0123456789.eE+-_ in"


def padded(data: bytes):
    return np.frombuffer(bytearray(data + b"\0" * PAD), np.uint8)


def token(K, tok: bytes):
    ok, val = K.parse_tokens(padded(tok), np.array([0], np.int64), np.array([len(tok)], np.int64))
    return bool(ok[0]), float(val[0])


def check_token(tok: bytes):
    ok1, v1 = token(npk, tok)
    ok2, v2 = token(nb, tok)
    assert ok1 == ok2, tok
    if ok1:
        exact = naive_parse.tokens_value(tok)
        assert np.float64(v1).view(np.uint64) == np.float64(exact).view(np.uint64), tok
        assert np.float64(v2).view(np.uint64) == np.float64(exact).view(np.uint64), tok
    return ok1


def test_many_tokens_in_one_call_are_twins():
    toks = [b"1", b"-2.5", b"x", b"1e400", b"0.000001", b"", b"3 4", b"7.0e-3"]
    data = b" ".join(toks)
    starts = np.cumsum([0] + [len(t) + 1 for t in toks[:-1]]).astype(np.int64)
    lens = np.array([len(t) for t in toks], np.int64)
    (ok1, v1), (ok2, v2) = (K.parse_tokens(padded(data), starts, lens) for K in (npk, nb))
    assert ok1.tolist() == ok2.tolist() == [True, True, False, False, True, False, False, True]
    assert v1[ok1].view(np.uint64).tolist() == v2[ok2].view(np.uint64).tolist()


@pytest.mark.parametrize("tok, fast", [
    (b"0.1", True), (b"-0.0528419", True), (b"2.0465e-05", True), (b"+1", True), (b".5", True),
    (b"3.", True), (b"-0", True), (b"1E+22", True), (b"9007199254740992", True),
    (b"9007199254740993", False), (b"1e23", False), (b"1e-23", False), (b"0e99999", False),
    (b"0.00000000000000001234", True), (b"1234567890123456789", False),
    (b"1.000000000000000000000", False), (b"nan", False), (b"inf", False), (b"1_000", False),
    (b"1e", False), (b".", False), (b"-", False), (b"", False), (b"1.2.3", False), (b"1e5x", False),
    (b"1" * 33, False), (b"0" * 40 + b"1", False), (b"00001e00001", False), (b"1e0001", True),
])
def test_fast_path_acceptance(tok, fast):
    assert check_token(tok) == fast


@examples(3000)
@given(hs.text(TOKEN_CHARS, min_size=0, max_size=36).map(lambda s: s.replace(" ", "")))
def test_tokens_agree_with_float_property(tok):
    check_token(tok.encode())


@examples(2000)
@given(hs.floats(allow_nan=False, allow_infinity=False),
       hs.sampled_from(["{!r}", "{:.6g}", "{:.9g}", "{:.17g}", "{:e}", "{:.3e}", "{:.20f}", "{:g}"]))
def test_formatted_floats_agree_property(x, spelling):
    check_token(spelling.format(x).encode())


def bounds_for(data: bytes, nchunks: int):
    n = len(data)
    out = [0]
    for c in range(1, nchunks):
        k = data.find(b"\n", c * n // nchunks, n)
        out.append(max(n if k < 0 else k + 1, out[-1]))
    out.append(n)
    return np.array(out, np.int64)


def run_parse(mod, data, dim, nchunks, max_rows=None):
    buf = padded(data)
    bounds = bounds_for(data, nchunks)
    lines, rows = mod.count_rows(buf, bounds)
    line0 = np.concatenate(([0], np.cumsum(lines)[:-1])).astype(np.int64)
    row0 = np.concatenate(([0], np.cumsum(rows)[:-1])).astype(np.int64)
    total = int(rows.sum()) if max_rows is None else min(max_rows, int(rows.sum()))
    out = np.zeros((total, dim), np.float32)
    ks, ke, ln = (np.zeros(total, np.int64) for _ in range(3))
    st = np.zeros(total, np.uint8)
    counts = mod.parse_rows(buf, bounds, line0, row0, dim, total, out, ks, ke, ln, st)
    return lines, rows, out, ks, ke, ln, st, counts


LINE = hs.lists(hs.sampled_from(["w", "x y", "1", "-0.5", "2e3", "nan", "", " ", "\t", "\r",
                                 "1.5", "ab", "7", "0.25"]), min_size=0, max_size=7)


@examples(400)
@given(lines=hs.lists(LINE.map(" ".join), max_size=25), dim=hs.integers(1, 4),
       nchunks=hs.integers(1, 6), final=hs.booleans(), cut=hs.integers(0, 30))
def test_parse_kernels_are_twins(lines, dim, nchunks, final, cut):
    data = ("\n".join(lines) + ("\n" if final else "")).encode()
    a = run_parse(npk, data, dim, nchunks)
    b = run_parse(nb, data, dim, nchunks)
    for x, y in zip(a[:2], b[:2]):
        assert x.tolist() == y.tolist()
    for x, y in zip(a[3:], b[3:]):
        assert x.tolist() == y.tolist()
    st = a[6]
    plain = (st & (common.FALLBACK | common.ERRORS)) == 0
    assert a[2][plain].view(np.uint32).tolist() == b[2][plain].view(np.uint32).tolist()
    # stopping early at max_rows gives a prefix of the same rows
    c = run_parse(nb, data, dim, nchunks, max_rows=cut)
    d = run_parse(npk, data, dim, nchunks, max_rows=cut)
    k = len(c[6])
    assert c[6].tolist() == d[6].tolist() == st[:k].tolist()
    assert c[5].tolist() == d[5].tolist() == a[5][:k].tolist()


#: value spellings around the edges of the 8-bytes-at-a-time reader: 7 and 8 digits on either side
#: of the point, a bare sign or point, signs, exponents, trailing junk, a line break in a token.
NUMBER = hs.sampled_from([
    "0.123456", "-0.0123456", "1.5", "+2.25", "-7", "7.", ".5", "-.5", "1234567.1234567",
    "12345678.5", "1.12345678", "12345678", "0.00000001", "-0", "+", "-", ".", "1e5", "-2.5E-3",
    "1.5x", "9007199254740993", "1_0", "nan", "00000000000000000001.5", "3.14\n", "\t1",
])


@examples(300)
@given(rows=hs.lists(hs.lists(NUMBER, min_size=1, max_size=12), min_size=1, max_size=6),
       key=hs.sampled_from(["w", "a b", "", "long" * 9]), trail=hs.sampled_from(["", " ", "\r", " \t"]),
       nchunks=hs.integers(1, 3))
def test_parse_kernels_on_long_numeric_rows(rows, key, trail, nchunks):
    dim = max(len(r) for r in rows)
    data = "".join(f"{key} {' '.join(r)}{trail}\n" for r in rows).encode()
    a = run_parse(npk, data, dim, nchunks)
    b = run_parse(nb, data, dim, nchunks)
    for x, y in zip(a[:2] + a[3:], b[:2] + b[3:]):
        assert x.tolist() == y.tolist()
    plain = (a[6] & (common.FALLBACK | common.ERRORS)) == 0
    assert a[2][plain].view(np.uint32).tolist() == b[2][plain].view(np.uint32).tolist()
    lines = naive_parse.rows(data)
    for k in np.flatnonzero(plain):
        want = naive_parse.parse_rows([lines[k]], dim)[1][0]
        assert b[2][k].view(np.uint32).tolist() == want.view(np.uint32).tolist()


def test_parse_kernels_on_a_plain_block():
    data = b"the 1 2 3\r\nof 0.5 -1e-3 7 \n\nand 4 5 6"
    for mod in (npk, nb):
        lines, rows, out, ks, ke, ln, st, counts = run_parse(mod, data, 3, 2)
        assert lines.sum() == 4 and rows.sum() == 3
        assert out.tolist() == [[1, 2, 3], [0.5, np.float32(-1e-3), 7], [4, 5, 6]]
        assert [data[s:e] for s, e in zip(ks, ke)] == [b"the", b"of", b"and"]
        assert ln.tolist() == [1, 2, 4] and st.tolist() == [0, 0, 0]
        assert counts.tolist() == [1, 1]


@examples(300)
@given(words=hs.lists(hs.binary(min_size=1, max_size=5).filter(lambda w: b" " not in w),
                      max_size=8),
       dim=hs.integers(1, 3), sep=hs.sampled_from([b"", b"\n", b"\r\n"]),
       cut=hs.integers(0, 40), max_word=hs.sampled_from([3, 100]))
def test_scan_records_twins(words, dim, sep, cut, max_word):
    body = b"".join(w + b" " + b"\x01" * (4 * dim) + sep for w in words)
    body = body[: max(0, len(body) - cut)]
    buf = padded(body)
    res = []
    for mod in (npk, nb):
        ws = np.zeros(len(words) + 1, np.int64)
        we = np.zeros_like(ws)
        k, pos, crlf, status = mod.scan_records(buf, 0, len(body), dim, len(words), max_word, ws, we)
        res.append((int(k), int(pos), int(crlf), int(status), ws[:k].tolist(), we[:k].tolist()))
    assert res[0] == res[1]


def format_rows(K, vec, words):
    data = "".join(words).encode()
    off = np.zeros(len(words) + 1, np.int64)
    off[1:] = np.cumsum([len(w.encode()) for w in words])
    out = np.empty(len(data) + len(vec) * (vec.shape[1] * common.MAX_VALUE_CHARS + 2), np.uint8)
    n = K.format_rows(np.ascontiguousarray(vec), np.frombuffer(data, np.uint8), off, out)
    return out[:n].tobytes()


#: float32 bit patterns at the edges of the formatter: zeros, infinities, NaNs, the smallest and
#: largest subnormals and normals, the 1e-4 and 1e6 switches to scientific notation and their
#: neighbours, and values whose shortest digits end in a tie.
SPECIAL_BITS = np.uint32([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 1,
                          0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0x38D1B717, 0x38D1B718, 0x497423FF,
                          0x49742400, 0x4B800000, 0x3DCCCCCD, 0x3EAAAAAB, 0x4CBEBC20, 0x4CBEBC21])


@pytest.mark.parametrize("seed", [3, 4])
def test_format_rows_matches_numpy_str_on_random_bit_patterns(seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 2**32, (1000, 25), dtype=np.uint64).astype(np.uint32).view(np.float32)
    v[0, :len(SPECIAL_BITS)] = SPECIAL_BITS.view(np.float32)
    words = [f"r{i}" * (i % 3) + "é" for i in range(len(v))]
    want = naive_parse.format_text(words, v, header=False)
    assert format_rows(npk, v, words) == want
    assert format_rows(nb, v, words) == want


@examples(200)
@given(hs.lists(hs.floats(width=32, allow_nan=False), min_size=1, max_size=40),
       hs.integers(1, 5))
def test_format_rows_twins_property(values, rows):
    v = np.tile(np.float32(values), (rows, 1))
    words = [f"w{i}" for i in range(rows)]
    want = naive_parse.format_text(words, v, header=False)
    assert format_rows(npk, v, words) == format_rows(nb, v, words) == want


def test_format_rows_of_no_rows():
    v = np.zeros((0, 3), np.float32)
    assert format_rows(npk, v, []) == format_rows(nb, v, []) == b""
