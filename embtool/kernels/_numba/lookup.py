"""Row norms, max_norm renormalisation and gather with Numba (twins of ``_numpy/lookup.py``).

See the numpy module for the exact reduction orders; these loops follow them element for element
(``fma32`` is llvm.fma, so the tail of the p=2 norm is fused exactly as torch's kernel does).
Rows are independent: each kernel runs slices of them on parallel threads.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from embtool.kernels._numba import HELPER, JIT, readonly, threads
from embtool.kernels._numba.intrinsics import fma32, prefetch

f32 = np.float32


@numba.njit(**HELPER)
def _norm2(x):
    """The 2-norm, torch's lanes and tail (the norm type nearly every table uses: its kernels are
    compiled without the code of the other norms)."""
    d = x.shape[0]
    # eight lane accumulators, as scalars (an array would compile numpy's allocation too)
    l0 = l1 = l2 = l3 = l4 = l5 = l6 = l7 = f32(0.0)
    full = (d // 8) * 8
    for j in range(0, full, 8):
        l0 = f32(l0 + f32(x[j] * x[j]))
        l1 = f32(l1 + f32(x[j + 1] * x[j + 1]))
        l2 = f32(l2 + f32(x[j + 2] * x[j + 2]))
        l3 = f32(l3 + f32(x[j + 3] * x[j + 3]))
        l4 = f32(l4 + f32(x[j + 4] * x[j + 4]))
        l5 = f32(l5 + f32(x[j + 5] * x[j + 5]))
        l6 = f32(l6 + f32(x[j + 6] * x[j + 6]))
        l7 = f32(l7 + f32(x[j + 7] * x[j + 7]))
    acc = f32(0.0)
    for lane in (l0, l1, l2, l3, l4, l5, l6, l7):
        acc = f32(acc + lane)
    mid = full + ((d - full) // 4) * 4
    for j in range(full, mid):
        acc = f32(acc + f32(x[j] * x[j]))
    for j in range(mid, d):
        acc = fma32(x[j], x[j], acc)
    return f32(math.sqrt(acc))


@numba.njit(**HELPER)
def _norm_p(x, p):
    """Any other norm type ``p``."""
    d = x.shape[0]
    if p == 2.0:
        return _norm2(x)
    if p == 1.0:
        acc = f32(0.0)
        for j in range(d):
            acc = f32(acc + abs(x[j]))
        return acc
    if p == np.inf or p == -np.inf:
        if d == 0:
            return f32(0.0) if p > 0 else f32(np.inf)
        m = abs(x[0])
        for j in range(d):
            a = abs(x[j])
            if a != a:
                return a
            if (p > 0 and a > m) or (p < 0 and a < m):
                m = a
        return m
    if p == 0.0:
        c = 0
        for j in range(d):
            if x[j] != 0:
                c += 1
        return f32(c)
    if d == 1:
        return abs(x[0])  # torch skips pow/root for a single element
    pf = f32(p)
    acc = f32(0.0)
    for j in range(d):
        acc = f32(acc + abs(x[j]) ** pf)
    return acc ** (f32(1.0) / pf)


@numba.njit(**HELPER)
def _scale(x, n, max_norm):
    """Renorm row ``x`` of norm ``n`` (float64) if ``n > max_norm``; whether it was."""
    if n > max_norm:
        scale = f32(max_norm / (n + 1e-7))
        for j in range(x.shape[0]):
            x[j] = f32(x[j] * scale)
        return True
    return False


#: rows per thread below which a kernel runs on one thread.
GRAIN = 1 << 12

# Each kernel below has a 2-norm form and a form for any norm type; the wrappers call the first
# for p = 2.


@numba.njit(**JIT)
def _row_norms2(rows, out, lo, hi):
    for i in range(lo, hi):
        out[i] = _norm2(rows[i])


@numba.njit(**JIT)
def _row_norms_p(rows, p, out, lo, hi):
    for i in range(lo, hi):
        out[i] = _norm_p(rows[i], p)


def row_norms(rows, norm_type):
    out = np.empty(rows.shape[0], np.float32)
    if norm_type == 2.0:
        threads.split(_row_norms2, rows.shape[0], GRAIN, rows, out)
    else:
        threads.split(_row_norms_p, rows.shape[0], GRAIN, rows, norm_type, out)
    return out


@numba.njit(**JIT)
def _renorm_rows2(rows, max_norm, hit, lo, hi):
    for i in range(lo, hi):
        hit[i] = _scale(rows[i], np.float64(_norm2(rows[i])), max_norm)


@numba.njit(**JIT)
def _renorm_rows_p(rows, max_norm, p, hit, lo, hi):
    for i in range(lo, hi):
        hit[i] = _scale(rows[i], np.float64(_norm_p(rows[i], p)), max_norm)


def renorm_rows(rows, max_norm, norm_type):
    hit = np.zeros(rows.shape[0], np.bool_)
    if norm_type == 2.0:
        threads.split(_renorm_rows2, rows.shape[0], GRAIN, rows, max_norm, hit)
    else:
        threads.split(_renorm_rows_p, rows.shape[0], GRAIN, rows, max_norm, norm_type, hit)
    return hit


@numba.njit(**JIT)
def _mark(ids, seen):
    for i in range(ids.shape[0]):
        seen[ids[i]] = 1


@numba.njit(**JIT)
def _renorm_marked2(weight, seen, max_norm, lo, hi):
    changed = 0
    for r in range(lo, hi):
        if seen[r] and _scale(weight[r], np.float64(_norm2(weight[r])), max_norm):
            changed += 1
    return changed


@numba.njit(**JIT)
def _renorm_marked_p(weight, seen, max_norm, p, lo, hi):
    changed = 0
    for r in range(lo, hi):
        if seen[r] and _scale(weight[r], np.float64(_norm_p(weight[r], p)), max_norm):
            changed += 1
    return changed


def renorm_ids(weight, ids, max_norm, norm_type):
    # A byte per row marks the distinct ids (instead of torch's sort), then the marked rows are
    # renormed; each row is visited once, as torch visits each distinct index once.
    seen = np.zeros(weight.shape[0], np.uint8)
    _mark(ids, seen)
    if norm_type == 2.0:
        parts = threads.split(_renorm_marked2, weight.shape[0], GRAIN, weight, seen, max_norm)
    else:
        parts = threads.split(_renorm_marked_p, weight.shape[0], GRAIN, weight, seen, max_norm,
                              norm_type)
    return sum(parts)


@numba.njit(**JIT)
def _gather(weight, ids, out, lo, hi):
    d = weight.shape[1]
    for i in range(lo, hi):
        if i + 16 < hi:
            base = ids[i + 16] * d
            for c in range(0, d, 16):
                prefetch(weight, base + c)
        r = ids[i]
        for j in range(d):
            out[i, j] = weight[r, j]


def gather(weight, ids, out):
    # The table is read-only to the kernel: one compiled form whether the caller's array is a
    # read-only map of a table file or a writable block (Numba compiles each separately).
    weight = readonly(weight.view(np.uint16) if weight.dtype == np.float16 else weight)
    if weight.dtype == np.uint16:  # a copy of bits; Numba has no float16 scalars on the CPU
        threads.split(_gather, ids.shape[0], GRAIN, weight, ids, out.view(np.uint16))
        return out
    threads.split(_gather, ids.shape[0], GRAIN, weight, ids, out)
    return out
