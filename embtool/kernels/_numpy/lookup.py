"""Row norms, max_norm renormalisation and gather (numpy twins of ``_numba/lookup.py``).

The norms reproduce ``torch.linalg.vector_norm`` on a contiguous float32 row bit for bit
(docs/semantics.md §3.2):

* p = 2: eight lane accumulators ``lane += f32(x*x)`` over the first floor(D/8)*8 elements, the
  lanes summed left to right, the next floor((D mod 8)/4)*4 elements added one by one as rounded
  squares, the last D mod 4 elements with ``fma(x, x, acc)``, then ``sqrt``;
* p = 1: sequential ``acc = f32(acc + |x|)``; p = inf / -inf: max / min of |x| (NaN propagates);
* p = 0: the number of non-zero entries;
* other p: sequential ``acc = f32(acc + powf(|x|, p))`` then ``powf(acc, f32(1)/f32(p))`` with
  the C library's powf, as torch's (see ``powf``); a one-column row gives ``|x|`` (torch
  skips the pow and root there).

Columns are visited in a Python loop with whole-column vector operations over the rows, so the
accumulation order per row is exactly sequential (numpy's pairwise ``sum`` would not be).
"""
from __future__ import annotations

import functools

import numpy as np

from embtool.kernels.common import f32, f64, fma32


@functools.cache
def _load_powf():
    """The C library's ``powf`` through ctypes, or None; loaded at the first non-2 norm, not at
    import (``ctypes.util.find_library`` runs ``ldconfig -p`` in a subprocess: tried last)."""
    import ctypes
    import ctypes.util

    for name in ("libm.so.6", None):
        try:
            fn = ctypes.CDLL(name or ctypes.util.find_library("m")).powf
            break
        except (OSError, AttributeError, TypeError):  # not glibc's name (macOS), or no libm found
            continue
    else:  # pragma: no cover - every Linux/macOS libc has powf
        return None
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float, ctypes.c_float]
    return fn


def powf(x, p):
    """The C library's ``powf`` elementwise (torch's non-2 norms use it; numpy's float32 power is a
    SIMD routine that differs in the last bit for ~20% of inputs).

    float64 ``pow`` rounded to float32 agrees with glibc's powf except where the exact value lies
    very near a float32 rounding boundary (about 0.07% of inputs); those few elements are
    recomputed by calling ``powf`` itself through ctypes.
    """
    x = np.asarray(x, f32)
    p = f32(p)
    with np.errstate(all="ignore"):
        r64 = np.power(x.astype(f64), f64(p))
        r = r64.astype(f32)
        _powf = _load_powf()
        if _powf is None:
            return r
        # Distance to the nearest float32 rounding boundary (midpoint), relative to the value.
        up = np.nextafter(r, f32(np.inf)).astype(f64)
        down = np.nextafter(r, f32(-np.inf)).astype(f64)
        r_64 = r.astype(f64)
        gap = np.minimum(np.abs(r64 - (r_64 + up) / 2), np.abs(r64 - (r_64 + down) / 2))
        near = np.isfinite(r64) & (gap <= np.abs(r64) * 2.0**-28)
    if near.any():
        flat_r = r.reshape(-1)
        for i in np.flatnonzero(near.reshape(-1)):
            flat_r[i] = _powf(float(x.reshape(-1)[i]), float(p))
    return r


def row_norms(rows, norm_type):
    """float32 norms of the rows of a 2-D float32 array, as torch computes them."""
    rows = np.asarray(rows, dtype=f32)
    k, d = rows.shape
    p = float(norm_type)
    a = np.abs(rows)
    with np.errstate(invalid="ignore", over="ignore"):
        if p == 2.0:
            acc = np.zeros(k, f32)
            full = (d // 8) * 8
            if full:
                lanes = np.zeros((k, 8), f32)
                sq = rows[:, :full] * rows[:, :full]
                for j in range(0, full, 8):
                    lanes += sq[:, j:j + 8]
                for lane in range(8):
                    acc = acc + lanes[:, lane]
            mid = full + ((d - full) // 4) * 4
            for j in range(full, mid):
                acc = acc + rows[:, j] * rows[:, j]
            for j in range(mid, d):
                acc = fma32(rows[:, j], rows[:, j], acc)
            return np.sqrt(acc)
        if p == 1.0:
            acc = np.zeros(k, f32)
            for j in range(d):
                acc = acc + a[:, j]
            return acc
        if p == np.inf:
            return a.max(axis=1) if d else np.zeros(k, f32)
        if p == -np.inf:
            return a.min(axis=1) if d else np.full(k, np.inf, f32)
        if p == 0.0:
            return (rows != 0).sum(axis=1).astype(f32)
        if d == 1:
            return a[:, 0].copy()  # torch skips pow/root for a single element
        pf = f32(p)
        acc = np.zeros(k, f32)
        for j in range(d):
            acc = acc + powf(a[:, j], pf)
        return powf(acc, f32(1) / pf)


def renorm_rows(rows, max_norm, norm_type):
    """Renormalise a float32 block of rows in place; return the mask of rows changed.

    ``scale = max_norm / (n + 1e-7)`` in double, rounded to float32, one float32 multiply,
    only where ``n > max_norm`` (false for NaN).
    """
    norms = row_norms(rows, norm_type).astype(np.float64)
    with np.errstate(invalid="ignore"):
        hit = norms > max_norm
    if hit.any():
        scale = (max_norm / (norms[hit] + 1e-7)).astype(f32)
        with np.errstate(invalid="ignore", over="ignore"):
            rows[hit] = rows[hit] * scale[:, None]
    return hit


def renorm_ids(weight, ids, max_norm, norm_type):
    """``torch.embedding_renorm_``: renorm each distinct row named in ``ids`` in place.

    Returns the number of rows changed.  ``ids`` must already be range-checked.
    """
    rows = np.unique(ids)
    block = weight[rows]
    hit = renorm_rows(block, max_norm, norm_type)
    weight[rows[hit]] = block[hit]
    return int(hit.sum())


def gather(weight, ids, out):
    """``out[i] = weight[ids[i]]`` for flat ``ids``."""
    np.take(weight, ids, axis=0, out=out)
    return out
