"""Running top-k over chunks of scores (numpy twin of ``_numba/topk.py``).

Candidates are ranked by their int64 keys (``common.encode_keys``: higher score first, NaN after
every number, equal scores by lower row id), a total order, so both backends keep the same k.
"""
from __future__ import annotations

import numpy as np

from embtool.kernels.common import EMPTY, encode_keys


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
    keys = encode_keys(scores, start + np.arange(n, dtype=np.int64))
    if exclude.size:
        rel = exclude - start
        hit = (exclude >= 0) & (rel >= 0) & (rel < n)
        qq, ee = np.nonzero(hit)
        keys[qq, rel[qq, ee]] = EMPTY
    merged = np.concatenate([best, keys], axis=1)
    top = np.partition(merged, merged.shape[1] - k, axis=1)[:, merged.shape[1] - k:]
    best[...] = np.sort(top, axis=1)[:, ::-1]
