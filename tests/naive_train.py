"""Slow, obviously correct references for the training kernels: plain Python loops over the
positions of the flattened index tensor, one float32 operation at a time (fma32 from the
numpy fp helpers, itself checked against torch elsewhere)."""
from __future__ import annotations

import numpy as np

from embtool.kernels.common import fma32

f32 = np.float32


def dense_backward(indices, grad, num_embeddings, padding_idx=None, scale_grad_by_freq=False):
    """torch's dense grad_weight (docs/semantics.md §5.1), position by position in input order."""
    flat = np.asarray(indices).reshape(-1)
    g = np.asarray(grad, np.float32)
    g = g.reshape(flat.size, g.shape[-1])
    if padding_idx is not None and padding_idx < 0:
        padding_idx += num_embeddings
    counts = np.zeros(num_embeddings, np.int64)
    for k in flat:
        counts[k] += 1
    gw = np.zeros((num_embeddings, g.shape[1]), np.float32)
    for i, k in enumerate(flat):
        if k == padding_idx:
            continue
        scale = f32(1.0 / counts[k]) if scale_grad_by_freq else f32(1)
        gw[k] = fma32(g[i], scale, gw[k])
    return gw


def sparse_backward(indices, grad, padding_idx=None, num_embeddings=None):
    """torch's uncoalesced sparse gradient: (rows, values) of the non-padding positions in order."""
    flat = np.asarray(indices).reshape(-1)
    g = np.asarray(grad, np.float32)
    g = g.reshape(flat.size, g.shape[-1])
    if padding_idx is not None and padding_idx < 0:
        padding_idx += num_embeddings
    keep = [i for i, k in enumerate(flat) if k != padding_idx]
    return flat[keep].astype(np.int64), g[keep]


def coalesce(rows, values):
    """Sorted unique rows; each row's entries summed in input order, the first one copied."""
    out = {}
    for r, v in zip(rows, values):
        out[int(r)] = v.copy() if int(r) not in out else (out[int(r)] + v).astype(np.float32)
    keys = sorted(out)
    dim = values.shape[1] if values.ndim == 2 else 0
    vals = np.array([out[k] for k in keys], np.float32).reshape(len(keys), dim)
    return np.array(keys, np.int64), vals


def sgd_sparse_entries(weight, rows, values, lr, maximize=False):
    """torch's ``p.add_(sparse_grad, alpha=-lr)``: each entry applied with one fma, in stored order."""
    w = np.array(weight, np.float32)
    for r, v in zip(rows, values):
        w[r] = fma32(-v if maximize else v, -f32(lr), w[r])
    return w
