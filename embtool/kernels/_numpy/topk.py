"""Running top-k over chunks of scores (numpy twin of ``_numba/topk.py``).

A candidate (score, row) is packed into one int64 *key* whose integer order is the ranking
order: higher score first, NaN after every number, equal scores by lower row id.  The
ranking is total, so "the k best" is one well-defined set whatever the algorithm, and both
backends return bit-identical keys.

Key layout: the high 32 bits hold the float32 score mapped to an order-preserving int32
(-0.0 folded into +0.0, every NaN mapped to INT32_MIN); the low 32 bits hold
``0xFFFFFFFF - row`` so that a lower row id is the larger key.  Row ids must be below
``MAX_ROW`` (``0xFFFFFFFF``).  ``EMPTY`` (INT64_MIN) marks an unfilled slot; no real candidate
maps to it.
"""
from __future__ import annotations

import numpy as np

EMPTY = np.iinfo(np.int64).min
MAX_ROW = 0xFFFFFFFF
_NAN_RANK = np.int64(np.iinfo(np.int32).min)


def encode(scores, rows):
    """Keys of ``scores`` (float32, any shape) at row ids ``rows`` (int64, broadcastable)."""
    s = np.asarray(scores, np.float32) + np.float32(0.0)  # -0.0 + 0.0 == +0.0
    bits = s.view(np.int32).astype(np.int64)
    rank = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    rank = np.where(np.isnan(s), _NAN_RANK, rank)
    return (rank << 32) | (MAX_ROW - np.asarray(rows, np.int64))


def select(scores, start, exclude, best):
    """Merge the candidates of one chunk into ``best`` (in place).

    scores:  (Q, n) float32, scores of rows ``start .. start+n-1`` for Q queries.
    exclude: (Q, e) int64, row ids never to be selected for that query (-1 pads).
    best:    (Q, k) int64 keys, sorted best first (EMPTY for unfilled slots).
    """
    q, n = scores.shape
    k = best.shape[1]
    if k == 0 or n == 0:
        return
    keys = encode(scores, start + np.arange(n, dtype=np.int64))
    if exclude.size:
        rel = exclude - start
        hit = (exclude >= 0) & (rel >= 0) & (rel < n)
        qq, ee = np.nonzero(hit)
        keys[qq, rel[qq, ee]] = EMPTY
    merged = np.concatenate([best, keys], axis=1)
    top = np.partition(merged, merged.shape[1] - k, axis=1)[:, merged.shape[1] - k:]
    best[...] = np.sort(top, axis=1)[:, ::-1]
