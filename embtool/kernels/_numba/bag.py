"""EmbeddingBag segment reductions (Numba twin of ``_numpy/bag.py``; same contract).

Bags are independent, so each kernel runs slices of the bags on parallel threads and each bag
sequentially in input order, with PyTorch's float arithmetic (docs/semantics.md §4.2).  The loop over
features is innermost so that LLVM vectorises it without reassociating any sum.  The sums take
four rows per pass over the accumulator, ``(((acc + r0) + r1) + r2) + r3`` (still one rounding
per addition, in input order), and the row ``AHEAD`` input positions further on is prefetched into
the second-level cache, across bag boundaries: the random row reads are what these kernels wait
for, and that cache can have more of them in flight than the first.
"""
from __future__ import annotations

import numba

from embtool.kernels._numba import JIT, readonly, threads
from embtool.kernels._numba.intrinsics import fma32, prefetch_l2

#: input positions between the row read and the row prefetched (into the second-level cache:
#: ``intrinsics.prefetch_l2``; 16-48 measured alike, 8 slower)
AHEAD = 24
#: bags per thread below which a kernel runs on one thread.
GRAIN = 64


@numba.njit(inline="always", **JIT)
def _prefetch_ahead(weight, indices, i, count, dim):
    j = i + AHEAD
    stop = j + count
    if stop > indices.shape[0]:  # (not min(): its overload compiles separately)
        stop = indices.shape[0]
    while j < stop:
        base = indices[j] * dim
        for c in range(0, dim, 16):
            prefetch_l2(weight, base + c)
        j += 1


@numba.njit(inline="always", **JIT)
def _four_rows(indices, i, end, padding_idx):
    """Whether positions i..i+3 are all in the bag and none is padding."""
    if i + 4 > end:
        return False
    return (indices[i] != padding_idx and indices[i + 1] != padding_idx
            and indices[i + 2] != padding_idx and indices[i + 3] != padding_idx)


@numba.njit(**JIT)
def _bag_sum(weight, indices, starts, ends, padding_idx, divisor, out, lo, hi):
    dim = out.shape[1]
    for b in range(lo, hi):
        for d in range(dim):
            out[b, d] = 0
        i, end = starts[b], ends[b]
        while i < end:
            if _four_rows(indices, i, end, padding_idx):
                _prefetch_ahead(weight, indices, i, 4, dim)
                k0, k1, k2, k3 = indices[i], indices[i + 1], indices[i + 2], indices[i + 3]
                for d in range(dim):
                    out[b, d] = (((out[b, d] + weight[k0, d]) + weight[k1, d]) + weight[k2, d]) + weight[k3, d]
                i += 4
                continue
            _prefetch_ahead(weight, indices, i, 1, dim)
            k = indices[i]
            if k != padding_idx:
                for d in range(dim):
                    out[b, d] += weight[k, d]
            i += 1
        if divisor.shape[0]:
            for d in range(dim):
                out[b, d] = out[b, d] / divisor[b]


@numba.njit(**JIT)
def _bag_weighted_sum(weight, indices, starts, ends, psw, padding_idx, fused, out, lo, hi):
    dim = out.shape[1]
    for b in range(lo, hi):
        acc = out[b]
        acc[:] = 0
        i, end = starts[b], ends[b]
        while i < end:
            if fused and _four_rows(indices, i, end, padding_idx):  # FBGEMM: fma(W, w, out)
                _prefetch_ahead(weight, indices, i, 4, dim)
                r0, r1, r2, r3 = (weight[indices[i]], weight[indices[i + 1]],
                                  weight[indices[i + 2]], weight[indices[i + 3]])
                w0, w1, w2, w3 = psw[i], psw[i + 1], psw[i + 2], psw[i + 3]
                for d in range(dim):
                    acc[d] = fma32(r3[d], w3, fma32(r2[d], w2, fma32(r1[d], w1, fma32(r0[d], w0, acc[d]))))
                i += 4
                continue
            _prefetch_ahead(weight, indices, i, 1, dim)
            if indices[i] != padding_idx:
                row = weight[indices[i]]
                w = psw[i]
                if fused:
                    for d in range(dim):
                        acc[d] = fma32(row[d], w, acc[d])
                else:  # generic path: f(out + f(W*w))
                    for d in range(dim):
                        acc[d] += row[d] * w
            i += 1


@numba.njit(**JIT)
def _bag_max(weight, indices, starts, ends, padding_idx, out, lo, hi):
    dim = out.shape[1]
    for b in range(lo, hi):
        acc = out[b]
        acc[:] = 0
        seen = False
        for i in range(starts[b], ends[b]):
            _prefetch_ahead(weight, indices, i, 1, dim)
            k = indices[i]
            if k == padding_idx:
                continue
            row = weight[k]
            if not seen:
                seen = True
                for d in range(dim):
                    acc[d] = row[d]
            else:
                for d in range(dim):
                    if row[d] > acc[d]:  # strict: ties keep the first, NaN never replaces
                        acc[d] = row[d]


def bag_sum(weight, indices, starts, ends, padding_idx, divisor, out):
    threads.split(_bag_sum, starts.shape[0], GRAIN, readonly(weight), indices, starts, ends, padding_idx,
                  divisor, out)


def bag_weighted_sum(weight, indices, starts, ends, psw, padding_idx, fused, out):
    threads.split(_bag_weighted_sum, starts.shape[0], GRAIN, readonly(weight), indices, starts, ends, psw,
                  padding_idx, fused, out)


def bag_max(weight, indices, starts, ends, padding_idx, out):
    threads.split(_bag_max, starts.shape[0], GRAIN, readonly(weight), indices, starts, ends, padding_idx, out)
