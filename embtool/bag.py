"""EmbeddingBag: per-bag sum / mean / max of embedding rows, as ``F.embedding_bag`` computes them.

Inputs are validated in the order PyTorch checks them and with its messages
(docs/semantics.md §4.1); the arithmetic is PyTorch's, bit for bit on float32
(docs/semantics.md §4.2, checked against torch 2.13 in tests/test_bag.py):

* sum: float32 additions in input order; with ``per_sample_weights`` each step is
  ``fma(W[k], w, out)`` (FBGEMM path, ``padding_idx`` None) or ``f32(out + f32(W[k]*w))``
  (generic path, ``padding_idx`` set);
* mean: ``f32(sum / f32(count))`` where ``count`` excludes padding entries;
* max: the first non-padding element initialises, later ones replace it only when strictly
  greater (ties keep the first, NaN is ignored unless first);
* empty bags, and bags of padding only, are zero in every mode.

float64 tables use the same formulas in float64 (PyTorch's generic path: no FMA); float16
tables accumulate in float32 and round to float16 at the end, the mean dividing the rounded
sum in float16 (as PyTorch does).

Where PyTorch is inconsistent embtool gives the consistent answer instead:

* ``include_last_offset=True`` with ``offsets[-1] < len(indices)``: bags follow CSR
  semantics, bag b is ``indices[offsets[b]:offsets[b+1]]`` and trailing indices belong to no
  bag (they are still range-checked).  PyTorch agrees on its float32 sum/mean fast path only;
  elsewhere it runs the last bag to the end of the input.
* Decreasing offsets are refused (PyTorch's result depends on the kernel path).

embtool is more lenient than PyTorch in two harmless ways: indices and offsets may have any
integer dtype, and ``per_sample_weights`` of another float dtype are rounded to the table's
(``.to(weight.dtype)`` in PyTorch terms).  ``max_norm`` is not handled here: renormalise the
referenced rows first, as ``F.embedding_bag`` does.
"""
from __future__ import annotations

import numpy as np

from embtool import kernels
from embtool.errors import ConfigError, IndexRangeError, ShapeError

MODES = ("sum", "mean", "max")


def embedding_bag(weight, indices, offsets=None, *, mode="mean", per_sample_weights=None,
                  include_last_offset=False, padding_idx=None):
    """Reduce bags of rows of ``weight`` (V, D); returns an array (B, D) of the weight's dtype.

    ``indices`` is 1-D with ``offsets`` (bag b starts at ``offsets[b]``), or 2-D (B, L) with
    ``offsets=None`` (B bags of L indices).  ``mode`` is "sum", "mean" or "max";
    ``per_sample_weights`` (same shape as ``indices``, mode "sum" only) scales each row;
    ``include_last_offset`` makes ``offsets`` hold B+1 boundaries (CSR); ``padding_idx``
    entries (negative values count from the end) are skipped and left out of the mean's count.
    """
    indices = _as_index_array(np.asarray(indices), "indices")
    psw = None if per_sample_weights is None else np.asarray(per_sample_weights)
    if psw is not None and psw.shape != indices.shape:
        raise ShapeError(
            f"embedding_bag: If per_sample_weights ({psw.shape}) is not None, then it must "
            f"have the same shape as the input ({indices.shape})")
    if weight.ndim != 2:
        raise ShapeError(f"weight has to be a 2D Tensor, but got Tensor of dimension {weight.ndim}")
    if indices.ndim == 2:
        if offsets is not None:
            raise ShapeError("if input is 2D, then offsets has to be None, as input is treated "
                             "as a mini-batch of fixed length sequences")
        bags, length = indices.shape
        if length == 0:
            raise ShapeError(f"embedding_bag: 2-D input of shape {indices.shape} has bags of "
                             f"length 0 (PyTorch: step must be nonzero)")
        offsets = np.arange(0, bags * length, length, dtype=np.int64)
        include_last_offset = False
        indices = indices.reshape(-1)
        psw = None if psw is None else psw.reshape(-1)
    elif indices.ndim == 1:
        if offsets is None:
            raise ShapeError("offsets has to be a 1D Tensor but got None")
        offsets = _as_index_array(np.asarray(offsets), "offsets")
        if offsets.ndim != 1:
            raise ShapeError("offsets has to be a 1D Tensor")
    else:
        raise ShapeError(f"input has to be 1D or 2D Tensor, but got Tensor of dimension {indices.ndim}")
    if mode not in MODES:
        raise ConfigError(f"mode has to be one of sum, mean or max, not {mode!r}")
    if psw is not None and mode != "sum":
        raise ConfigError("embedding_bag: per_sample_weights was not None. per_sample_weights "
                          f"is only supported for mode='sum' (got mode='{mode}')")
    num, dim = weight.shape
    padding_idx = _check_padding_idx(padding_idx, num)
    if weight.dtype not in (np.float16, np.float32, np.float64):
        raise ConfigError(f"embedding_bag: weight must be float16, float32 or float64, not {weight.dtype}")
    starts, ends = _bags(offsets, len(indices), include_last_offset)
    _check_indices(indices, num)
    return _reduce(weight, indices, starts, ends, mode, psw, padding_idx)


def _as_index_array(a, name):
    if a.size == 0 and a.dtype.kind == "f":  # an empty list parses as float64
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise ConfigError(f"embedding_bag: {name} must be integers, not {a.dtype}")
    return a.astype(np.int64, copy=False)


def _check_padding_idx(padding_idx, num):
    if padding_idx is None:
        return -1
    if not -num <= padding_idx < num:
        raise ConfigError(f"padding_idx must be within the number of embeddings, "
                          f"-{num} through {num - 1}, but got {padding_idx}")
    return int(padding_idx) % num


def _bags(offsets, n, include_last_offset):
    """(starts, ends) of each bag from validated offsets."""
    if include_last_offset and len(offsets) < 1:
        raise ShapeError("include_last_offset: number of offset should be at least 1")
    if len(offsets):
        if offsets[0] != 0:
            raise IndexRangeError(
                f"offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to "
                f"start from position 0. However, got {offsets[0]}")
        if offsets[-1] > n:
            raise IndexRangeError(f"offsets[-1] can not be greater than input's length ({n}), "
                                  f"but got offsets[-1] of {offsets[-1]}")
        down = np.flatnonzero(np.diff(offsets) < 0)
        if down.size:
            b = int(down[0]) + 1
            raise IndexRangeError(f"offsets must be non-decreasing, but offsets[{b}] = "
                                  f"{offsets[b]} is below offsets[{b - 1}] = {offsets[b - 1]}")
    if include_last_offset:
        return offsets[:-1], offsets[1:]
    return offsets, np.append(offsets[1:], np.int64(n))


def _check_indices(indices, num):
    if indices.size == 0 or (indices.min() >= 0 and indices.max() < num):
        return
    bad = np.flatnonzero((indices < 0) | (indices >= num))
    if bad.size:
        pos = int(bad[0])
        raise IndexRangeError(f"Index {pos} of input takes value {indices[pos]} which is not "
                              f"in the valid range [0, {num})")


def _reduce(weight, indices, starts, ends, mode, psw, padding_idx):
    out_dtype = weight.dtype
    fused = padding_idx < 0 and out_dtype != np.float64  # FBGEMM's fast path: float and half
    if psw is not None:
        with np.errstate(over="ignore", invalid="ignore"):  # .to(weight.dtype): 1e39 is inf
            psw = psw.astype(out_dtype)
    if weight.dtype == np.float16:
        # Gather the referenced rows once, widened exactly; PyTorch accumulates half in float.
        rows, indices = np.unique(indices, return_inverse=True)
        padding_idx = int(np.searchsorted(rows, padding_idx)) if padding_idx in rows else -1
        weight = weight[rows].astype(np.float32)
    dtype = weight.dtype
    out = np.empty((len(starts), weight.shape[1]), dtype)
    K = kernels.choose(len(indices) * weight.shape[1])
    args = (weight, indices, starts, ends)
    if mode == "max":
        K.bag_max(*args, padding_idx, out)
    elif psw is not None:
        psw = np.ascontiguousarray(psw, dtype=dtype)
        K.bag_weighted_sum(*args, psw, padding_idx, fused, out)
    else:
        divisor = np.empty(0, dtype)
        if mode == "mean" and out_dtype != np.float16:
            divisor = _counts(indices, starts, ends, padding_idx).astype(dtype)
        K.bag_sum(*args, padding_idx, divisor, out)
        if mode == "mean" and out_dtype == np.float16:
            count = _counts(indices, starts, ends, padding_idx).astype(np.float16)
            return out.astype(np.float16) / count[:, None]
    return out.astype(out_dtype, copy=False)


def _counts(indices, starts, ends, padding_idx):
    """Non-padding entries per bag, at least 1 (PyTorch's mean divisor)."""
    if padding_idx < 0:
        return np.maximum(ends - starts, 1)
    kept = np.concatenate([[0], np.cumsum(indices != padding_idx)])
    return np.maximum(kept[ends] - kept[starts], 1)
