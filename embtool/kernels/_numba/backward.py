"""Embedding backward kernels in Numba (twins of ``embtool.kernels._numpy.backward``)."""
from __future__ import annotations

import numba
import numpy as np

from embtool.kernels._numba.fp import JIT, PJIT, fma32

f32 = np.float32


@numba.njit(**JIT)
def group_rows(flat, padding_idx, num_embeddings):
    """Positions of ``flat`` grouped by row (stable), padding skipped: ``(order, rows, starts)``.

    A counting sort (O(n + V)) when the indices are dense enough in the table, otherwise a
    stable merge sort (O(n log n)); both give the same, unique, stable order.
    """
    n = flat.size
    kept = 0
    for i in range(n):
        if flat[i] != padding_idx:
            kept += 1
    order = np.empty(kept, np.int64)
    if kept * 8 >= num_embeddings:
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
    j = 0
    for i in range(n):
        if flat[i] != padding_idx:
            order[j] = i
            j += 1
    order = order[np.argsort(flat[order], kind="mergesort")]
    distinct = 0
    for j in range(kept):
        if j == 0 or flat[order[j]] != flat[order[j - 1]]:
            distinct += 1
    rows = np.empty(distinct, np.int64)
    starts = np.empty(distinct + 1, np.int64)
    s = 0
    for j in range(kept):
        if j == 0 or flat[order[j]] != flat[order[j - 1]]:
            rows[s] = flat[order[j]]
            starts[s] = j
            s += 1
    starts[distinct] = kept
    return order, rows, starts


@numba.njit(**PJIT)
def scatter_rows(values, order, begin, end, scale, zero_init, out):
    """``out[s] = fma(values[order[j]], scale[s], out[s])`` for j in ``begin[s]:end[s]``, in order;
    with ``zero_init`` the accumulators start at +0.0 instead of ``out``'s contents."""
    dim = values.shape[1]
    for s in numba.prange(begin.size):
        sc = scale[s]
        if zero_init:
            out[s, :] = f32(0.0)
        for j in range(begin[s], end[s]):
            src = order[j]
            for d in range(dim):
                out[s, d] = fma32(values[src, d], sc, out[s, d])
    return out
