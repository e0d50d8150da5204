"""Slow, obviously correct references for the query code (bags, top-k, most_similar, correlations).

Each follows the text of docs/semantics.md §4.2 or gensim's source line by line, one bag, row
or query at a time, with no chunking and no vectorisation beyond one row.
"""
from __future__ import annotations

import math

import numpy as np

from embtool.kernels.common import fma32

f32 = np.float32
f64 = np.float64


def bag(weight, indices, offsets, mode, psw=None, include_last_offset=False, padding_idx=None):
    """F.embedding_bag for 1-D indices with consistent (CSR) bag boundaries."""
    v, d = weight.shape
    if padding_idx is not None and padding_idx < 0:
        padding_idx += v
    n_bags = len(offsets) - 1 if include_last_offset else len(offsets)
    acc_dtype = f64 if weight.dtype == f64 else f32
    out = np.zeros((n_bags, d), weight.dtype)
    for b in range(n_bags):
        end = offsets[b + 1] if b + 1 < len(offsets) else len(indices)
        acc = np.zeros(d, acc_dtype)
        count = 0
        for i in range(offsets[b], end):
            k = indices[i]
            if k == padding_idx:
                continue
            row = weight[k].astype(acc_dtype)
            if mode == "max":
                acc = row.copy() if count == 0 else np.where(row > acc, row, acc)
            elif psw is None:
                acc = acc + row
            elif padding_idx is None and acc_dtype == f32:
                acc = fma32(row, f32(psw[i]), acc)
            else:
                acc = acc + row * acc_dtype(psw[i])
            count += 1
        if mode == "mean":
            if weight.dtype == np.float16:
                acc = acc.astype(np.float16) / np.float16(max(count, 1))
            else:
                acc = acc / acc_dtype(max(count, 1))
        out[b] = acc
    return out


def rank_key(score, row):
    """Sort key of the ranking: higher score first, NaN last, ties by lower row id."""
    return (1, 0.0, row) if math.isnan(score) else (0, -float(score), row)


def top_rows(scores, k, exclude=()):
    """The k best (row, score) of a 1-D score array, excluding some rows."""
    cands = [(r, scores[r]) for r in range(len(scores)) if r not in set(exclude)]
    return sorted(cands, key=lambda rs: rank_key(rs[1], rs[0]))[:k]


def most_similar(weight, positive, negative=(), topn=10, restrict_vocab=None):
    """gensim 4.4 ``most_similar`` on row ids / vectors / (item, weight) pairs, whole table at once."""
    w = weight.astype(f32)
    norms = np.linalg.norm(w, axis=1)
    items = [(x, 1.0) if not isinstance(x, tuple) else x for x in positive]
    items += [(x, -1.0) if not isinstance(x, tuple) else x for x in negative]
    mean = np.zeros(w.shape[1], f32)
    total = 0.0
    for item, wt in items:
        vec = item if isinstance(item, np.ndarray) else w[item] / norms[item]
        mean += f64(wt) * vec  # float32 accumulator, float64 product: gensim's ``mean += w * vec``
        total += abs(wt)
    mean = mean / f64(total)
    length = math.sqrt(sum(float(x) * float(x) for x in mean))
    mean = (mean * (1.0 / length)).astype(f32)
    stop = restrict_vocab or len(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = (w[:stop] @ mean) / norms[:stop]
    ids = [x for x, _ in items if not isinstance(x, np.ndarray)]
    return [(r, float(s)) for r, s in top_rows(scores, topn, ids)]


def average_ranks(x):
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def spearman(x, y):
    return pearson(average_ranks(x), average_ranks(y))

