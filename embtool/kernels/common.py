"""What the two kernel backends share: the constants of their contracts, and the numpy helpers
both twins (and the library around them) use.  Importing this never imports Numba.

One home per fact: a constant a twin or a caller needs is defined here and imported from here.
"""
from __future__ import annotations

import numpy as np

f32 = np.float32
f64 = np.float64

# -- text parsing (``parse_rows`` and ``parse_tokens``; the rules are in ``_numpy/parse.py``) ----

#: Row status bits set by ``parse_rows``.
FALLBACK = 1  # a value outside the exact fast path: the caller parses the row with float()
SPACED_KEY = 2  # the key holds spaces (GloVe 840B)
TOO_FEW = 4  # fewer than ``dim`` values
TOO_MANY = 8  # the field before the vector is a number: too many values
EMPTY_FIELD = 16  # a leading space or two spaces in a row
ERRORS = TOO_FEW | TOO_MANY | EMPTY_FIELD

#: the bytes that end a line's content when stripped (``bytes.isspace()`` without ``\n``, which
#: ends the line): space, tab, CR, VT, FF, as gensim's ``rstrip()`` removes them; a table by byte.
WHITESPACE = np.zeros(256, np.bool_)
WHITESPACE[[32, 9, 13, 11, 12]] = True
#: longest token the fast path accepts; callers pad blocks with this many spare bytes.
MAX_TOKEN = 32
#: digits of a mantissa, leading zeros included, that fit a uint64 exactly (10**19 < 2**64);
#: longer mantissas (rare: "%.30f" spellings) take the fallback.
MAX_DIGITS = 19
#: exponent digits the fast path reads (longer exponents go to the fallback).
MAX_EXP_DIGITS = 4
#: largest mantissa that is an exact double (Clinger's fast path).
MAX_EXACT_MANTISSA = 2**53
#: 10**0 .. 10**22: the powers of ten that are exact doubles.
POW10 = np.array([10.0**k for k in range(23)])

# -- word2vec binary (``scan_records``) ---------------------------------------------------------

#: ``scan_records`` status: no space within ``max_word`` bytes where a word starts.
WORD_TOO_LONG = 1

# -- text formatting (``format_rows``) ---------------------------------------------------------

#: bytes ``format_rows`` may need per value: separator + "-d.dddddddde-dd" / "-0.000ddddddddd".
MAX_VALUE_CHARS = 16

# -- top-k keys (``select``) -------------------------------------------------------------------
#
# A candidate (score, row) is packed into one int64 *key* whose integer order is the ranking
# order: higher score first, NaN after every number, equal scores by lower row id.  The ranking is
# total, so "the k best" is one well-defined set whatever the algorithm, and both backends return
# bit-identical keys.  The high 32 bits hold the float32 score mapped to an order-preserving int32
# (-0.0 folded into +0.0, every NaN mapped to ``NAN_RANK``); the low 32 bits hold
# ``MAX_ROW - row`` so that a lower row id is the larger key.  Row ids must be below ``MAX_ROW``.

#: an unfilled slot; no real candidate maps to it.
EMPTY = np.iinfo(np.int64).min
MAX_ROW = 0xFFFFFFFF
#: the rank of every NaN score: below every number's.
NAN_RANK = np.iinfo(np.int32).min


def encode_keys(scores, rows):
    """Keys of ``scores`` (float32, any shape) at row ids ``rows`` (int64, broadcastable)."""
    s = np.asarray(scores, f32) + f32(0.0)  # -0.0 + 0.0 == +0.0
    bits = s.view(np.int32).astype(np.int64)
    rank = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    rank = np.where(np.isnan(s), np.int64(NAN_RANK), rank)
    return (rank << 32) | (MAX_ROW - np.asarray(rows, np.int64))


# -- exactly rounded float32 arithmetic in numpy -------------------------------------------------
#
# PyTorch's CPU kernels use fused multiply-add (one rounding) in many places (docs/semantics.md
# §3.2, §5.1, §6.2).  numpy has no fma, so ``fma32`` computes it exactly: the float64 product of
# two float32 values is exact (48-bit significand); the float64 sum rounded to float32 is the fma
# except when it double-rounds, which can only happen when the float64 sum is exactly a float32
# midpoint (or subnormal): those values are redone with round-to-odd.  The Numba twins use
# LLVM's fma intrinsic instead, and this function as their fallback when run as plain Python.

def fma32(a, b, c):
    """Correctly rounded float32 ``a*b + c`` (broadcasting, float32 inputs)."""
    p = np.multiply(np.asarray(a, f32), np.asarray(b, f32), dtype=f64)  # exact
    s = p + np.asarray(c, f32)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.atleast_1d(s.astype(f32))
    # Rounding the float64 sum to float32 can only go wrong (double rounding) when the sum landed
    # exactly halfway between two float32 values (the 29 bits float32 drops are 1000...0), or in
    # float32's subnormal range where fewer bits are kept: only those few values take the exact path.
    s1 = np.atleast_1d(s)
    bits = s1.view(np.int64)
    suspect = ((bits & 0x1FFFFFFF) == 0x10000000) | (np.abs(s1) < 2.0**-125)
    if suspect.any():
        pa, cb = np.broadcast_arrays(np.atleast_1d(p), np.atleast_1d(np.asarray(c, f32)))
        out = out.copy() if not out.flags.writeable else out
        out[suspect] = _fma32_exact(pa[suspect], cb[suspect].astype(f64))
    return out.reshape(np.shape(s))


def _fma32_exact(p, c64):
    """float32(p + c64) correctly rounded, for exact float64 products ``p``: the float64 sum is made
    round-to-odd with a TwoSum error term, and rounding a round-to-odd float64 to float32 is
    correct because 53 >= 24 + 2."""
    s = p + c64
    with np.errstate(invalid="ignore", over="ignore"):
        bb = s - p
        e = (p - (s - bb)) + (c64 - bb)
        bits = s.view(np.int64).copy()
        inexact = np.isfinite(e) & (e != 0) & ((bits & 1) == 0)
        away = (e > 0) == (s > 0)
        bits[inexact] += np.where(away[inexact], 1, -1)  # one float64 ulp towards the exact value
        return bits.view(f64).astype(f32)
