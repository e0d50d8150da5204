"""Row-wise optimizer updates in numpy (twins of ``embtool.kernels._numba.optim``).

Every kernel computes new values for the table rows ``rows`` (output row i is table row
``rows[i]``) from read-only ``weight`` and state arrays.  ``gidx[i]`` is the row of ``gvals``
holding row i's gradient, or -1 for a zero gradient (so a dense step never materialises a
dense gradient).  Formulas: docs/semantics.md §6.3-6.6; hyper-parameters arrive already
rounded to float32 as ATen rounds them, double-precision step sizes rounded by the caller.
Work goes in chunks of rows to bound the float64 temporaries of ``fma32``.
"""
from __future__ import annotations

import numpy as np

from embtool.kernels._numpy.backward import scatter_rows
from embtool.kernels.common import fma32

f32 = np.float32
#: values per chunk: the float64 temporaries of ``fma32`` (1 MB) stay in the second-level cache and
#: are reused by the allocator, instead of fresh pages (huge pages, which numpy asks for from 4 MB:
#: zeroing them cost more than the arithmetic on them, 2-4x the time of a 10k-row step)
CHUNK_VALUES = 1 << 17
#: float32 square root, correctly rounded (torch's MKL sqrt is sometimes 1 ulp low; tests swap
#: in torch's own to check that everything else is exact).
sqrt = np.sqrt


def _chunks(n, width):
    step = max(1, CHUNK_VALUES // max(1, width))
    for lo in range(0, n, step):
        yield slice(lo, min(n, lo + step))


def _grad(gvals, gidx, maximize):
    """Gradient rows (+0.0 where ``gidx`` is -1), negated for ``maximize`` as torch does."""
    g = np.zeros((gidx.size, gvals.shape[1]), f32)
    has = gidx >= 0
    g[has] = gvals[gidx[has]]
    return -g if maximize else g


def sgd_rows(weight, buf, rows, gvals, gidx, neg_lr, momentum, one_minus_dampening, wd, nesterov,
             maximize, first, out_w, out_buf):
    """SGD (dense-gradient formulas); ``first`` marks the step that creates the momentum buffer."""
    for c in _chunks(rows.size, weight.shape[1]):
        p = weight[rows[c]]
        g = _grad(gvals, gidx[c], maximize)
        if wd != 0:
            g = fma32(p, wd, g)
        if momentum != 0:
            b = g.copy() if first else fma32(g, one_minus_dampening, buf[rows[c]] * momentum)
            out_buf[c] = b
            g = fma32(b, momentum, g) if nesterov else b
        out_w[c] = fma32(g, neg_lr, p)


def adagrad_rows(weight, acc, rows, gvals, gidx, neg_clr, wd, eps, maximize, sparse, out_w, out_acc):
    """Adagrad: dense path ``sum=fma(g,g,sum)``, ``p+=(-clr*g)/std``; sparse path
    ``sum+=g*g``, ``p=fma(g/std,-clr,p)`` (the two round differently in torch)."""
    for c in _chunks(rows.size, weight.shape[1]):
        p = weight[rows[c]]
        g = _grad(gvals, gidx[c], maximize)
        s = acc[rows[c]]
        if sparse:
            s = s + g * g
        else:
            if wd != 0:
                g = fma32(p, wd, g)
            s = fma32(g, g, s)
        std = sqrt(s) + eps
        out_acc[c] = s
        with np.errstate(divide="ignore", invalid="ignore"):
            out_w[c] = fma32(g / std, neg_clr, p) if sparse else p + (neg_clr * g) / std


def sparse_adam_rows(weight, m, v, rows, gvals, gidx, one_minus_b1, one_minus_b2, eps, neg_step_size,
                     maximize, out_w, out_m, out_v):
    """SparseAdam on coalesced rows (torch/optim/_functional.py ``sparse_adam``)."""
    for c in _chunks(rows.size, weight.shape[1]):
        g = _grad(gvals, gidx[c], maximize)
        m_old = m[rows[c]]
        v_old = v[rows[c]]
        um = (g - m_old) * one_minus_b1
        uv = (g * g - v_old) * one_minus_b2
        out_m[c] = m_old + um
        out_v[c] = v_old + uv
        denom = sqrt(uv + v_old) + eps
        with np.errstate(divide="ignore", invalid="ignore"):
            out_w[c] = weight[rows[c]] + ((um + m_old) / denom) * neg_step_size


def adam_rows(weight, m, v, vmax, rows, gvals, gidx, one_minus_b1, b2, one_minus_b2, eps, wd,
              decay_factor, amsgrad, maximize, neg_step_size, bc2_sqrt, out_w, out_m, out_v, out_vmax):
    """Adam / AdamW: ``decay_factor`` is AdamW's ``f32(1-lr*wd)`` (1 for none), ``wd`` Adam's."""
    for c in _chunks(rows.size, weight.shape[1]):
        p = weight[rows[c]]
        g = _grad(gvals, gidx[c], maximize)
        if decay_factor != 1:
            p = p * decay_factor
        if wd != 0:
            g = fma32(p, wd, g)
        mo = m[rows[c]]
        diff = g - mo
        # lerp(m, g, w): fma(w, g-m, m) for |w| < 0.5, else fma(w-1, g-m, g)
        mn = fma32(one_minus_b1, diff, mo) if abs(one_minus_b1) < 0.5 else fma32(one_minus_b1 - f32(1), diff, g)
        vn = fma32(one_minus_b2 * g, g, v[rows[c]] * b2)
        out_m[c] = mn
        out_v[c] = vn
        if amsgrad:
            vn = np.maximum(vmax[rows[c]], vn)
            out_vmax[c] = vn
        denom = sqrt(vn) / bc2_sqrt + eps
        with np.errstate(divide="ignore", invalid="ignore"):
            out_w[c] = p + (neg_step_size * mn) / denom


def sgd_segment_rows(weight, entries, order, begin, end, scale, rows, neg_lr, out_w):
    """Dense backward fused with plain SGD (see the Numba twin): accumulate, then one fma."""
    scatter_rows(entries, order, begin, end, scale, True, out_w)
    for c in _chunks(rows.size, weight.shape[1]):
        out_w[c] = fma32(out_w[c], neg_lr, weight[rows[c]])
