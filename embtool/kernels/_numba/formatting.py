"""Vectors as text: the shortest float32 repr, as ``str(numpy.float32(v))`` lays it out (Numba
twin of ``_numpy/formatting.py``, float32 only).

The digits are Ryu's (Ulf Adams, "Ryu: fast float-to-string conversion", PLDI 2018; the
reference C implementation's ``f2s.c``): the shortest decimal that reads back as the same float32,
correctly rounded, computed with 64-bit integer multiplications by precomputed powers of five
instead of big-number arithmetic.  numpy's ``str`` uses Dragon4 in the same "shortest unique"
mode, so the digits agree; they are then laid out as numpy does.
"""
from __future__ import annotations

import numba
import numpy as np

from embtool.kernels._numba import JIT, readonly, threads
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


def _pow5bits(e):
    """ceil(log2(5**e)) (1 for e = 0)."""
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
                            for q in range(31)], np.int64)
_POW5_SPLIT = np.array([_pow5_split(i) for i in range(47)], np.int64)
#: numpy writes |x| positionally when 1e-4 <= |x| < 1e6 (the float32 value compared exactly):
#: the magnitude bits of the first float32 at or above 1e-4, and those of 1e6 (exact in float32).
_POSITIONAL_LO = int(np.float32(1e-4).view(np.uint32)) + int(np.float64(np.float32(1e-4)) < 1e-4)
_POSITIONAL_HI = int(np.float32(1e6).view(np.uint32))
#: rows per thread below which ``format_rows`` runs on one thread.
GRAIN = 256


@numba.njit(**JIT)
def _format_slice(bits, key_data, key_off, lo, hi, out, pos):
    """Rows ``lo..hi-1`` as ``key v1 .. vdim\n`` into ``out[pos:]``; returns the end.

    Written compactly, as one function: a fresh install compiles it on the first export, and the
    compile time grows with the code (helper functions, Ryu's separate loop for the common case
    and a branch per numpy layout each cost seconds more, measured)."""
    dim = bits.shape[1]
    for r in range(lo, hi):
        for t in range(key_off[r], key_off[r + 1]):
            out[pos] = key_data[t]
            pos += 1
        for j in range(dim):
            out[pos] = 32
            pos += 1
            b = np.int64(bits[r, j])
            mag = b & 0x7FFFFFFF
            if b != mag:
                out[pos] = 45  # "-", also of -0.0 and -inf (not of nan)
                pos += 1 if mag <= 0x7F800000 else 0
            if mag >= 0x7F800000 or mag == 0:  # inf, nan, 0.0
                c0, c1, c2 = ((48, 46, 48) if mag == 0 else (105, 110, 102) if mag == 0x7F800000
                              else (110, 97, 110))
                out[pos] = c0
                out[pos + 1] = c1
                out[pos + 2] = c2
                pos += 3
                continue
            # -- Ryu f2s: the shortest digits d * 10**e10 that read back as this float32 -------
            ieee_m = mag & 0x7FFFFF
            ieee_e = mag >> 23
            e2 = (1 if ieee_e == 0 else ieee_e) - _E2_SHIFT
            m2 = ieee_m if ieee_e == 0 else ieee_m | (1 << _MANTISSA_BITS)
            even = (m2 & 1) == 0
            mv = 4 * m2
            mp = mv + 2
            mmshift = 1 if (ieee_m != 0 or ieee_e <= 1) else 0
            mm = mv - 1 - mmshift
            # scale by 10**-q: f a 59-bit reciprocal of 5**q (e2 >= 0) or the top 61 bits of
            # 5**i (e2 < 0); (m * f) >> sh is Ryu's mulShift32, whose two partial products stay
            # below 2**59 for m < 2**27, so int64 arithmetic is exact
            if e2 >= 0:
                q = (e2 * _LOG10_2_NUM) >> _LOG10_2_SHIFT
                e10 = q
                f = _POW5_INV_SPLIT[q]
                sh = -e2 + q + _POW5_INV_BITCOUNT + ((q * _LOG2_5_NUM) >> _LOG2_5_SHIFT) - 32
            else:
                q = (-e2 * _LOG10_5_NUM) >> _LOG10_5_SHIFT
                e10 = q + e2
                i = -e2 - q
                f = _POW5_SPLIT[i]
                sh = q - ((i * _LOG2_5_NUM) >> _LOG2_5_SHIFT) - 1 + _POW5_BITCOUNT - 32
            flo, fhi = f & 0xFFFFFFFF, f >> 32
            vr = (((mv * flo) >> 32) + mv * fhi) >> sh
            vp = (((mp * flo) >> 32) + mp * fhi) >> sh
            vm = (((mm * flo) >> 32) + mm * fhi) >> sh
            last = 0  # the digit removed last from vr
            if q != 0 and (vp - 1) // 10 <= vm // 10:  # no digit will be removed: compute it
                if e2 >= 0:
                    f = _POW5_INV_SPLIT[q - 1]
                    sh = (-e2 + q - 1 + _POW5_INV_BITCOUNT
                          + (((q - 1) * _LOG2_5_NUM) >> _LOG2_5_SHIFT) - 32)
                else:
                    f = _POW5_SPLIT[i + 1]
                    sh = q - 1 - (((i + 1) * _LOG2_5_NUM) >> _LOG2_5_SHIFT) - 1 + _POW5_BITCOUNT - 32
                last = ((((mv * (f & 0xFFFFFFFF)) >> 32) + mv * (f >> 32)) >> sh) % 10
            # whether the dropped digits of vm / vr are all zeros (exact bounds)
            vm_tz = False
            vr_tz = False
            if e2 >= 0:
                if q <= 9:
                    # how often 5 divides mv (or mm, mp)
                    v = mv if mv % 5 == 0 else (mm if even else mp)
                    c = 0
                    while v % 5 == 0:
                        v //= 5
                        c += 1
                    if mv % 5 == 0:
                        vr_tz = c >= q
                    elif even:
                        vm_tz = c >= q
                    elif c >= q:
                        vp -= 1
            elif q <= 1:
                vr_tz = True
                if even:
                    vm_tz = mmshift == 1
                else:
                    vp -= 1
            elif q < 31:
                vr_tz = (mv & ((1 << (q - 1)) - 1)) == 0
            # drop digits while the interval still holds a shorter decimal (then, if vm is
            # exact, its trailing zeros); Ryu's faster loop for the common case (no exact bound)
            # computes the same
            while vp // 10 > vm // 10 or (vm_tz and vm % 10 == 0):
                vm_tz = vm_tz and vm % 10 == 0
                vr_tz = vr_tz and last == 0
                last = vr % 10
                vr //= 10
                vp //= 10
                vm //= 10
                e10 += 1
            if vr_tz and last == 5 and vr % 2 == 0:
                last = 4  # an exact tie rounds to even
            d = vr + (1 if (vr == vm and (not even or not vm_tz)) or last >= 5 else 0)
            # -- numpy's layout: positional for 1e-4 <= |x| < 1e6, else scientific -----------
            while d % 10 == 0:
                d //= 10
                e10 += 1
            n = 1
            t = d
            while t >= 10:
                t //= 10
                n += 1
            lead = e10 + n - 1  # decimal exponent of the first digit
            positional = mag >= _POSITIONAL_LO and mag < _POSITIONAL_HI
            # the places 10**top .. 10**bottom of d * 10**(e10 - shift) are written, digits of
            # d or zeros, with "." between 10**0 and 10**-1: "0.000ddd", "ddd00.0", "dd.ddd"
            # positionally, "d.ddd" or "d" before the exponent
            shift = 0 if positional else lead
            top = lead - shift if lead > shift else 0  # (not max(): compiled separately)
            bottom = e10 - shift
            if bottom > (-1 if positional else 0):
                bottom = -1 if positional else 0
            k = pos + top - bottom + (1 if bottom < 0 else 0)  # the last place's byte
            pos = k + 1
            for place in range(bottom, top + 1):
                if place + shift >= e10 and d:
                    out[k] = 48 + d % 10
                    d //= 10
                else:
                    out[k] = 48
                k -= 1
                if place == -1:
                    out[k] = 46
                    k -= 1
            if not positional:
                out[pos] = 101
                out[pos + 1] = 45 if lead < 0 else 43
                a = abs(lead)
                if a >= 100:
                    out[pos + 2] = 48 + a // 100
                    pos += 1
                out[pos + 2] = 48 + (a // 10) % 10
                out[pos + 3] = 48 + a % 10
                pos += 4
        out[pos] = 10
        pos += 1
    return pos


def format_rows(vec, key_data, key_off, out):
    """See the numpy twin (float32 rows only).  Each thread formats a slice of the rows from where
    the slice would start if every earlier row took its maximal size; the slices are then moved
    together."""
    n, dim = vec.shape
    bits = readonly(vec.view(np.uint32))
    slot = dim * MAX_VALUE_CHARS + 2

    def start(r):
        return int(key_off[r] - key_off[0]) + r * slot

    def part(lo, hi):
        return start(lo), _format_slice(bits, key_data, key_off, lo, hi, out, start(lo))

    w = 0
    for s, e in threads.run(part, n, GRAIN):
        if s != w:
            out[w:w + e - s] = out[s:e]  # numpy copies overlapping ranges safely
        w += e - s
    return w
