"""Embedding backward with ``nn.Embedding`` semantics: the gradient of the weight, as rows.

``embedding_backward(indices, grad, ...)`` returns a ``RowGrad``: the rows of the weight that
receive gradient and their values (docs/semantics.md §5):

* dense (``sparse=False``): the non-zero part of torch's dense ``grad_weight``. ``rows`` are the
  distinct non-padding indices, ascending; ``values[s]`` is accumulated in input order from
  +0 with float32 adds, or with ``fma(g, f32(1/count), acc)`` under ``scale_grad_by_freq``, where
  ``count`` is the row's number of occurrences in the whole index tensor (padding positions
  counted too, though padding rows themselves get no gradient).
* sparse (``sparse=True``): torch's uncoalesced COO gradient: one entry per non-padding position,
  in input order (row-major), duplicates kept. ``coalesce()`` gives sorted unique rows with
  duplicates summed by float32 adds in input order. torch sums them in the order of an
  *unstable* sort: identical for at most 16 entries, or when no row has more than two entries
  (two-term sums commute); otherwise a row's sum can differ in the last bits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from embtool import kernels
from embtool.errors import ConfigError, ShapeError
from embtool.ids import check_ids
from embtool.config import normalize_padding_idx

def row_kernels(values: int):
    """The kernels for a row update (gradient accumulation, optimizer step) of ``values``
    float32 values."""
    return kernels.choose(values * kernels.PER_ROW_UPDATE)


#: torch's refusal, verbatim (``embedding_backward`` in ATen).
SPARSE_SCALE_MESSAGE = "embedding_backward: scale_grad_by_freq not supported with sparse gradients"


@dataclass(frozen=True)
class Segments:
    """Input entries grouped by row: gradient row s is the fma-accumulation, from +0.0, of
    ``entries[order[j]] * scale[s]`` for j in ``starts[s]:starts[s+1]`` (input order)."""

    entries: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    scale: np.ndarray


class RowGrad:
    """The gradient of a ``(num_embeddings, D)`` weight as rows: ``rows`` (int64, k) and ``values``
    (float32, k x D).  ``sparse`` tells which of torch's two layouts it is (module docstring);
    ``coalesced`` is true for a dense gradient and for the result of ``coalesce()``.

    A dense gradient keeps its ``segments`` and computes ``values`` on first use, so that an
    optimizer can fuse the accumulation into its update (plain SGD) without a k x D temporary."""

    def __init__(self, num_embeddings: int, rows: np.ndarray, values: np.ndarray | None, sparse: bool,
                 coalesced: bool, segments: Segments | None = None):
        self.num_embeddings = int(num_embeddings)
        self.rows = rows
        self._values = values
        self.sparse = sparse
        self.coalesced = coalesced
        self.segments = segments
        self._groups = None

    def __repr__(self) -> str:
        kind = "sparse" if self.sparse else "dense"
        return f"RowGrad({kind}, {self.rows.size} rows of {self.num_embeddings} x {self.embedding_dim})"

    @property
    def values(self) -> np.ndarray:
        if self._values is None:
            seg = self.segments
            out = np.empty((self.rows.size, seg.entries.shape[1]), np.float32)
            row_kernels(seg.entries.size).scatter_rows(
                seg.entries, seg.order, seg.starts[:-1], seg.starts[1:], seg.scale, True, out)
            self._values = out
        return self._values

    @property
    def embedding_dim(self) -> int:
        arr = self._values if self._values is not None else self.segments.entries
        return int(arr.shape[1])

    def groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(order, rows, starts)`` of the entries grouped by row (``group_entries``), computed
        once: SGD applies the entries by group and the step's summary needs the coalesced norm."""
        if self._groups is None:
            self._groups = group_entries(self.rows, -1, self.num_embeddings)
        return self._groups

    def coalesce(self) -> "RowGrad":
        """Sorted unique rows, duplicates summed as torch's ``coalesce()`` (see module doc)."""
        if self.coalesced:
            return self
        order, rows, starts = self.groups()
        # torch copies the first entry of a row and adds the others (a lone -0.0 stays -0.0).
        out = self.values[order[starts[:-1]]]
        ones = np.ones(rows.size, np.float32)
        row_kernels(self.values.size).scatter_rows(
            self.values, order, starts[:-1] + 1, starts[1:], ones, False, out)
        return RowGrad(self.num_embeddings, rows, out, self.sparse, True)

    def norm(self) -> float:
        """L2 norm of the coalesced gradient, in float64.  Rows given by one entry are that entry
        (most rows of a sparse step): only the rows with several entries are summed first."""
        if self.coalesced and (self._values is not None or self.segments is None):
            v = self.values
            return float(math.sqrt(np.einsum("ij,ij->", v, v, dtype=np.float64))) if v.size else 0.0
        if self.coalesced:  # dense, still as segments
            seg = self.segments
            entries, order, starts, scale = seg.entries, seg.order, seg.starts, seg.scale
        else:
            entries, scale = self.values, None
            order, _, starts = self.groups()
        if order.size == 0:
            return 0.0
        counts = np.diff(starts)
        one = counts == 1
        # squares of every entry in one pass (no copy), then those of the rows of one entry
        squares = np.einsum("ij,ij->i", entries, entries, dtype=np.float64)[order[starts[:-1][one]]]
        if scale is not None:
            squares *= np.square(scale[one], dtype=np.float64)
        total = float(squares.sum())
        if not one.all():  # the rows with several entries, summed as coalesce() sums them
            many = np.flatnonzero(~one)
            sub_starts = np.concatenate([[0], np.cumsum(counts[many])])
            own = np.repeat(np.arange(many.size), counts[many])
            picked = order[starts[many][own] + np.arange(own.size) - sub_starts[own]]
            if scale is None:
                sub = RowGrad(many.size, own, entries[picked], True, False)
            else:
                sub = RowGrad(many.size, np.arange(many.size), None, False, True,
                              Segments(entries[picked], np.arange(picked.size), sub_starts, scale[many]))
            v = sub.coalesce().values
            total += float(np.einsum("ij,ij->", v, v, dtype=np.float64))
        return math.sqrt(total)

    def to_dense(self) -> np.ndarray:
        """The full ``(num_embeddings, D)`` gradient (tests and small tables only)."""
        c = self.coalesce()
        dense = np.zeros((self.num_embeddings, self.embedding_dim), np.float32)
        dense[c.rows] = c.values
        return dense


def group_entries(flat: np.ndarray, padding_idx: int, num_embeddings: int):
    """``(order, rows, starts)`` of the ``backward.group_rows`` kernel for a flat int64 array."""
    K = kernels.choose(flat.size)
    return K.group_rows(flat, np.int64(padding_idx), np.int64(num_embeddings))


def embedding_backward(
    indices,
    grad,
    *,
    num_embeddings: int,
    padding_idx: int | None = None,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> RowGrad:
    """The weight gradient of ``F.embedding(indices, weight, padding_idx, ...)`` for upstream
    gradient ``grad`` of shape ``indices.shape + (D,)`` (module docstring for the layouts)."""
    if num_embeddings < 0:
        raise ConfigError(f"num_embeddings must be >= 0, not {num_embeddings}")
    if sparse and scale_grad_by_freq:
        raise ConfigError(SPARSE_SCALE_MESSAGE)
    idx = check_ids(indices, num_embeddings)
    grad = np.asarray(grad)
    if grad.ndim != idx.ndim + 1 or grad.shape[:-1] != idx.shape:
        raise ShapeError(
            f"gradient shape {tuple(grad.shape)} does not match indices shape {tuple(idx.shape)} + (D,)"
        )
    if grad.dtype != np.float32:
        raise ConfigError(f"gradient must be float32, got {grad.dtype}")
    pad = normalize_padding_idx(padding_idx, num_embeddings)
    pad = -1 if pad is None else pad
    flat = np.ascontiguousarray(idx.reshape(-1))
    values = np.ascontiguousarray(grad.reshape(flat.size, grad.shape[-1]))
    if sparse:
        if pad < 0:  # nothing to drop: the entries are the input, without a copy
            return RowGrad(num_embeddings, flat, values, True, False)
        keep = flat != pad
        return RowGrad(num_embeddings, flat[keep], values[keep], True, False)
    order, rows, starts = group_entries(flat, pad, num_embeddings)
    counts = np.diff(starts)
    # f32(1.0/count) as ATen computes it: the reciprocal in double, then rounded.
    scale = (1.0 / counts).astype(np.float32) if scale_grad_by_freq else np.ones(rows.size, np.float32)
    return RowGrad(num_embeddings, rows, None, False, True, Segments(values, order, starts, scale))
