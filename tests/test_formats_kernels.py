"""The parse kernels: numpy and Numba twins give identical results, and every value the exact
fast path accepts equals Python's float(token)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import naive_parse
from embtool.kernels._numba import parse as nb
from embtool.kernels._numpy import parse as npk

PAD = 64
TOKEN_CHARS = "0123456789.eE+-_ in"


def padded(data: bytes):
    return np.frombuffer(bytearray(data + b"\0" * PAD), np.uint8)


def numpy_token(tok: bytes):
    ok, val = npk.parse_tokens(padded(tok), np.array([0]), np.array([len(tok)]))
    return bool(ok[0]), float(val[0])


def numba_token(tok: bytes):
    ok, val, end = nb.parse_token(padded(tok), 0, len(tok))
    return bool(ok), float(val), end


def check_token(tok: bytes):
    ok1, v1 = numpy_token(tok)
    ok2, v2, _ = numba_token(tok)
    assert ok1 == ok2, tok
    if ok1:
        exact = naive_parse.tokens_value(tok)
        assert np.float64(v1).view(np.uint64) == np.float64(exact).view(np.uint64), tok
        assert np.float64(v2).view(np.uint64) == np.float64(exact).view(np.uint64), tok
    return ok1


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


@settings(max_examples=3000, deadline=None)
@given(hs.text(TOKEN_CHARS, min_size=0, max_size=36).map(lambda s: s.replace(" ", "")))
def test_tokens_agree_with_float_property(tok):
    check_token(tok.encode())


@settings(max_examples=2000, deadline=None)
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


@settings(max_examples=400, deadline=None)
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
    plain = (st & (npk.FALLBACK | npk.ERRORS)) == 0
    assert a[2][plain].view(np.uint32).tolist() == b[2][plain].view(np.uint32).tolist()
    # stopping early at max_rows gives a prefix of the same rows
    c = run_parse(nb, data, dim, nchunks, max_rows=cut)
    d = run_parse(npk, data, dim, nchunks, max_rows=cut)
    k = len(c[6])
    assert c[6].tolist() == d[6].tolist() == st[:k].tolist()
    assert c[5].tolist() == d[5].tolist() == a[5][:k].tolist()


def test_parse_kernels_on_a_plain_block():
    data = b"the 1 2 3\r\nof 0.5 -1e-3 7 \n\nand 4 5 6"
    for mod in (npk, nb):
        lines, rows, out, ks, ke, ln, st, counts = run_parse(mod, data, 3, 2)
        assert lines.sum() == 4 and rows.sum() == 3
        assert out.tolist() == [[1, 2, 3], [0.5, np.float32(-1e-3), 7], [4, 5, 6]]
        assert [data[s:e] for s, e in zip(ks, ke)] == [b"the", b"of", b"and"]
        assert ln.tolist() == [1, 2, 4] and st.tolist() == [0, 0, 0]
        assert counts.tolist() == [1, 1]


@settings(max_examples=300, deadline=None)
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
