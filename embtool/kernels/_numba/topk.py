"""Running top-k over chunks of scores (Numba twin of ``_numpy/topk.py``; the key layout is in
``common.py``).  Each query keeps a min-heap of its k best keys; a chunk element is encoded and
pushed only when it beats the heap's root, so the common case is one compare per score.  Queries
are independent: slices of them run on parallel threads.
"""
from __future__ import annotations

import numba
import numpy as np

from embtool.kernels._numba import JIT, threads
from embtool.kernels.common import MAX_ROW, NAN_RANK

#: queries per thread below which ``select`` runs on one thread.
GRAIN = 1


@numba.njit(inline="always", **JIT)
def _key(score, bits, row):
    if np.isnan(score):
        rank = np.int64(NAN_RANK)
    else:
        b = np.int64(bits)
        if b == NAN_RANK:  # -0.0 (bits 0x80000000) ranks as +0.0
            b = np.int64(0)
        rank = b ^ ((b >> 31) & 0x7FFFFFFF)
    return (rank << 32) | (MAX_ROW - row)


@numba.njit(inline="always", **JIT)
def _sift_down(heap, i, size):
    while True:
        small = i
        left = 2 * i + 1
        if left < size and heap[left] < heap[small]:
            small = left
        if left + 1 < size and heap[left + 1] < heap[small]:
            small = left + 1
        if small == i:
            return
        heap[i], heap[small] = heap[small], heap[i]
        i = small


@numba.njit(**JIT)
def _select(scores, start, exclude, best, lo, hi):
    n = scores.shape[1]
    k = best.shape[1]
    bits = scores.view(np.int32)
    for q in range(lo, hi):
        heap = best[q, ::-1].copy()  # ascending order is a valid min-heap
        for j in range(n):
            key = _key(scores[q, j], bits[q, j], start + j)
            if key <= heap[0]:
                continue
            row = start + j
            skip = False
            for e in range(exclude.shape[1]):
                if exclude[q, e] == row:
                    skip = True
            if skip:
                continue
            heap[0] = key
            _sift_down(heap, 0, k)
        for t in range(k - 1, -1, -1):  # pop the smallest into the last free slot (a heap sort)
            best[q, t] = heap[0]
            heap[0] = heap[t]
            _sift_down(heap, 0, t)


def select(scores, start, exclude, best):
    """See the numpy twin."""
    if best.shape[1] == 0 or scores.shape[1] == 0:
        return
    threads.split(_select, scores.shape[0], GRAIN, scores, start, exclude, best)
