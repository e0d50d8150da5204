"""word2vec binary record scanning (numpy twin of ``_numba/binary.py``)."""
from __future__ import annotations

from embtool.kernels.common import WORD_TOO_LONG


def scan_records(buf, pos, n, dim, max_records, max_word, word_start, word_end):
    """Locate word2vec binary records in ``buf[pos:n]``: optional ``\\n`` / ``\\r\\n`` before a
    word, the word up to a space, then ``4 * dim`` bytes of float32.  Stops at ``max_records`` or
    at an incomplete record.  Returns ``(count, next_pos, crlf, status)``; the vector of record
    ``k`` starts at ``word_end[k] + 1``; on ``WORD_TOO_LONG`` the word starts at ``next_pos``
    after its separators."""
    data = buf[pos:n].tobytes()
    size = n - pos
    nvec = 4 * dim
    p = k = crlf = 0
    while k < max_records:
        q = p
        cr = 0
        while q < size:
            if data[q] == 10:
                q += 1
            elif data[q] == 13 and q + 1 < size and data[q + 1] == 10:
                q += 2
                cr += 1
            else:
                break
        if q >= size or (data[q] == 13 and q + 1 >= size):
            break
        sp = data.find(b" ", q, min(size, q + max_word + 1))
        if sp < 0:
            if q + max_word + 1 <= size:
                return k, pos + q, crlf + cr, WORD_TOO_LONG
            break
        if sp + 1 + nvec > size:
            break
        word_start[k] = pos + q
        word_end[k] = pos + sp
        crlf += cr
        p = sp + 1 + nvec
        k += 1
    return k, pos + p, crlf, 0
