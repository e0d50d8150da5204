"""Embedding backward kernels in Numba (twins of ``_numpy/backward.py``)."""
from __future__ import annotations

import numba
import numpy as np

from embtool.kernels._numba import JIT, threads
from embtool.kernels._numba.intrinsics import fma32
from embtool.kernels._numpy import backward as _numpy_backward
from embtool.kernels.common import f32

#: rows per thread below which ``scatter_rows`` runs on one thread.
GRAIN = 256


def group_rows(flat, padding_idx, num_embeddings):
    """Positions of ``flat`` grouped by row (stable), padding skipped: ``(order, rows, starts)``.

    A counting sort (O(n + V)) when the indices are dense enough in the table, otherwise numpy's
    stable sort (the numpy twin; O(n log n), and a sort compiled by Numba would cost seconds of
    compilation on first use); both give the same, unique, stable order.
    """
    kept = flat.size - np.count_nonzero(flat == padding_idx)
    if kept * 8 >= num_embeddings:
        return _counting_group(flat, padding_idx, num_embeddings, kept)
    return _numpy_backward.group_rows(flat, padding_idx, num_embeddings)


@numba.njit(**JIT)
def _counting_group(flat, padding_idx, num_embeddings, kept):
    n = flat.size
    order = np.empty(kept, np.int64)
    pos = np.zeros(num_embeddings + 1, np.int64)
    for i in range(n):
        if flat[i] != padding_idx:
            pos[flat[i] + 1] += 1
    distinct = 0
    for r in range(num_embeddings):
        if pos[r + 1] > 0:
            distinct += 1
        pos[r + 1] += pos[r]
    rows = np.empty(distinct, np.int64)
    starts = np.empty(distinct + 1, np.int64)
    s = 0
    for r in range(num_embeddings):
        if pos[r + 1] > pos[r]:
            rows[s] = r
            starts[s] = pos[r]
            s += 1
    starts[distinct] = kept
    for i in range(n):
        r = flat[i]
        if r != padding_idx:
            order[pos[r]] = i
            pos[r] += 1
    return order, rows, starts


@numba.njit(**JIT)
def _scatter_rows(values, order, begin, end, scale, zero_init, out, lo, hi):
    dim = values.shape[1]
    for s in range(lo, hi):
        sc = scale[s]
        if zero_init:
            out[s, :] = f32(0.0)
        for j in range(begin[s], end[s]):
            src = order[j]
            for d in range(dim):
                out[s, d] = fma32(values[src, d], sc, out[s, d])


def scatter_rows(values, order, begin, end, scale, zero_init, out):
    """See the numpy twin."""
    threads.split(_scatter_rows, begin.size, GRAIN, values, order, begin, end, scale, zero_init,
                  out)
    return out
