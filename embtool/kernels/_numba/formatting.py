"""Vectors as text: the shortest float32 repr, as ``str(numpy.float32(v))`` lays it out (Numba
twin of ``_numpy/formatting.py``, float32 only).

The digits are Ryu's (Ulf Adams, "Ryu: fast float-to-string conversion", PLDI 2018; the
reference C implementation's ``f2s.c``): the shortest decimal that reads back as the same float32,
correctly rounded, computed with 64-bit integer multiplications by precomputed powers of five
instead of big-number arithmetic.  numpy's ``str`` uses Dragon4 in the same "shortest unique"
mode, so the digits agree; ``_put_f32`` then lays them out as numpy does.
"""
from __future__ import annotations

import numba
import numpy as np
from numba.extending import register_jitable

from embtool.kernels._numba import JIT, threads
from embtool.kernels.common import MAX_VALUE_CHARS

# Ryu works on mv = 4 * m2 (the float is m2 * 2**e2 with a 24-bit m2): the two extra bits hold the
# half-way points to the neighbouring floats, mp = mv + 2 and mm = mv - 1 or - 2, so the interval
# of decimals that read back as the same float is [mm, mp] * 2**(e2 - 2).  It scales the three by
# 10**-q (q = how many decimal digits can surely be dropped), as one multiply-and-shift each by a
# 64-bit power of five from the tables below.

#: ``_pow5bits(e)`` = ceil(log2(5**e)) for 1 <= e (1 for e = 0): 1217359 / 2**19 is log2(5)
#: rounded up, exact for every e Ryu needs (up to 3528).
_LOG2_5_NUM, _LOG2_5_SHIFT = 1217359, 19
#: floor(e * log10(2)) = (e * 78913) >> 18 and floor(e * log10(5)) = (e * 732923) >> 20: the
#: number of decimal digits dropped for a power of two (exact for 0 <= e <= 1650 and 2620).
_LOG10_2_NUM, _LOG10_2_SHIFT = 78913, 18
_LOG10_5_NUM, _LOG10_5_SHIFT = 732923, 20
#: bits kept of 2**k / 5**q (``_POW5_INV_SPLIT``, for e2 >= 0) and of 5**i (``_POW5_SPLIT``, for
#: e2 < 0): 59 and 61, f2s.c's FLOAT_POW5_INV_BITCOUNT and FLOAT_POW5_BITCOUNT, the precision
#: Ryu's paper proves enough for float32.
_POW5_INV_BITCOUNT = 59
_POW5_BITCOUNT = 61
#: float32 fields: 23 mantissa bits, exponent bias 127; the 2 extra bits are those of mv = 4 * m2.
_MANTISSA_BITS, _BIAS = 23, 127
_E2_SHIFT = _BIAS + _MANTISSA_BITS + 2


@register_jitable  # plain Python for the tables below, compiled inline in the kernels
def _pow5bits(e):
    return ((e * _LOG2_5_NUM) >> _LOG2_5_SHIFT) + 1


def _pow5_split(i):
    """5**i scaled to exactly ``_POW5_BITCOUNT`` bits (its top bits)."""
    p, b = 5**i, _pow5bits(i)
    return p >> (b - _POW5_BITCOUNT) if b > _POW5_BITCOUNT else p << (_POW5_BITCOUNT - b)


#: The tables of f2s.c, computed here exactly with Python integers rather than copied:
#: 2**(pow5bits(q) - 1 + 59) // 5**q + 1 (a 59-bit reciprocal of 5**q, rounded up) for the
#: q = 0..30 a float32 with e2 >= 0 can need (e2 <= 102, q = floor(e2 * log10(2)) <= 30), and the
#: top 61 bits of 5**i for the i = 0..46 of e2 < 0 (e2 >= -151, i = -e2 - floor(-e2 * log10(5))).
_POW5_INV_SPLIT = np.array([(1 << (_pow5bits(q) - 1 + _POW5_INV_BITCOUNT)) // 5**q + 1
                            for q in range(31)], np.uint64)
_POW5_SPLIT = np.array([_pow5_split(i) for i in range(47)], np.uint64)
#: rows per thread below which ``format_rows`` runs on one thread.
GRAIN = 256
_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U5 = np.uint64(5)
_U10 = np.uint64(10)


@numba.njit(inline="always", **JIT)
def _mul_shift32(m, factor, shift):
    """``(m * factor) >> shift`` for a 32-bit ``m``, a 64-bit ``factor`` and ``shift > 32``,
    without the 96-bit product (Ryu's mulShift32)."""
    s = ((m * (factor & np.uint64(0xFFFFFFFF))) >> np.uint64(32)) + m * (factor >> np.uint64(32))
    return s >> np.uint64(shift - 32)


@numba.njit(inline="always", **JIT)
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
    if ieee_e == 0:  # subnormal
        e2 = 1 - _E2_SHIFT
        m2 = ieee_m
    else:
        e2 = ieee_e - _E2_SHIFT
        m2 = ieee_m | np.uint64(1 << _MANTISSA_BITS)
    even = (m2 & _U1) == _U0
    mv = np.uint64(4) * m2
    mp = mv + np.uint64(2)
    mmshift = _U1 if (ieee_m != _U0 or ieee_e <= 1) else _U0
    mm = mv - _U1 - mmshift
    vm_tz = False
    vr_tz = False
    last = _U0
    if e2 >= 0:
        q = (e2 * _LOG10_2_NUM) >> _LOG10_2_SHIFT
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
        q = (-e2 * _LOG10_5_NUM) >> _LOG10_5_SHIFT
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


@numba.njit(inline="always", **JIT)
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


@numba.njit(**JIT)
def _format_slice(vec, bits, key_data, key_off, lo, hi, out, pos):
    """Rows ``lo..hi-1`` as ``key v1 .. vdim\n`` into ``out[pos:]``; returns the end."""
    dim = vec.shape[1]
    for r in range(lo, hi):
        for t in range(key_off[r], key_off[r + 1]):
            out[pos] = key_data[t]
            pos += 1
        for j in range(dim):
            out[pos] = 32
            pos = _put_f32(out, pos + 1, vec[r, j], np.uint64(bits[r, j]))
        out[pos] = 10
        pos += 1
    return pos


def format_rows(vec, key_data, key_off, out):
    """See the numpy twin (float32 rows only).  Each thread formats a slice of the rows from where
    the slice would start if every earlier row took its maximal size; the slices are then moved
    together."""
    n, dim = vec.shape
    bits = vec.view(np.uint32)
    slot = dim * MAX_VALUE_CHARS + 2

    def start(r):
        return int(key_off[r] - key_off[0]) + r * slot

    def part(lo, hi):
        return start(lo), _format_slice(vec, bits, key_data, key_off, lo, hi, out, start(lo))

    w = 0
    for s, e in threads.run(part, n, GRAIN):
        if s != w:
            out[w:w + e - s] = out[s:e]  # numpy copies overlapping ranges safely
        w += e - s
    return w
