"""word2vec binary record scanning (Numba twin of ``_numpy/binary.py``)."""
from __future__ import annotations

import numba

from embtool.kernels._numba import JIT, readonly
from embtool.kernels.common import WORD_TOO_LONG


@numba.njit(**JIT)
def _scan_records(buf, pos, n, dim, max_records, max_word, word_start, word_end):
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


def scan_records(buf, pos, n, dim, max_records, max_word, word_start, word_end):
    # a map of the file or a block read into memory: one compiled form
    return _scan_records(readonly(buf), pos, n, dim, max_records, max_word, word_start, word_end)
