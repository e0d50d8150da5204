"""Running top-k over chunks of scores (Numba twin of ``_numpy/topk.py``; see there for the
key layout).  Each query keeps a min-heap of its k best keys; a chunk element is encoded and
pushed only when it beats the heap's root, so the common case is one compare per score.
"""
from __future__ import annotations

import numba
import numpy as np

from embtool.kernels._numba.fp import JIT, PJIT

EMPTY = np.iinfo(np.int64).min
MAX_ROW = 0xFFFFFFFF
_NAN_RANK = np.iinfo(np.int32).min


@numba.njit(inline="always", **JIT)
def _key(score, bits, row):
    if np.isnan(score):
        rank = np.int64(_NAN_RANK)
    else:
        b = np.int64(bits)
        if b == _NAN_RANK:  # -0.0 ranks as +0.0
            b = np.int64(0)
        rank = b ^ ((b >> 31) & 0x7FFFFFFF)
    return (rank << 32) | (MAX_ROW - row)


@numba.njit(inline="always", **JIT)
def _sift_down(heap, i):
    k = heap.shape[0]
    while True:
        small = i
        left = 2 * i + 1
        if left < k and heap[left] < heap[small]:
            small = left
        if left + 1 < k and heap[left + 1] < heap[small]:
            small = left + 1
        if small == i:
            return
        heap[i], heap[small] = heap[small], heap[i]
        i = small


@numba.njit(**PJIT)
def select(scores, start, exclude, best):
    q_count, n = scores.shape
    k = best.shape[1]
    if k == 0 or n == 0:
        return
    bits = scores.view(np.int32)
    for q in numba.prange(q_count):
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
            _sift_down(heap, 0)
        heap.sort()
        best[q, :] = heap[::-1]
