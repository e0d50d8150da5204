"""Row-wise optimizer updates in Numba (twins of ``_numpy/optim.py``: same arguments, same
float32 operations in the same order; see that module for the conventions).  Rows are independent:
slices of them run on parallel threads.

Every intermediate is rounded to float32 explicitly (``f32(...)``) so that no expression is
evaluated in double; sqrt goes through double, which is exact after rounding to float32.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from embtool.kernels._numba import JIT, threads
from embtool.kernels._numba.intrinsics import fma32
from embtool.kernels.common import f32

#: rows per thread below which a kernel runs on one thread.
GRAIN = 256


@numba.njit(inline="always", **JIT)
def _g(gvals, gi, d, maximize):
    g = gvals[gi, d] if gi >= 0 else f32(0.0)
    return -g if maximize else g


@numba.njit(**JIT)
def _sgd_rows(weight, buf, rows, gvals, gidx, neg_lr, momentum, one_minus_dampening, wd, nesterov,
             maximize, first, out_w, out_buf, lo, hi):
    dim = weight.shape[1]
    for i in range(lo, hi):
        r = rows[i]
        gi = gidx[i]
        for d in range(dim):
            p = weight[r, d]
            g = _g(gvals, gi, d, maximize)
            if wd != 0:
                g = fma32(p, wd, g)
            if momentum != 0:
                if first:
                    b = g
                else:
                    b = fma32(g, one_minus_dampening, f32(buf[r, d] * momentum))
                out_buf[i, d] = b
                g = fma32(b, momentum, g) if nesterov else b
            out_w[i, d] = fma32(g, neg_lr, p)


@numba.njit(**JIT)
def _adagrad_rows(weight, acc, rows, gvals, gidx, neg_clr, wd, eps, maximize, sparse, out_w, out_acc, lo, hi):
    dim = weight.shape[1]
    for i in range(lo, hi):
        r = rows[i]
        gi = gidx[i]
        for d in range(dim):
            p = weight[r, d]
            g = _g(gvals, gi, d, maximize)
            if sparse:
                s = f32(acc[r, d] + f32(g * g))
            else:
                if wd != 0:
                    g = fma32(p, wd, g)
                s = fma32(g, g, acc[r, d])
            std = f32(f32(math.sqrt(s)) + eps)
            out_acc[i, d] = s
            if sparse:
                out_w[i, d] = fma32(f32(g / std), neg_clr, p)
            else:
                out_w[i, d] = f32(p + f32(f32(neg_clr * g) / std))


@numba.njit(**JIT)
def _sparse_adam_rows(weight, m, v, rows, gvals, gidx, one_minus_b1, one_minus_b2, eps, neg_step_size,
                     maximize, out_w, out_m, out_v, lo, hi):
    dim = weight.shape[1]
    for i in range(lo, hi):
        r = rows[i]
        gi = gidx[i]
        for d in range(dim):
            g = _g(gvals, gi, d, maximize)
            m_old = m[r, d]
            v_old = v[r, d]
            um = f32(f32(g - m_old) * one_minus_b1)
            uv = f32(f32(f32(g * g) - v_old) * one_minus_b2)
            out_m[i, d] = f32(m_old + um)
            out_v[i, d] = f32(v_old + uv)
            denom = f32(f32(math.sqrt(f32(uv + v_old))) + eps)
            out_w[i, d] = f32(weight[r, d] + f32(f32(f32(um + m_old) / denom) * neg_step_size))


@numba.njit(**JIT)
def _adam_rows(weight, m, v, vmax, rows, gvals, gidx, one_minus_b1, b2, one_minus_b2, eps, wd,
              decay_factor, amsgrad, maximize, neg_step_size, bc2_sqrt, out_w, out_m, out_v, out_vmax, lo, hi):
    dim = weight.shape[1]
    small_w = abs(one_minus_b1) < 0.5
    w_minus_1 = f32(one_minus_b1 - f32(1.0))
    for i in range(lo, hi):
        r = rows[i]
        gi = gidx[i]
        for d in range(dim):
            p = weight[r, d]
            g = _g(gvals, gi, d, maximize)
            if decay_factor != 1:
                p = f32(p * decay_factor)
            if wd != 0:
                g = fma32(p, wd, g)
            mo = m[r, d]
            diff = f32(g - mo)
            mn = fma32(one_minus_b1, diff, mo) if small_w else fma32(w_minus_1, diff, g)
            vn = fma32(f32(one_minus_b2 * g), g, f32(v[r, d] * b2))
            out_m[i, d] = mn
            out_v[i, d] = vn
            if amsgrad:
                vm = vmax[r, d]
                # torch.maximum propagates NaN from either side
                vn = vm if (vm > vn or math.isnan(vm)) else vn
                out_vmax[i, d] = vn
            denom = f32(f32(f32(math.sqrt(vn)) / bc2_sqrt) + eps)
            out_w[i, d] = f32(p + f32(f32(neg_step_size * mn) / denom))


@numba.njit(**JIT)
def _sgd_segment_rows(weight, entries, order, begin, end, scale, rows, neg_lr, out_w, lo, hi):
    """Dense backward fused with plain SGD: row s accumulates ``fma(entries[order[j]], scale[s],
    acc)`` from +0.0 over j in ``begin[s]:end[s]``, then ``out_w[s] = fma(acc, neg_lr, weight[rows[s]])``."""
    dim = weight.shape[1]
    for s in range(lo, hi):
        sc = scale[s]
        out_w[s, :] = f32(0.0)
        for j in range(begin[s], end[s]):
            src = order[j]
            for d in range(dim):
                out_w[s, d] = fma32(entries[src, d], sc, out_w[s, d])
        r = rows[s]
        for d in range(dim):
            out_w[s, d] = fma32(out_w[s, d], neg_lr, weight[r, d])


def sgd_rows(weight, buf, rows, gvals, gidx, neg_lr, momentum, one_minus_dampening, wd, nesterov,
             maximize, first, out_w, out_buf):
    threads.split(_sgd_rows, rows.size, GRAIN, weight, buf, rows, gvals, gidx, neg_lr, momentum,
                  one_minus_dampening, wd, nesterov, maximize, first, out_w, out_buf)


def adagrad_rows(weight, acc, rows, gvals, gidx, neg_clr, wd, eps, maximize, sparse, out_w,
                 out_acc):
    threads.split(_adagrad_rows, rows.size, GRAIN, weight, acc, rows, gvals, gidx, neg_clr, wd, eps,
                  maximize, sparse, out_w, out_acc)


def sparse_adam_rows(weight, m, v, rows, gvals, gidx, one_minus_b1, one_minus_b2, eps,
                     neg_step_size, maximize, out_w, out_m, out_v):
    threads.split(_sparse_adam_rows, rows.size, GRAIN, weight, m, v, rows, gvals, gidx,
                  one_minus_b1, one_minus_b2, eps, neg_step_size, maximize, out_w, out_m, out_v)


def adam_rows(weight, m, v, vmax, rows, gvals, gidx, one_minus_b1, b2, one_minus_b2, eps, wd,
              decay_factor, amsgrad, maximize, neg_step_size, bc2_sqrt, out_w, out_m, out_v,
              out_vmax):
    threads.split(_adam_rows, rows.size, GRAIN, weight, m, v, vmax, rows, gvals, gidx, one_minus_b1,
                  b2, one_minus_b2, eps, wd, decay_factor, amsgrad, maximize, neg_step_size,
                  bc2_sqrt, out_w, out_m, out_v, out_vmax)


def sgd_segment_rows(weight, entries, order, begin, end, scale, rows, neg_lr, out_w):
    threads.split(_sgd_segment_rows, rows.size, GRAIN, weight, entries, order, begin, end, scale,
                  rows, neg_lr, out_w)
