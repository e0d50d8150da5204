"""EmbeddingBag segment reductions (Numba twin of ``_numpy/bag.py``; same contract).

Bags are independent, so each kernel runs its bags in parallel and each bag sequentially in
input order, with PyTorch's float arithmetic (TORCH_SEMANTICS.md §5.2).  The loop over
features is innermost so that LLVM vectorises it without reassociating any sum.
"""
from __future__ import annotations

import numba
import numpy as np

from embtool.kernels._numba.fp import PJIT, fma32


@numba.njit(**PJIT)
def bag_sum(weight, indices, starts, ends, padding_idx, divisor, out):
    dim = out.shape[1]
    for b in numba.prange(starts.shape[0]):
        acc = out[b]
        acc[:] = 0
        for i in range(starts[b], ends[b]):
            k = indices[i]
            if k == padding_idx:
                continue
            row = weight[k]
            for d in range(dim):
                acc[d] += row[d]
        if divisor.shape[0]:
            for d in range(dim):
                acc[d] = acc[d] / divisor[b]


@numba.njit(**PJIT)
def bag_weighted_sum(weight, indices, starts, ends, psw, padding_idx, fused, out):
    dim = out.shape[1]
    for b in numba.prange(starts.shape[0]):
        acc = out[b]
        acc[:] = 0
        for i in range(starts[b], ends[b]):
            k = indices[i]
            if k == padding_idx:
                continue
            row = weight[k]
            w = psw[i]
            if fused:  # FBGEMM path: one rounding, fma(W, w, out)
                for d in range(dim):
                    acc[d] = fma32(row[d], w, acc[d])
            else:  # generic path: f(out + f(W*w))
                for d in range(dim):
                    acc[d] += row[d] * w


@numba.njit(**PJIT)
def bag_max(weight, indices, starts, ends, padding_idx, out):
    dim = out.shape[1]
    for b in numba.prange(starts.shape[0]):
        acc = out[b]
        acc[:] = 0
        seen = False
        for i in range(starts[b], ends[b]):
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
