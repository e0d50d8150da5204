"""Text vector parsing kernels (numpy twin of ``_numba/parse.py``).

A block is a uint8 buffer holding whole lines; ``bounds`` (computed by the caller) cuts it into
chunks that start right after a ``\\n``.  Lines end at byte ``\\n`` only; a line is stripped of
trailing ``bytes.isspace()`` bytes (space, tab, CR, VT, FF: what gensim's ``rstrip()`` removes);
an empty stripped line is blank (not a row).  Fields are separated by U+0020 only.

A row is ``key value_1 ... value_dim``: the last ``dim`` fields are the vector and everything
before them is the key (GloVe 840B has keys containing spaces).  The row ``status`` says what the
caller must still do:

* ``FALLBACK``: a value token is outside the exact fast path below; the caller parses the row's
  values with Python ``float()`` (values of such a row are unspecified here);
* ``SPACED_KEY``: the key holds spaces (reported);
* ``TOO_FEW`` / ``TOO_MANY`` / ``EMPTY_FIELD``: errors (ragged row; a number just before the vector,
  i.e. a row with too many values; a leading space or two consecutive spaces).  For error rows
  ``key_end == key_start``.

Fast path (Clinger): a token ``[+-]digits[.digits][(e|E)[+-]d{1,4}]`` of at most ``MAX_TOKEN``
bytes with at most 19 digits (leading zeros included), mantissa ``m <= 2**53`` and decimal exponent
``|e10| <= 22`` is exactly ``m * 10**e10`` (or ``m / 10**-e10``) computed in double: both
operands are exact doubles and IEEE multiplication/division round once, so the result is the
correctly rounded double, i.e. ``float(token)``; storing it into a float32 array rounds once more,
giving ``numpy.float32(float(token))`` as gensim does.  Every other token goes to ``FALLBACK``:
never an approximate path.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from embtool.kernels.common import (
    EMPTY_FIELD, ERRORS, FALLBACK, MAX_DIGITS, MAX_EXACT_MANTISSA, MAX_EXP_DIGITS, MAX_TOKEN,
    POW10, SPACED_KEY, TOO_FEW, TOO_MANY, WHITESPACE,
)

#: rows parsed per vectorised batch (bounds the temporaries to a few MB).
_BATCH_VALUES = 1 << 18


def _lines(buf, bounds):
    """Start, end (excluding ``\\n``) and chunk of every line in ``buf[bounds[0]:bounds[-1]]``."""
    a, b = int(bounds[0]), int(bounds[-1])
    nl = np.flatnonzero(buf[a:b] == 10) + a
    ends = nl if (b == a or buf[b - 1] == 10) else np.append(nl, b)
    starts = np.concatenate(([a], nl + 1))[: len(ends)]
    chunk = np.searchsorted(bounds, starts, side="right") - 1
    return starts, ends, chunk


def _stripped_ends(buf, starts, ends):
    e = ends.copy()
    todo = np.flatnonzero(e > starts)
    while todo.size:
        ws = WHITESPACE[buf[e[todo] - 1]]
        todo = todo[ws]
        e[todo] -= 1
        todo = todo[e[todo] > starts[todo]]
    return e


def count_rows(buf, bounds):
    """Lines and rows (non-blank lines) in each chunk."""
    nc = len(bounds) - 1
    starts, ends, chunk = _lines(buf, bounds)
    blank = _stripped_ends(buf, starts, ends) == starts
    lines = np.bincount(chunk, minlength=nc).astype(np.int64)
    rows = np.bincount(chunk[~blank], minlength=nc).astype(np.int64)
    return lines, rows


def parse_tokens(buf, starts, lens):
    """Fast-path values of tokens ``buf[s:s+len]``: ``(ok, value)`` (float64); see module doc."""
    n = len(starts)
    width = int(min(max(int(lens.max()) if n else 1, 1), MAX_TOKEN))
    win = sliding_window_view(buf, width)[starts]
    cols = np.arange(width)
    inside = cols < lens[:, None]
    c = np.where(inside, win, 0)
    neg = c[:, 0] == 45
    signed = neg | (c[:, 0] == 43)
    digit = (c >= 48) & (c <= 57)
    is_e = ((c | 32) == 101) & inside
    has_e = is_e.any(1)
    epos = np.where(has_e, is_e.argmax(1), lens)
    mant = inside & (cols < epos[:, None]) & ~((cols == 0) & signed[:, None])
    dot = mant & (c == 46)
    ndot = dot.sum(1)
    dpos = np.where(ndot > 0, dot.argmax(1), epos)
    mdig = mant & digit
    bad = (mant & ~digit & ~dot).any(1) | (ndot > 1)
    frac = (mdig & (cols > dpos[:, None])).sum(1)
    ndig = mdig.sum(1)
    after = inside & (cols > epos[:, None])
    epos1 = (cols == (epos + 1)[:, None]) & after
    esign = epos1 & ((c == 43) | (c == 45))
    eneg = (esign & (c == 45)).any(1)
    edig = after & ~esign
    nexp = (edig & digit).sum(1)
    bad |= (edig & ~digit).any(1) | (has_e & ((nexp == 0) | (nexp > MAX_EXP_DIGITS)))
    m = np.zeros(n, np.uint64)
    ev = np.zeros(n, np.int64)
    d = (c - 48).astype(np.uint64)
    with np.errstate(over="ignore"):
        for j in range(width):
            m = np.where(mdig[:, j], m * np.uint64(10) + d[:, j], m)
            ev = np.where(edig[:, j] & (nexp <= MAX_EXP_DIGITS), ev * 10 + d[:, j].astype(np.int64), ev)
    e10 = np.where(eneg, -ev, ev) - frac
    ok = ~bad & (lens <= MAX_TOKEN) & (ndig > 0) & (ndig <= MAX_DIGITS)
    ok &= (m == 0) | ((m <= MAX_EXACT_MANTISSA) & (np.abs(e10) <= 22))
    mf = m.astype(np.float64)
    scale = POW10[np.clip(np.abs(e10), 0, 22)]
    val = np.where(e10 >= 0, mf * scale, mf / scale)
    val = np.where(m == 0, 0.0, val)
    return ok, np.where(neg, -val, val)


def _line_shape(buf, s, e, dim):
    """Status and key end of one line by the general rule (used for every non-plain line)."""
    sp = np.flatnonzero(buf[s:e] == 32) + s
    if buf[s] == 32 or (np.diff(sp) == 1).any():
        return EMPTY_FIELD, s
    if len(sp) < dim:
        return TOO_FEW, s
    key_end = int(sp[len(sp) - dim])
    if len(sp) > dim:
        prev = int(sp[len(sp) - dim - 1]) + 1
        ok, _ = parse_tokens(buf, np.array([prev]), np.array([key_end - prev]))
        if ok[0]:
            return TOO_MANY, s
        return SPACED_KEY, key_end
    return 0, key_end


def parse_rows(buf, bounds, line0, row0, dim, max_rows, out, key_start, key_end, line_no, status):
    """Parse every row of the block whose index (``row0[chunk]`` + position) is below
    ``max_rows`` into ``out[row]``; fill the per-row arrays; return ``[crlf_rows, trailing_ws_rows]``.
    ``line_no`` is 1-based within the block (``line0[chunk]`` lines precede the chunk)."""
    starts, ends, chunk = _lines(buf, bounds)
    lineno = line0[chunk] + (np.arange(len(starts)) - np.searchsorted(chunk, chunk)) + 1
    se = _stripped_ends(buf, starts, ends)
    keep = se > starts
    starts, ends, se, chunk, lineno = starts[keep], ends[keep], se[keep], chunk[keep], lineno[keep]
    rows = row0[chunk] + (np.arange(len(starts)) - np.searchsorted(chunk, chunk))
    keep = rows < max_rows
    starts, ends, se, rows, lineno = starts[keep], ends[keep], se[keep], rows[keep], lineno[keep]
    cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
    counts = np.array([cr.sum(), ((ends - se) > cr).sum()], np.int64)
    key_start[rows] = starts
    line_no[rows] = lineno
    a, b = int(bounds[0]), int(bounds[-1])
    sp = np.flatnonzero(buf[a:b] == 32) + a
    i0 = np.searchsorted(sp, starts)
    nsp = np.searchsorted(sp, se) - i0
    double = sp[:-1][np.diff(sp) == 1]  # first space of each "  "
    ndouble = np.searchsorted(double, se - 1) - np.searchsorted(double, starts)
    plain = (nsp == dim) & (buf[starts] != 32) & (ndouble == 0)
    st = np.zeros(len(rows), np.uint8)
    kend = np.where(plain, sp[np.minimum(i0, len(sp) - 1)] if len(sp) else starts, starts)
    for k in np.flatnonzero(~plain):
        st[k], kend[k] = _line_shape(buf, int(starts[k]), int(se[k]), dim)
    good = np.flatnonzero((st & ERRORS) == 0)
    first = i0[good] + nsp[good] - dim
    batch = max(1, _BATCH_VALUES // dim)
    for lo in range(0, len(good), batch):
        g = good[lo:lo + batch]
        f = first[lo:lo + batch]
        idx = f[:, None] + np.arange(dim)
        tok_s = sp[idx] + 1
        tok_e = np.empty_like(tok_s)
        tok_e[:, :-1] = sp[idx[:, 1:]]
        tok_e[:, -1] = se[g]
        ok, val = parse_tokens(buf, tok_s.ravel(), (tok_e - tok_s).ravel())
        ok = ok.reshape(len(g), dim)
        with np.errstate(over="ignore"):  # rows with a token outside the fast path: unspecified
            out[rows[g]] = val.reshape(len(g), dim)
        st[g[~ok.all(1)]] |= FALLBACK
    status[rows] = st
    key_end[rows] = kend
    return counts
