"""EmbeddingBag segment reductions (numpy twin of ``_numba/bag.py``).

Bag b reduces ``weight[indices[starts[b]:ends[b]]]`` in input order with PyTorch's float
arithmetic (docs/semantics.md §4.2).  numpy cannot loop over a bag cheaply, so these kernels
step through *position within the bag*: step j handles the j-th element of every bag longer
than j at once, which keeps each bag's operations in input order.  Bags are visited longest
first so that the bags still active at step j are a prefix.  Padding entries are skipped with
``np.where`` (not added as zeros) so that a -0.0 produced by an underflowing FMA survives
exactly as in the Numba kernel.  ``padding_idx`` is -1 when there is none; ``out`` is (B, D)
of the weight's dtype and is overwritten.
"""
from __future__ import annotations

import numpy as np

from embtool.kernels.common import fma32


def _steps(indices, starts, ends):
    """Per in-bag position j: the bags longer than j, their j-th input positions and rows."""
    lengths = ends - starts
    order = np.argsort(-lengths, kind="stable")
    longest_first = -lengths[order]
    for j in range(int(-longest_first[0]) if len(order) else 0):
        bags = order[: np.searchsorted(longest_first, -j, side="left")]
        pos = starts[bags] + j
        yield bags, pos, indices[pos]


def bag_sum(weight, indices, starts, ends, padding_idx, divisor, out):
    """Sum per bag, then divided by ``divisor[b]`` (the mean's count) unless divisor is empty."""
    out[...] = 0
    for bags, _, k in _steps(indices, starts, ends):
        keep = (k != padding_idx)[:, None]
        out[bags] = np.where(keep, out[bags] + weight[k], out[bags])
    if divisor.shape[0]:
        out /= divisor[:, None]


def bag_weighted_sum(weight, indices, starts, ends, psw, padding_idx, fused, out):
    out[...] = 0
    for bags, pos, k in _steps(indices, starts, ends):
        keep = (k != padding_idx)[:, None]
        acc = out[bags]
        w = psw[pos][:, None]
        if fused:  # FBGEMM path: one rounding, fma(W, w, out)
            new = fma32(weight[k], w, acc)
        else:  # generic path: f(out + f(W*w))
            new = acc + weight[k] * w
        out[bags] = np.where(keep, new, acc)


def bag_max(weight, indices, starts, ends, padding_idx, out):
    out[...] = 0
    seen = np.zeros(len(starts), bool)
    for bags, _, k in _steps(indices, starts, ends):
        keep = k != padding_idx
        rows = weight[k]
        cur = out[bags]
        first = (~seen[bags] & keep)[:, None]
        better = keep[:, None] & (rows > cur)
        out[bags] = np.where(first | better, rows, cur)
        seen[bags] |= keep
