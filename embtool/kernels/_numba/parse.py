"""Text vector parsing kernels (Numba twin of ``_numpy/parse.py``; see its docstring for the
line, field and number rules).  Chunks of a block are parsed on parallel threads."""
from __future__ import annotations

import numba
import numpy as np

from embtool.kernels._numba import HELPER, JIT, readonly, threads
from embtool.kernels._numba.intrinsics import ctz64, load_u64
from embtool.kernels.common import (
    EMPTY_FIELD, FALLBACK, MAX_DIGITS, MAX_EXACT_MANTISSA, MAX_EXP_DIGITS, MAX_TOKEN, POW10,
    SPACED_KEY, TOO_FEW, TOO_MANY, WHITESPACE,
)

#: unsigned, so that Numba compares it with the uint64 mantissa exactly (a mixed signed/unsigned
#: comparison would go through float64 and round).
_MAX_M = np.uint64(MAX_EXACT_MANTISSA)
_NL8 = np.uint64(0x0A0A0A0A0A0A0A0A)
_ONES8 = np.uint64(0x0101010101010101)
_HIGH8 = np.uint64(0x8080808080808080)


@numba.njit(**HELPER)
def _line_end(buf, i, b):
    """Index of the first ``\n`` at or after ``i`` (or ``b``), 8 bytes at a time."""
    while i + 8 <= b:
        w = load_u64(buf, i) ^ _NL8
        if ((w - _ONES8) & ~w & _HIGH8) != np.uint64(0):  # some byte of w is zero
            break
        i += 8
    while i < b and buf[i] != 10:
        i += 1
    return i


@numba.njit(**HELPER)
def _stripped(buf, s, e):
    while e > s and WHITESPACE[buf[e - 1]]:
        e -= 1
    return e


@numba.njit(**JIT)
def _count_chunk(buf, i, b):
    """Lines and rows (non-blank lines) of ``buf[i:b]``."""
    lines = 0
    rows = 0
    while i < b:
        j = _line_end(buf, i, b)
        lines += 1
        if _stripped(buf, i, j) > i:
            rows += 1
        i = j + 1
    return lines, rows


def count_rows(buf, bounds):
    """Lines and rows (non-blank lines) in each chunk."""
    buf = readonly(buf)  # a map of the file or a block read into memory: one compiled form
    got = threads.each(lambda c: _count_chunk(buf, bounds[c], bounds[c + 1]), len(bounds) - 1)
    return np.array([g[0] for g in got], np.int64), np.array([g[1] for g in got], np.int64)


_U9 = np.uint64(9)
_U10 = np.uint64(10)
_U48 = np.uint64(48)
_U0 = np.uint64(0)


# -- eight fraction digits at a time ------------------------------------------------------------
#
# The digits after the point (5 to 9 in a typical vector file) are read 8 bytes at a time: one
# load, a mask of the bytes that are not digits, its trailing zero count, and fast_float's
# ``parse_eight_digits_unrolled`` (Lemire) for their value.  A byte is a digit exactly when its
# high nibble is 3 and adding 6 keeps it 3; a carry out of a byte can only disturb the bytes after
# the first non-digit, which are not used.  The loop's exit no longer depends on each byte, which
# was the branch the byte-by-byte loop mispredicted once per value.

_ASCII0 = np.uint64(0x3030303030303030)
_HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
_SIXES = np.uint64(0x0606060606060606)
_EVERY4TH = np.uint64(0x000000FF000000FF)
_MUL_100_1000000 = np.uint64(100 + (1000000 << 32))
_MUL_1_10000 = np.uint64(1 + (10000 << 32))
_U3 = np.uint64(3)
_U8 = np.uint64(8)
_U16 = np.uint64(16)
_U32 = np.uint64(32)
#: 10**0 .. 10**8 as uint64.
_POW10_U64 = np.array([10**k for k in range(9)], np.uint64)


@numba.njit(**HELPER)
def _digit_run(buf, q, e, m):
    """``m`` followed by the digits at ``buf[q:e]`` (modulo 2**64, as ``m * 10 + d`` digit by digit
    would give) and the index after them.  Reads 8 bytes past ``q``: callers pad blocks."""
    while True:
        w = load_u64(buf, q)
        nondigits = ((w & _HIGH_NIBBLES) ^ _ASCII0) | (((w + _SIXES) & _HIGH_NIBBLES) ^ _ASCII0)
        k = min(np.int64(ctz64(nondigits) >> _U3), e - q)
        if k > 0:
            v = (w - _ASCII0) << np.uint64(8 * (8 - k))  # the k digits at the top, in order
            v = v * _U10 + (v >> _U8)
            v = (((v & _EVERY4TH) * _MUL_100_1000000)
                 + (((v >> _U16) & _EVERY4TH) * _MUL_1_10000)) >> _U32
            m = m * _POW10_U64[k] + v
            q += k
        if k < 8:
            return m, q


@numba.njit(**HELPER)
def _scan_values(buf, p, e, dim, orow):
    """The ``dim`` numbers of ``buf[p:e]``, one space between two, into ``orow`` by the fast
    path: the index of the byte after the last one, or -1 when a number is outside the fast path
    or is not followed by one space (``orow`` is then partly written).  A number is
    ``[+-]digits[.digits][(e|E)[+-]digits]``.

    Every number of a row is read by this one loop (the common layout, the general rule, the
    number just before a vector): a function called per number, or Numba's inlining of one,
    compiled 1-2 s slower on a fresh install or ran 30% slower."""
    q = p
    for j in range(dim):
        c = buf[p]  # within the padding when p == e
        neg = (p < e) & (c == 45)
        q = p + np.int64((p < e) & ((c == 45) | (c == 43)))  # no branch on the sign (half of values)
        d0 = q
        m = _U0
        # the integer digits (one, in most vector files) byte by byte, the fraction's by _digit_run
        while q < e:
            d = np.uint64(buf[q]) - _U48
            if d > _U9:
                break
            m = m * _U10 + d
            q += 1
        ndig = q - d0
        frac = 0
        if q < e and buf[q] == 46:
            f0 = q + 1
            m, q = _digit_run(buf, f0, e, m)
            frac = q - f0
            ndig += frac
        if ndig == 0 or ndig > MAX_DIGITS:  # more digits may have wrapped m around 2**64
            return -1
        ev = 0
        if q < e and (buf[q] | 32) == 101:
            q += 1
            eneg = False
            if q < e and (buf[q] == 45 or buf[q] == 43):
                eneg = buf[q] == 45
                q += 1
            x0 = q
            while q < e and buf[q] >= 48 and buf[q] <= 57:
                if q - x0 < MAX_EXP_DIGITS:
                    ev = ev * 10 + (int(buf[q]) - 48)
                q += 1
            if q == x0 or q - x0 > MAX_EXP_DIGITS:
                return -1
            if eneg:
                ev = -ev
        e10 = ev - frac
        v = 0.0
        if q - p > MAX_TOKEN:
            return -1
        if m != _U0:
            if m > _MAX_M or e10 > 22 or e10 < -22:
                return -1
            if e10 >= 0:
                v = np.float64(m) * POW10[e10]
            else:
                v = np.float64(m) / POW10[-e10]
        orow[j] = -v if neg else v
        if j < dim - 1:
            if q >= e or buf[q] != 32:
                return -1
            p = q + 1
    return q


@numba.njit(**JIT)
def parse_tokens(buf, starts, lens):
    """See the numpy twin."""
    n = starts.shape[0]
    ok = np.empty(n, np.bool_)
    val = np.zeros(n, np.float64)
    for k in range(n):
        e = starts[k] + lens[k]
        ok[k] = _scan_values(buf, starts[k], e, 1, val[k:k + 1]) == e
    return ok, val


@numba.njit(**HELPER)
def _parse_general(buf, s, e, dim, orow):
    """Status and key end of a line by the general rule (keys with spaces, errors)."""
    nsp = 0
    for t in range(s, e):
        if buf[t] == 32:
            nsp += 1
            if t == s or buf[t - 1] == 32:
                return EMPTY_FIELD, s
    if nsp < dim:
        return TOO_FEW, s
    need = nsp - dim + 1
    seen = 0
    prev = s
    t = s
    while True:
        if buf[t] == 32:
            seen += 1
            if seen == need:
                break
            prev = t + 1
        t += 1
    key_end = t
    st = 0
    if nsp > dim:
        if _scan_values(buf, prev, key_end, 1, orow) == key_end:
            return TOO_MANY, s
        st = SPACED_KEY
    if _scan_values(buf, key_end + 1, e, dim, orow) != e:
        return st | FALLBACK, key_end
    return st, key_end


@numba.njit(**HELPER)
def _parse_plain(buf, s, b, dim, orow):
    """The common layout ``key v1 .. vdim[ws]\n`` in one pass: the index of the line's ``\n``
    (or ``b``), the number of trailing whitespace bytes and the key's end, or ``(-1, 0, 0)`` when
    the line is anything else (then the general rule decides)."""
    k = s
    while k < b and buf[k] != 32 and buf[k] != 10:
        k += 1
    if k == s or k >= b or buf[k] != 32:
        return -1, 0, 0
    q = _scan_values(buf, k + 1, b, dim, orow)
    if q < 0:
        return -1, 0, 0
    t = q
    while t < b and WHITESPACE[buf[t]]:
        t += 1
    if t < b and buf[t] != 10:
        return -1, 0, 0
    return t, t - q, k


@numba.njit(**HELPER)
def _keep(buf, i, j, e, ke, st, row, line, key_start, key_end, line_no, status, counts):
    """Record row ``row``: line ``line`` is ``buf[i:j]``, ``e`` its end without trailing
    whitespace, ``ke`` its key's end; count its CR before the ``\n`` (``counts[0]``) and other
    trailing whitespace (``counts[1]``)."""
    cr = buf[j - 1] == 13
    if cr:
        counts[0] += 1
    if j - e > (1 if cr else 0):
        counts[1] += 1
    key_start[row] = i
    key_end[row] = ke
    line_no[row] = line
    status[row] = st


@numba.njit(**JIT)
def _parse_plain_rows(buf, i, b, line, row, dim, max_rows, out, key_start, key_end, line_no, status,
                      counts):
    """Rows of ``buf[i:b]`` from row index ``row`` (``line`` lines before ``i``) while they have
    the common layout (blank lines skipped): ``(i, line, row)`` where it stopped, at ``b``, at
    ``max_rows`` or at the first line that needs the general rule."""
    while i < b and row < max_rows:
        j, trail, ke = _parse_plain(buf, i, b, dim, out[row])
        if j < 0:
            j = _line_end(buf, i, b)
            if _stripped(buf, i, j) > i:
                return i, line, row
            line += 1  # a blank line
            i = j + 1
            continue
        line += 1
        _keep(buf, i, j, j - trail, ke, 0, row, line, key_start, key_end, line_no, status, counts)
        row += 1
        i = j + 1
    return i, line, row


@numba.njit(**JIT)
def _parse_any_rows(buf, i, b, line, row, dim, max_rows, out, key_start, key_end, line_no, status,
                    counts):
    """``_parse_plain_rows`` for lines of any shape: the general rule decides the lines the common
    layout does not fit (keys with spaces, values outside the fast path, errors)."""
    while i < b and row < max_rows:
        line += 1
        j, trail, ke = _parse_plain(buf, i, b, dim, out[row])
        if j >= 0:
            e = j - trail
            st = 0
        else:
            j = _line_end(buf, i, b)
            e = _stripped(buf, i, j)
            if e == i:
                i = j + 1
                continue
            st, ke = _parse_general(buf, i, e, dim, out[row])
        _keep(buf, i, j, e, ke, st, row, line, key_start, key_end, line_no, status, counts)
        row += 1
        i = j + 1
    return i, line, row


def parse_rows(buf, bounds, line0, row0, dim, max_rows, out, key_start, key_end, line_no, status):
    """See the numpy twin.  Chunks are parsed on parallel threads; a chunk goes to the kernel for
    lines of any shape only from its first line that needs the general rule, so that files
    without such lines never compile it."""
    buf = readonly(buf)  # a map of the file or a block read into memory: one compiled form

    def chunk(c):
        counts = np.zeros(2, np.int64)
        b = bounds[c + 1]
        args = (dim, max_rows, out, key_start, key_end, line_no, status, counts)
        i, line, row = _parse_plain_rows(buf, bounds[c], b, line0[c], row0[c], *args)
        if i < b and row < max_rows:
            _parse_any_rows(buf, i, b, line, row, *args)
        return counts

    return np.sum(threads.each(chunk, len(bounds) - 1), axis=0, dtype=np.int64)
