"""Cosine neighbours with gensim's ``KeyedVectors.most_similar`` semantics, streamed.

The table is read in chunks of rows (about ``CHUNK_BYTES``), so a memory-mapped table larger
than RAM can be searched with little anonymous memory: per chunk the row norms and a BLAS
matrix-vector product give the scores, and a running top-k keeps the best rows.

Arithmetic follows gensim 4.4 (docs/semantics.md §8.1) on a float32 table:

* row norms ``np.linalg.norm(rows, axis=1)`` in float32; a query row's unit vector is
  ``row / norm`` in float32; raw vectors are used as given (not normalised);
* the query ``sum(w_i * u_i) / sum(|w_i|)`` accumulates in a float32 vector with float64
  products, is divided in float64, unit-normalised in float64 and rounded to float32;
* ``score = (rows @ query) / norms`` in float32, so scores agree with gensim's bit for bit
  except where BLAS itself splits the work differently (a few rows per call, 1 ulp).

Tables of other dtypes are converted to float32 chunk by chunk.

Choices where gensim is silent or unhelpful:

* Ranking is a total order: higher score first, equal scores by lower row id, and rows whose
  score is NaN (zero rows, rows with inf/nan) after every number, by row id.  gensim also sorts
  NaN last but leaves the order of ties unspecified.  As in gensim, a nonzero row whose float32
  norm underflows to 0 (every |x| below about 1e-19) scores +-inf.
* A query that cannot be normalised is refused (``EmbtoolError``) instead of producing NaN or
  all-zero scores: an input row with zero or non-finite norm, or a query whose weighted mean
  has zero norm (e.g. a word minus itself, or a zero vector).
* Row ids given as input are excluded from the results, vectors are not (as gensim).
* ``restrict_vocab`` must not be negative (gensim would silently search all rows but the last).
"""
from __future__ import annotations

import math
from numbers import Integral

import numpy as np

from embtool import kernels
from embtool.errors import ConfigError, EmbtoolError, IndexRangeError, ShapeError
from embtool.kernels._numpy.topk import EMPTY, MAX_ROW

#: rows are streamed in chunks of about this many bytes (of float32).
CHUNK_BYTES = 48 << 20
#: bytes of scores computed at once for many queries (bounds the matrix product's output).
SCORE_BYTES = 32 << 20

f32 = np.float32
f64 = np.float64


def most_similar(weight, vocab, positive, negative=(), *, topn=10, restrict_vocab=None,
                 chunk_rows=None):
    """Top-``topn`` rows by cosine similarity to the query, best first: ``[(row, score), ...]``.

    ``positive`` / ``negative``: a row id, a 1-D vector, an ``(item, weight)`` tuple, or a
    list of those (weights default to +1 / -1 and replace the default as given, as gensim).
    ``vocab`` (or None) only names rows in error messages.  ``restrict_vocab=N`` searches rows
    ``0..N-1``; ``topn=None`` ranks every searched row; ``topn <= 0`` gives ``[]``.
    """
    items = _items(positive, 1.0) + _items(negative, -1.0)
    if isinstance(topn, Integral) and topn < 1:
        return []
    if not items:
        raise EmbtoolError("cannot compute similarity with no input")
    stop = search_stop(weight, restrict_vocab)
    query, exclude = unit_query(weight, items, vocab)
    k = stop if topn is None else min(int(topn), stop)
    best = search(weight, query[None, :], exclude[None, :], k, stop, chunk_rows=chunk_rows)
    return decode(best[0])


def search_stop(weight, restrict_vocab):
    """End of the searched rows: ``restrict_vocab`` (gensim: a falsy value means all rows)."""
    if weight.ndim != 2:
        raise ShapeError(f"similarity needs a 2-D table, got {weight.ndim} dimensions")
    if not restrict_vocab:
        return weight.shape[0]
    if restrict_vocab < 0:
        raise ConfigError(f"restrict_vocab must be positive, got {restrict_vocab}")
    return min(int(restrict_vocab), weight.shape[0])


def _items(value, default_weight):
    """gensim's ``_ensure_list`` plus weights: a list of (row id or vector, weight)."""
    if value is None:
        return []
    if isinstance(value, (Integral, np.integer)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        value = [value]
    elif isinstance(value, np.ndarray) and value.ndim == 2:
        value = list(value)
    items = []
    for item in value:
        if isinstance(item, (Integral, np.integer, np.ndarray)):
            items.append((item, default_weight))
        elif isinstance(item, (tuple, list)) and len(item) == 2 and not isinstance(item[0], str):
            items.append((item[0], float(item[1])))
        else:
            raise EmbtoolError(f"a query item must be a row id, a vector or an (item, weight) "
                               f"pair, not {item!r}")
    return items


def _row_name(vocab, row):
    return f"row {row}" if vocab is None else f"row {row} ({vocab.word(row)!r})"


def unit_query(weight, items, vocab=None):
    """gensim's ``get_mean_vector(..., pre_normalize=True, post_normalize=True)``.

    Returns the float32 unit query and the int64 row ids to exclude from the results.
    """
    num, dim = weight.shape
    ids = []
    for item, _ in items:
        if not isinstance(item, np.ndarray):
            if not 0 <= item < num:
                raise IndexRangeError(f"row id {item} is out of range [0, {num})")
            ids.append(int(item))
    rows = as_f32(weight[np.array(ids, np.int64)]) if ids else np.empty((0, dim), f32)
    norms = row_norms(rows)
    mean = np.zeros(dim, f32)
    total = 0.0
    j = 0
    for item, w in items:
        if isinstance(item, np.ndarray):
            if item.shape != (dim,):
                raise ShapeError(f"query vector has shape {item.shape}, the table's rows have ({dim},)")
            term = f64(w) * np.asarray(item, f64)
        else:
            if not (norms[j] > 0 and np.isfinite(norms[j])):
                raise EmbtoolError(f"{_row_name(vocab, ids[j])} has norm {norms[j]}: its cosine "
                                   f"similarity is undefined")
            term = f64(w) * (rows[j] / norms[j]).astype(f64)
            j += 1
        mean = (mean.astype(f64) + term).astype(f32)  # gensim: float32 ``mean += w * vec``
        total += abs(w)
    mean64 = mean / f64(total) if total > 0 else mean.astype(f64)
    return unit_f64(mean64, "the query"), np.array(ids, np.int64)


def unitvec(vecs):
    """gensim's ``matutils.unitvec`` on float64 vectors (..., D), rounded to float32.

    gensim calls BLAS dnrm2 and dscal in float64; an 80-bit sum of squares reproduces
    OpenBLAS's x87 dnrm2 far better than a float64 dot.  Like gensim, vectors whose norm is
    not positive (zero, NaN) are returned unchanged.  Returns (unit vectors, norms).
    """
    vecs = np.asarray(vecs, f64)
    norms = np.sqrt(np.sum(np.square(vecs.astype(np.longdouble)), axis=-1)).astype(f64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(norms > 0, 1.0 / norms, 1.0)
    return (vecs * scale[..., None]).astype(f32), norms


def unit_f64(vec, what):
    """``unitvec`` of one query, refusing a query whose norm is zero or not finite."""
    unit, norm = unitvec(vec)
    if not (norm > 0 and math.isfinite(norm)):
        raise EmbtoolError(f"{what} has norm {norm}: cosine similarity is undefined")
    return unit


def as_f32(rows):
    return rows if rows.dtype == f32 else rows.astype(f32)


def row_norms(rows, buf=None):
    """``np.linalg.norm(rows, axis=1)`` bit for bit (float32), optionally into a scratch buffer."""
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.multiply(rows, rows, out=None if buf is None else buf[: len(rows)])
        return np.sqrt(np.add.reduce(sq, axis=1))


def chunk_size(weight, chunk_rows=None):
    """Rows per chunk: a multiple of 4 (BLAS gemv's row blocking, so scores match gensim's)."""
    if chunk_rows is None:
        chunk_rows = CHUNK_BYTES // max(1, 4 * weight.shape[1])
    return max(4, int(chunk_rows) // 4 * 4)


def iter_chunks(weight, stop, chunk_rows=None, start=0):
    """Yield ``(first_row, float32 rows)`` over ``weight[start:stop]`` (``start``: a chunk
    boundary, so that every row is scored in the same chunk whoever scans it)."""
    step = chunk_size(weight, chunk_rows)
    for lo in range(start, stop, step):
        yield lo, as_f32(weight[lo:min(lo + step, stop)])


def search(weight, queries, exclude, k, stop, *, chunk_rows=None, progress=None, observe=None, start=0):
    """Best ``k`` keys per query over rows ``start..stop-1`` (see ``kernels/_numpy/topk.py``).

    queries: (Q, D) float32 unit vectors; exclude: (Q, e) int64 rows to skip (-1 pads).
    One query uses a matrix-vector product per chunk (gensim's arithmetic); many queries use
    matrix products, whose scores may differ from gensim's in the last bits.  ``observe(lo,
    rows, norms)`` sees every chunk (table statistics ride on the same pass); ``progress(n)``
    is called with the number of rows done.  The rows of a sharded table are searched by its
    tasks, chunk by chunk as here (``ShardedTable.search``).
    """
    if stop > MAX_ROW:
        raise ConfigError(f"tables of more than {MAX_ROW} rows cannot be searched")
    sharded = getattr(weight, "sharded_table", None)
    if sharded is not None:
        return sharded.search(queries, exclude, k, stop, chunk_rows=chunk_rows, progress=progress,
                              observe=observe)
    q = len(queries)
    best = np.full((q, k), EMPTY, np.int64)
    buf = None
    for lo, rows in iter_chunks(weight, stop, chunk_rows, start):
        if buf is None:
            buf = np.empty_like(rows)
        norms = row_norms(rows, buf)
        if observe is not None:
            observe(lo, rows, norms)
        if k:
            block = max(1, SCORE_BYTES // (4 * len(rows)))
            for q0 in range(0, q, block):
                scores = _scores(rows, norms, queries[q0:q0 + block])
                select = kernels.get("topk.select", scores.size)
                select(scores, lo, exclude[q0:q0 + block], best[q0:q0 + block])
        if progress is not None:
            progress(len(rows))
    return best


def _scores(rows, norms, queries):
    with np.errstate(divide="ignore", invalid="ignore"):
        if len(queries) == 1:
            return (rows @ queries[0] / norms)[None, :]
        return np.ascontiguousarray(queries @ rows.T) / norms


def decode(keys):
    """Keys of one query (best first) to ``[(row, score), ...]`` with Python values."""
    keys = np.asarray(keys, np.int64)
    keys = keys[keys != EMPTY]
    rows, scores = decode_arrays(keys)
    return [(int(r), float(s)) for r, s in zip(rows, scores)]


def decode_arrays(keys):
    """Keys (any shape) to (row ids int64, scores float32); EMPTY slots give row -1."""
    keys = np.asarray(keys, np.int64)
    rank = keys >> 32
    rows = MAX_ROW - (keys & MAX_ROW)
    bits = (rank ^ ((rank >> 31) & 0x7FFFFFFF)).astype(np.int32)
    scores = np.where(rank == np.iinfo(np.int32).min, f32(np.nan), bits.view(f32))
    rows = np.where(keys == EMPTY, -1, rows)
    return rows, scores.astype(f32)
