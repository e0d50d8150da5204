"""Embedding backward kernels in numpy (twins of ``embtool.kernels._numba.backward``).

``group_rows`` sorts the non-padding positions of a flat index array by row with a *stable*
sort, so each row's positions stay in input order; ``scatter_rows`` then folds each row's
entries into an accumulator with one float32 fma per entry, in that order
(docs/semantics.md §5.1: ``gw[k] = fma(g[i], f32(scale), gw[k])``, scale 1 being a plain add).
"""
from __future__ import annotations

import numpy as np

from embtool.kernels.common import fma32


def group_rows(flat, padding_idx, num_embeddings):
    """Positions of ``flat`` (int64) grouped by row, padding skipped.

    Returns ``(order, rows, starts)``: ``order`` lists the kept positions sorted by row, stably;
    ``rows`` are the distinct rows ascending; row ``rows[s]`` owns ``order[starts[s]:starts[s+1]]``.
    """
    kept = np.flatnonzero(flat != padding_idx)
    order = kept[np.argsort(flat[kept], kind="stable")]
    sorted_rows = flat[order]
    if sorted_rows.size == 0:
        return order, np.empty(0, np.int64), np.zeros(1, np.int64)
    first = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    starts = np.append(first, sorted_rows.size).astype(np.int64)
    return order, sorted_rows[first].astype(np.int64), starts


def scatter_rows(values, order, begin, end, scale, zero_init, out):
    """``out[s] = fma(values[order[j]], scale[s], out[s])`` for j in ``begin[s]:end[s]``, in order;
    with ``zero_init`` the accumulators start at +0.0 instead of ``out``'s contents.

    Vectorised over rows: the j-th entry of every row is applied in one pass, rows sorted by
    entry count so that the rows still active at pass j are a prefix.
    """
    if zero_init:
        out[...] = 0
    lengths = end - begin
    if lengths.size == 0 or lengths.max(initial=0) <= 0:
        return out
    by_len = np.argsort(-lengths, kind="stable")
    sorted_len = lengths[by_len]
    plain = bool(np.all(scale == 1))
    for j in range(int(sorted_len[0])):
        active = by_len[: np.searchsorted(-sorted_len, -j, side="left")]
        src = values[order[begin[active] + j]]
        if plain:  # fma(v, 1, acc) == f32(v + acc): float32 add is correctly rounded
            out[active] = src + out[active]
        else:
            out[active] = fma32(src, scale[active, None], out[active])
    return out
