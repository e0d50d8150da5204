"""Text vector parsing kernels (Numba twin of ``embtool.kernels._numpy.parse``; see its
docstring for the line, field and number rules).  Chunks of lines are parsed in parallel."""
from __future__ import annotations

import llvmlite.ir as ir
import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from embtool.kernels._numba.fp import JIT, PJIT
from embtool.kernels._numpy.parse import (
    EMPTY_FIELD, FALLBACK, MAX_EXACT_MANTISSA, MAX_EXP_DIGITS, MAX_SIG_DIGITS, MAX_TOKEN,
    MAX_VALUE_CHARS, POW10,
    SPACED_KEY, TOO_FEW, TOO_MANY, WORD_TOO_LONG,
)

#: unsigned, so that Numba compares it with the uint64 mantissa exactly (a mixed signed/unsigned
#: comparison would go through float64 and round).
_MAX_M = np.uint64(MAX_EXACT_MANTISSA)


@numba.njit(inline="always", **JIT)
def _isws(c):
    return c == 32 or c == 9 or c == 13 or c == 11 or c == 12


@intrinsic
def _load_u64(typingctx, arr, idx):
    """The 8 bytes ``arr[idx:idx+8]`` as a little-endian uint64 (one unaligned load)."""
    sig = types.uint64(arr, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)

    return sig, codegen


if numba.config.DISABLE_JIT:  # kernels run as Python (coverage runs): the same bytes, slowly
    def _load_u64(arr, idx):  # noqa: F811
        return np.uint64(int.from_bytes(arr[idx:idx + 8].tobytes(), "little"))


_NL8 = np.uint64(0x0A0A0A0A0A0A0A0A)
_ONES8 = np.uint64(0x0101010101010101)
_HIGH8 = np.uint64(0x8080808080808080)


@numba.njit(**JIT)
def _line_end(buf, i, b):
    """Index of the first ``\n`` at or after ``i`` (or ``b``), 8 bytes at a time."""
    while i + 8 <= b:
        w = _load_u64(buf, i) ^ _NL8
        if ((w - _ONES8) & ~w & _HIGH8) != np.uint64(0):  # some byte of w is zero
            break
        i += 8
    while i < b and buf[i] != 10:
        i += 1
    return i


@numba.njit(**JIT)
def _stripped(buf, s, e):
    while e > s and _isws(buf[e - 1]):
        e -= 1
    return e


@numba.njit(**PJIT)
def count_rows(buf, bounds):
    """Lines and rows (non-blank lines) in each chunk."""
    nc = len(bounds) - 1
    lines = np.zeros(nc, np.int64)
    rows = np.zeros(nc, np.int64)
    for c in prange(nc):
        i, b = bounds[c], bounds[c + 1]
        nl = 0
        nr = 0
        while i < b:
            j = _line_end(buf, i, b)
            nl += 1
            if _stripped(buf, i, j) > i:
                nr += 1
            i = j + 1
        lines[c] = nl
        rows[c] = nr
    return lines, rows


_U9 = np.uint64(9)
_U10 = np.uint64(10)
_U48 = np.uint64(48)
_U0 = np.uint64(0)


@numba.njit(**JIT)
def _significant(buf, d0, dend):
    """Mantissa and significant digit count of the digits (and '.') in ``buf[d0:dend]``, leading
    zeros skipped: the slow path for more than 19 digits."""
    m = _U0
    nsig = 0
    for t in range(d0, dend):
        d = np.uint64(buf[t]) - _U48
        if d > _U9:
            continue
        if m != _U0 or d != _U0:
            nsig += 1
            if nsig <= MAX_SIG_DIGITS:
                m = m * _U10 + d
    return m, nsig


@numba.njit(inline="always", **JIT)
def _scan_number(buf, p, e):
    """Fast-path value of the number starting at ``p``: ``(ok, value, q)`` with ``q`` the first
    byte after the number's grammar ``[+-]digits[.digits][(e|E)[+-]digits]``."""
    q = p
    neg = False
    if q < e and (buf[q] == 45 or buf[q] == 43):
        neg = buf[q] == 45
        q += 1
    d0 = q
    m = _U0
    # the integer and fraction digit loops are written out: a shared helper returning (m, q)
    # measured 25% slower for the whole parse
    while q < e:
        d = np.uint64(buf[q]) - _U48
        if d > _U9:
            break
        m = m * _U10 + d
        q += 1
    ndig = q - d0
    frac = 0
    if q < e and buf[q] == 46:
        q += 1
        f0 = q
        while q < e:
            d = np.uint64(buf[q]) - _U48
            if d > _U9:
                break
            m = m * _U10 + d
            q += 1
        frac = q - f0
        ndig += frac
    ok = ndig > 0
    if ndig > MAX_SIG_DIGITS:
        m, nsig = _significant(buf, d0, q)
        ok = ok and nsig <= MAX_SIG_DIGITS
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
            ok = False
        if eneg:
            ev = -ev
    e10 = ev - frac
    v = 0.0
    if q - p > MAX_TOKEN:
        ok = False
    elif m != _U0:
        if m > _MAX_M or e10 > 22 or e10 < -22:
            ok = False
        elif e10 >= 0:
            v = np.float64(m) * POW10[e10]
        else:
            v = np.float64(m) / POW10[-e10]
    if neg:
        v = -v
    return ok, v, q


@numba.njit(**JIT)
def parse_token(buf, p, e):
    """Fast-path value of the token starting at ``p`` (it ends at the next space or ``e``):
    ``(ok, value, end)``."""
    ok, v, q = _scan_number(buf, p, e)
    if q < e and buf[q] != 32:
        ok = False
        while q < e and buf[q] != 32:
            q += 1
    return ok, v, q


@numba.njit(**JIT)
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
        ok, v, q = parse_token(buf, prev, key_end)
        if ok:
            return TOO_MANY, s
        st = SPACED_KEY
    p = key_end + 1
    for j in range(dim):
        ok, v, q = parse_token(buf, p, e)
        if not ok:
            return st | FALLBACK, key_end
        orow[j] = v
        p = q + 1
    return st, key_end


@numba.njit(inline="always", **JIT)
def _parse_plain(buf, s, b, dim, orow):
    """The common layout ``key v1 .. vdim[ws]\n`` in one pass: the index of the line's ``\n``
    (or ``b``), the number of trailing whitespace bytes and the key's end, or ``(-1, 0, 0)`` when
    the line is anything else (then the general rule decides)."""
    k = s
    while k < b and buf[k] != 32 and buf[k] != 10:
        k += 1
    if k == s or k >= b or buf[k] != 32:
        return -1, 0, 0
    p = k + 1
    for j in range(dim):
        ok, v, q = _scan_number(buf, p, b)
        if not ok:
            return -1, 0, 0
        orow[j] = v
        if q < b and buf[q] == 32 and j < dim - 1:
            p = q + 1
            continue
        if j < dim - 1:
            return -1, 0, 0
        t = q
        while t < b and _isws(buf[t]):
            t += 1
        if t < b and buf[t] != 10:
            return -1, 0, 0
        return t, t - q, k
    return -1, 0, 0


@numba.njit(**PJIT)
def parse_rows(buf, bounds, line0, row0, dim, max_rows, out, key_start, key_end, line_no, status):
    """See the numpy twin."""
    nc = len(bounds) - 1
    counts = np.zeros((nc, 2), np.int64)
    for c in prange(nc):
        i, b = bounds[c], bounds[c + 1]
        line = line0[c]
        row = row0[c]
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
            cr = buf[j - 1] == 13
            if cr:
                counts[c, 0] += 1
            if j - e > (1 if cr else 0):
                counts[c, 1] += 1
            key_start[row] = i
            key_end[row] = ke
            line_no[row] = line
            status[row] = st
            row += 1
            i = j + 1
    return counts.sum(axis=0)


@numba.njit(**JIT)
def scan_records(buf, pos, n, dim, max_records, max_word, word_start, word_end):
    """See the numpy twin."""
    nvec = 4 * dim
    p = pos
    k = 0
    crlf = 0
    while k < max_records:
        q = p
        cr = 0
        while q < n:
            if buf[q] == 10:
                q += 1
            elif buf[q] == 13 and q + 1 < n and buf[q + 1] == 10:
                q += 2
                cr += 1
            else:
                break
        if q >= n or (buf[q] == 13 and q + 1 >= n):
            break
        limit = min(n, q + max_word + 1)
        sp = q
        while sp < limit and buf[sp] != 32:
            sp += 1
        if sp >= limit:
            if q + max_word + 1 <= n:
                return k, q, crlf + cr, WORD_TOO_LONG
            break
        if sp + 1 + nvec > n:
            break
        word_start[k] = q
        word_end[k] = sp
        crlf += cr
        p = sp + 1 + nvec
        k += 1
    return k, p, crlf, 0


# -- writing: shortest float32 repr (Ryu, Adams 2018), laid out as numpy's str(np.float32) -----

_POW5_INV_BITCOUNT = 59
_POW5_BITCOUNT = 61


def _pow5bits_py(e):
    return ((e * 1217359) >> 19) + 1


def _pow5_split(i):
    p, b = 5**i, _pow5bits_py(i)
    return p >> (b - _POW5_BITCOUNT) if b > _POW5_BITCOUNT else p << (_POW5_BITCOUNT - b)


#: ceil-ish 2**k / 5**i and floor 5**i / 2**k tables of Ryu's f2s, computed exactly here.
_POW5_INV_SPLIT = np.array([(1 << (_pow5bits_py(i) - 1 + _POW5_INV_BITCOUNT)) // 5**i + 1
                            for i in range(31)], np.uint64)
_POW5_SPLIT = np.array([_pow5_split(i) for i in range(47)], np.uint64)
_U1 = np.uint64(1)
_U5 = np.uint64(5)


@numba.njit(inline="always", **JIT)
def _pow5bits(e):
    return ((e * 1217359) >> 19) + 1


@numba.njit(inline="always", **JIT)
def _mul_shift32(m, factor, shift):
    s = ((m * (factor & np.uint64(0xFFFFFFFF))) >> np.uint64(32)) + m * (factor >> np.uint64(32))
    return s >> np.uint64(shift - 32)


@numba.njit(**JIT)
def _pow5_factor(v):
    c = 0
    while v % _U5 == _U0:
        v //= _U5
        c += 1
    return c


@numba.njit(**JIT)
def _shortest(bits):
    """Ryu f2s: the shortest ``(digits, exp10)`` that rounds back to the finite nonzero float32
    with these bits (ties to the closest, then even), digits possibly with trailing zeros."""
    ieee_m = bits & np.uint64(0x7FFFFF)
    ieee_e = np.int64((bits >> np.uint64(23)) & np.uint64(0xFF))
    if ieee_e == 0:
        e2 = 1 - 127 - 23 - 2
        m2 = ieee_m
    else:
        e2 = ieee_e - 127 - 23 - 2
        m2 = ieee_m | np.uint64(1 << 23)
    even = (m2 & _U1) == _U0
    mv = np.uint64(4) * m2
    mp = mv + np.uint64(2)
    mmshift = _U1 if (ieee_m != _U0 or ieee_e <= 1) else _U0
    mm = mv - _U1 - mmshift
    vm_tz = False
    vr_tz = False
    last = _U0
    if e2 >= 0:
        q = (e2 * 78913) >> 18
        e10 = q
        i = -e2 + q + _POW5_INV_BITCOUNT + _pow5bits(q) - 1
        vr = _mul_shift32(mv, _POW5_INV_SPLIT[q], i)
        vp = _mul_shift32(mp, _POW5_INV_SPLIT[q], i)
        vm = _mul_shift32(mm, _POW5_INV_SPLIT[q], i)
        if q != 0 and (vp - _U1) // _U10 <= vm // _U10:
            l = _POW5_INV_BITCOUNT + _pow5bits(q - 1) - 1
            last = _mul_shift32(mv, _POW5_INV_SPLIT[q - 1], -e2 + q - 1 + l) % _U10
        if q <= 9:
            if mv % _U5 == _U0:
                vr_tz = _pow5_factor(mv) >= q
            elif even:
                vm_tz = _pow5_factor(mm) >= q
            elif _pow5_factor(mp) >= q:
                vp -= _U1
    else:
        q = (-e2 * 732923) >> 20
        e10 = q + e2
        i = -e2 - q
        j = q - (_pow5bits(i) - _POW5_BITCOUNT)
        vr = _mul_shift32(mv, _POW5_SPLIT[i], j)
        vp = _mul_shift32(mp, _POW5_SPLIT[i], j)
        vm = _mul_shift32(mm, _POW5_SPLIT[i], j)
        if q != 0 and (vp - _U1) // _U10 <= vm // _U10:
            j = q - 1 - (_pow5bits(i + 1) - _POW5_BITCOUNT)
            last = _mul_shift32(mv, _POW5_SPLIT[i + 1], j) % _U10
        if q <= 1:
            vr_tz = True
            if even:
                vm_tz = mmshift == _U1
            else:
                vp -= _U1
        elif q < 31:
            vr_tz = (mv & ((_U1 << np.uint64(q - 1)) - _U1)) == _U0
    removed = 0
    if vm_tz or vr_tz:
        while vp // _U10 > vm // _U10:
            vm_tz = vm_tz and vm % _U10 == _U0
            vr_tz = vr_tz and last == _U0
            last = vr % _U10
            vr //= _U10
            vp //= _U10
            vm //= _U10
            removed += 1
        if vm_tz:
            while vm % _U10 == _U0:
                vr_tz = vr_tz and last == _U0
                last = vr % _U10
                vr //= _U10
                vp //= _U10
                vm //= _U10
                removed += 1
        if vr_tz and last == _U5 and vr % np.uint64(2) == _U0:
            last = np.uint64(4)
        up = (vr == vm and (not even or not vm_tz)) or last >= _U5
    else:
        while vp // _U10 > vm // _U10:
            last = vr % _U10
            vr //= _U10
            vp //= _U10
            vm //= _U10
            removed += 1
        up = vr == vm or last >= _U5
    return vr + (_U1 if up else _U0), e10 + removed


@numba.njit(**JIT)
def _put_ascii(out, pos, c0, c1, c2):
    out[pos] = c0
    out[pos + 1] = c1
    out[pos + 2] = c2
    return pos + 3


@numba.njit(**JIT)
def _put_f32(out, pos, x, bits):
    """``str(numpy.float32(x))`` into ``out[pos:]``; returns the end.  numpy prints positional
    digits for 1e-4 <= |x| < 1e6 (comparing the exact value) and scientific otherwise, always with
    the shortest round-trip digits."""
    if (bits & np.uint64(0x7F800000)) == np.uint64(0x7F800000):
        if (bits & np.uint64(0x7FFFFF)) != _U0:
            return _put_ascii(out, pos, 110, 97, 110)  # nan, whatever its sign
        if bits >> np.uint64(31):
            out[pos] = 45
            pos += 1
        return _put_ascii(out, pos, 105, 110, 102)  # inf
    if bits >> np.uint64(31):
        out[pos] = 45
        pos += 1
    mag = bits & np.uint64(0x7FFFFFFF)
    if mag == _U0:
        return _put_ascii(out, pos, 48, 46, 48)  # 0.0
    d, e10 = _shortest(mag)
    while d % _U10 == _U0:
        d //= _U10
        e10 += 1
    n = 1
    t = d
    while t >= _U10:
        t //= _U10
        n += 1
    lead = e10 + n - 1  # decimal exponent of the first digit
    ax = abs(np.float64(x))
    if ax >= 1e-4 and ax < 1e6:
        if lead < 0:
            out[pos] = 48
            out[pos + 1] = 46
            pos += 2
            for _ in range(-lead - 1):
                out[pos] = 48
                pos += 1
            return _put_digits(out, pos, d, n, n)
        if n <= lead + 1:
            pos = _put_digits(out, pos, d, n, n)
            for _ in range(lead + 1 - n):
                out[pos] = 48
                pos += 1
            out[pos] = 46
            out[pos + 1] = 48
            return pos + 2
        return _put_digits(out, pos, d, n, lead + 1)
    pos = _put_digits(out, pos, d, n, 1 if n > 1 else n)
    out[pos] = 101
    out[pos + 1] = 45 if lead < 0 else 43
    pos += 2
    a = abs(lead)
    if a >= 100:
        out[pos] = 48 + a // 100
        pos += 1
    out[pos] = 48 + (a // 10) % 10
    out[pos + 1] = 48 + a % 10
    return pos + 2


@numba.njit(**JIT)
def _put_digits(out, pos, d, n, point):
    """The ``n`` digits of ``d`` with a decimal point after the first ``point`` (none if
    ``point == n``)."""
    width = n + (1 if point < n else 0)
    k = pos + width - 1
    for i in range(n):
        if i == n - point and point < n:
            out[k] = 46
            k -= 1
        out[k] = 48 + np.uint8(d % _U10)
        d //= _U10
        k -= 1
    return pos + width


@numba.njit(**PJIT)
def format_rows(vec, key_data, key_off, out):
    """See the numpy twin (float32 rows only).  Rows are formatted in parallel into slots of the
    maximal size, then packed."""
    n, dim = vec.shape
    bits = vec.view(np.uint32)
    slot = dim * MAX_VALUE_CHARS + 2
    starts = np.empty(n + 1, np.int64)
    starts[0] = 0
    for r in range(n):
        starts[r + 1] = starts[r] + (key_off[r + 1] - key_off[r]) + slot
    ends = np.empty(n, np.int64)
    for r in prange(n):
        pos = starts[r]
        for t in range(key_off[r], key_off[r + 1]):
            out[pos] = key_data[t]
            pos += 1
        for j in range(dim):
            out[pos] = 32
            pos = _put_f32(out, pos + 1, vec[r, j], np.uint64(bits[r, j]))
        out[pos] = 10
        ends[r] = pos + 1
    w = 0
    for r in range(n):
        for t in range(starts[r], ends[r]):
            out[w] = out[t]
            w += 1
    return w
