"""Cosine neighbours with gensim's ``KeyedVectors.most_similar`` semantics, streamed.

The table is read once per search, in chunks of rows (about ``CHUNK_BYTES``), so a
memory-mapped table larger than RAM can be searched with little anonymous memory.  Per chunk,
the row norms (kept with the table, see ``embtool.norms``; otherwise computed while the chunk is
in the CPU cache, and then kept) and a BLAS matrix-vector product give the scores, and a running
top-k keeps the best rows.  Many queries are scored with one matrix product per chunk instead;
the candidates it proposes are rescored with gensim's matrix-vector arithmetic, so that every
query gets exactly the result it would get alone (``search_exact``).

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
from embtool.kernels.common import EMPTY, MAX_ROW, encode_keys
from embtool.norms import row_norms

#: rows are streamed in chunks of about this many bytes (of float32).
CHUNK_BYTES = 48 << 20
#: bytes of scores computed at once for many queries (bounds the matrix product's output).
SCORE_BYTES = 32 << 20
#: scores of one query merged into the running top-k at once
SELECT_SCORES = 1 << 17

f32 = np.float32
f64 = np.float64


def most_similar(weight, vocab, positive, negative=(), *, topn=10, restrict_vocab=None,
                 norms=None, chunk_rows=None):
    """Top-``topn`` rows by cosine similarity to the query, best first: ``[(row, score), ...]``.

    ``positive`` / ``negative``: a row id, a 1-D vector, an ``(item, weight)`` tuple, or a
    list of those (weights default to +1 / -1 and replace the default as given, as gensim).
    ``vocab`` (or None) only names rows in error messages.  ``restrict_vocab=N`` searches rows
    ``0..N-1``; ``topn=None`` ranks every searched row; ``topn <= 0`` gives ``[]``.
    ``norms``: the table's row norms if known (see ``search``).
    """
    return most_similar_many(weight, vocab, [(positive, negative)], topn=topn,
                             restrict_vocab=restrict_vocab, norms=norms, chunk_rows=chunk_rows)[0]


def most_similar_many(weight, vocab, queries, *, topn=10, restrict_vocab=None, norms=None,
                      chunk_rows=None, progress=None, labels=None):
    """``most_similar`` of many ``(positive, negative)`` queries in one pass over the table
    (matrix products over each chunk of rows, then the proposals rescored as a single query
    would be: the results are those of one ``most_similar`` call per query).  ``labels``
    name the queries in error messages."""
    queries = list(queries)
    if isinstance(topn, Integral) and topn < 1:
        return [[] for _ in queries]
    stop = search_stop(weight, restrict_vocab)
    if not queries:
        return []
    units, exclude = unit_queries(weight, [_items(p, 1.0) + _items(n, -1.0) for p, n in queries],
                                  vocab, labels)
    k = stop if topn is None else min(int(topn), stop)
    best = search_exact(weight, units, exclude, k, stop, norms=norms, chunk_rows=chunk_rows,
                        progress=progress)
    rows, scores = decode_arrays(best)
    return [[(r, s) for r, s in zip(rr, ss) if r >= 0]
            for rr, ss in zip(rows.tolist(), scores.astype(f64).tolist())]


def unit_queries(weight, item_lists, vocab=None, labels=None):
    """``unit_query`` of many queries: (Q, D) float32 unit queries and (Q, e) int64 rows to
    exclude (-1 pads).  Queries made of rows only (the common case) are computed together.
    A refused query raises, its message prefixed with its label if given."""
    num = weight.shape[0]
    width = max([sum(not isinstance(x, np.ndarray) for x, _ in items) for items in item_lists] + [1])
    ids = np.full((len(item_lists), width), -1, np.int64)
    weights = np.zeros((len(item_lists), width), f64)
    rows_only = np.zeros(len(item_lists), bool)
    for q, items in enumerate(item_lists):
        rows_only[q] = bool(items) and not any(isinstance(x, np.ndarray) for x, _ in items)
        rows = [(x, w) for x, w in items if not isinstance(x, np.ndarray)]
        if rows_only[q] and not all(0 <= x < num for x, _ in rows):
            rows_only[q] = False  # unit_query below names the row
        elif rows:
            ids[q, :len(rows)], weights[q, :len(rows)] = zip(*rows)
    units = np.empty((len(item_lists), weight.shape[1]), f32)
    fast = np.flatnonzero(rows_only)
    ok = np.ones(0, bool)
    if fast.size:
        units[fast], ok = mean_units(weight, ids[fast], weights[fast])
    for q in np.sort(np.concatenate([fast[~ok], np.flatnonzero(~rows_only)])):
        try:
            units[q], exclude = unit_query(weight, item_lists[q], vocab)  # raises if refused
        except EmbtoolError as exc:
            if labels is None:
                raise
            raise type(exc)(f"{labels[q]}: {exc}") from None
        ids[q, :len(exclude)] = exclude
    return units, ids


def mean_units(weight, ids, weights, given=None):
    """gensim's unit mean of unit rows, ``unitvec(sum(w_j * unit(row_j)) / sum(|w_j|))``,
    for many queries at once: ids (Q, m) (-1 pads), weights (Q, m) float64.  ``given``: float32
    vectors (G, D) that ids ``len(weight) + g`` stand for, used as they are (gensim does not
    normalise a vector given as a query item; the unit subword vectors of ``evaluate``).

    The float32 accumulation runs in item order for every query, as ``unit_query``'s loop.
    Returns (unit queries (Q, D) float32, valid (Q,)): a query is invalid when one of its rows
    or its mean has zero or non-finite norm.
    """
    q, m = ids.shape
    num = weight.shape[0]
    present = ids >= 0
    extra = ids >= num if given is not None else np.zeros_like(present)
    vecs = as_f32(weight[np.where(present & ~extra, ids, 0).reshape(-1)])
    norms = row_norms(vecs).reshape(q, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        units = (vecs.reshape(q, m, -1) / norms[..., None])
    if extra.any():
        units[extra] = given[ids[extra] - num]
    valid = (~present | extra | (np.isfinite(norms) & (norms > 0))).all(axis=1)
    mean = np.zeros((q, weight.shape[1]), f32)
    total = np.zeros(q, f64)
    for j in range(m):  # gensim: float32 ``mean += w * vec``, item by item
        step = (mean.astype(f64) + weights[:, j, None] * units[:, j].astype(f64)).astype(f32)
        mean = np.where(present[:, j, None], step, mean)
        total = np.where(present[:, j], total + np.abs(weights[:, j]), total)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean64 = np.where(total[:, None] > 0, mean / total[:, None], mean.astype(f64))
    out, qnorms = unitvec(mean64)
    return out, valid & np.isfinite(qnorms) & (qnorms > 0)


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
    if not items:
        raise EmbtoolError("cannot compute similarity with no input")
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
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: refused just below
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
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # inf norms: callers refuse them
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


def chunk_size(weight, chunk_rows=None):
    """Rows per chunk: a multiple of 4 (BLAS gemv's row blocking, so scores match gensim's)."""
    if chunk_rows is None:
        chunk_rows = CHUNK_BYTES // max(1, 4 * weight.shape[1])
    return max(4, int(chunk_rows) // 4 * 4)


def iter_chunks(weight, stop, chunk_rows=None, start=0):
    """Yield ``(first_row, float32 rows)`` over ``weight[start:stop]``."""
    step = chunk_size(weight, chunk_rows)
    for lo in range(start, stop, step):
        yield lo, as_f32(weight[lo:min(lo + step, stop)])


def search(weight, queries, exclude, k, stop, *, norms=None, chunk_rows=None, progress=None,
           observe=None, start=0):
    """Best ``k`` keys per query over rows ``start..stop-1`` (the keys: ``kernels/common.py``;
    ``start``, a chunk boundary, lets a task of a sharded table search its part of the table in
    the chunks a search of the whole table would use).

    queries: (Q, D) float32 unit vectors; exclude: (Q, e) int64 rows to skip (-1 pads).
    ``norms``: the row norms of ``weight`` as a ``RowNorms`` (used, or computed on the way and
    kept, with those of the rows past ``stop``; see ``embtool.norms``), an array of at least
    ``stop`` float32 norms, or None (computed on the way, chunk by chunk).
    One query uses a matrix-vector product (gensim's arithmetic): over all rows at once when the
    norms are known and the table is float32, as gensim does; many queries use matrix products
    per chunk, whose scores may differ from gensim's in the last bits (``search_exact`` corrects
    them).  ``observe(lo, rows, norms)`` sees every chunk (table statistics ride on the same
    pass); ``progress(n)`` is called with the number of rows done.  The rows of a sharded table
    are searched by its tasks, chunk by chunk as here (``ShardedTable.search``).
    """
    if stop > MAX_ROW:
        raise ConfigError(f"tables of more than {MAX_ROW} rows cannot be searched")
    sharded = getattr(weight, "sharded_table", None)
    if sharded is not None:
        return sharded.search(queries, exclude, k, stop, norms=norms, chunk_rows=chunk_rows,
                              progress=progress, observe=observe)
    known, keep = _known_norms(norms, weight, stop)
    q = len(queries)
    best = np.full((q, k), EMPTY, np.int64)
    buf = None
    whole = (known is not None and q == 1 and chunk_rows is None and observe is None and start == 0
             and isinstance(weight, np.ndarray) and weight.dtype == f32)
    chunks = [(0, weight[:stop])] if whole else iter_chunks(weight, stop, chunk_rows, start)
    for lo, rows in chunks:
        hi = lo + len(rows)
        chunk_norms = known[lo:hi] if known is not None else row_norms(rows)
        if keep is not None:
            keep[lo:hi] = chunk_norms
        if observe is not None:
            observe(lo, rows, chunk_norms)
        if k:
            block = max(1, SCORE_BYTES // (4 * len(rows)))
            if q > 1 and buf is None:
                buf = np.empty(min(q, block) * len(rows), f32)
            for q0 in range(0, q, block):
                scores = _scores(rows, chunk_norms, queries[q0:q0 + block], buf)
                _select(scores, lo, exclude[q0:q0 + block], best[q0:q0 + block])
        if progress is not None:
            progress(len(rows))
    if keep is not None:
        for lo, rows in iter_chunks(weight, len(keep), chunk_rows, start=stop):
            row_norms(rows, out=keep[lo:lo + len(rows)])  # the rows past restrict_vocab
        norms.keep(keep)
    return best


def _select(scores, lo, exclude, best):
    """Merge scores (Q, n) of rows ``lo..`` into the running top-k ``best`` (Q, k).

    Once a query has k numbers in ``best``, a row scoring below its k-th cannot enter, so only
    the rows at or above it are encoded and merged (``_merge_above``): after the first rows,
    a small fraction.  Queries whose k-th slot is still empty or NaN go through the top-k
    kernel, one query's scores in pieces of ``SELECT_SCORES`` so that a single query never
    imports Numba (``kernels.NUMBA_MIN_WORK``).  The result is the kernel's, key for key.
    """
    start = 0
    while start < scores.shape[1]:
        _, kth = decode_arrays(best[:, -1])  # NaN for an empty slot
        filling = np.flatnonzero(np.isnan(kth))
        if filling.size == 0:
            _merge_above(scores[:, start:], lo + start, exclude, best, kth)
            return
        step = SELECT_SCORES if len(scores) == 1 else scores.shape[1]
        part = scores[:, start:start + step]
        select = kernels.choose(part.size).select
        if filling.size == len(best):
            select(part, lo + start, exclude, best)
        else:
            sub = best[filling]
            select(np.ascontiguousarray(part[filling]), lo + start, exclude[filling], sub)
            best[filling] = sub
            ready = np.flatnonzero(~np.isnan(kth))
            sub = best[ready]
            _merge_above(part[ready], lo + start, exclude[ready], sub, kth[ready])
            best[ready] = sub
        start += part.shape[1]


def _merge_above(scores, lo, exclude, best, kth):
    """Merge into ``best`` the rows scoring at least ``kth`` (each query's k-th score, a number)."""
    q, k = best.shape
    qq, jj = np.nonzero(scores >= kth[:, None])
    if qq.size == 0:
        return
    rows = lo + jj
    if exclude.size:
        kept = ~(exclude[qq] == rows[:, None]).any(axis=1)
        qq, jj, rows = qq[kept], jj[kept], rows[kept]
    keys = np.concatenate([best.reshape(-1), encode_keys(scores[qq, jj], rows)])
    owner = np.concatenate([np.repeat(np.arange(q), k), qq])
    order = np.lexsort((~keys, owner))  # by query, then best key first
    first = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=q))[:-1]])
    best[...] = keys[order[(first[:, None] + np.arange(k)).reshape(-1)]].reshape(q, k)


def _known_norms(norms, weight, stop):
    """(norms to use or None, array to fill for ``RowNorms.keep`` or None)."""
    if norms is None or isinstance(norms, np.ndarray):
        return norms, None
    known = norms.get()
    return known, (np.empty(weight.shape[0], f32) if known is None else None)


def _scores(rows, norms, queries, buf):
    """Cosine scores (Q, n) of a chunk: gensim's ``dot(rows, query) / norms`` for one query."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if len(queries) == 1:
            scores = rows @ queries[0]
            return np.divide(scores, norms, out=scores)[None, :]
        out = buf[:len(queries) * len(rows)].reshape(len(queries), len(rows))
        np.matmul(queries, rows.T, out=out)
        return np.divide(out, norms, out=out)


def search_exact(weight, queries, exclude, k, stop, *, norms=None, extra=None, chunk_rows=None,
                 progress=None):
    """``search`` whose result is, for every query, that of a search of that query alone
    (gensim's matrix-vector arithmetic), at the cost of matrix products for many queries.

    One pass with matrix products proposes ``k + extra`` rows per query; their scores are
    recomputed with matrix-vector products; a proposal is accepted when no row outside it can
    reach the top ``k`` given the rounding error bound of the two computations (``margin``).
    The rare remaining queries get one more pass, with matrix-vector products.
    """
    q = len(queries)
    if extra is None:
        extra = max(8, k // 2)
    width = -(-(k + extra) // 4) * 4  # rescored in groups of 4 rows, as BLAS does in the pass
    if q <= 1 or k == 0:
        return search(weight, queries, exclude, k, stop, norms=norms, chunk_rows=chunk_rows,
                      progress=progress)
    if width >= stop:
        return search_each(weight, queries, exclude, k, stop, norms=norms, chunk_rows=chunk_rows,
                           progress=progress)
    proposed = search(weight, queries, exclude, width, stop, norms=norms,
                      chunk_rows=chunk_rows, progress=progress)
    if not isinstance(norms, np.ndarray) and norms is not None:
        norms = norms.get()
    best, sure = rescore(weight, queries, proposed, k, margin(weight.shape[1]), norms)
    todo = np.flatnonzero(~sure)
    if todo.size:
        exact = search_each(weight, queries[todo], exclude[todo], k, stop, norms=norms,
                            chunk_rows=chunk_rows)
        best[todo] = exact
    return best


def search_each(weight, queries, exclude, k, stop, *, norms=None, chunk_rows=None,
                progress=None, start=0):
    """``search`` with a matrix-vector product per query and chunk (gensim's arithmetic for
    each query), in one pass over the table (rows ``start..stop-1``, as ``search``)."""
    sharded = getattr(weight, "sharded_table", None)
    if sharded is not None:
        return sharded.search(queries, exclude, k, stop, norms=norms, chunk_rows=chunk_rows,
                              progress=progress, each=True)
    best = np.full((len(queries), k), EMPTY, np.int64)
    known = norms if norms is None or isinstance(norms, np.ndarray) else norms.get()
    for lo, rows in iter_chunks(weight, stop, chunk_rows, start):
        chunk_norms = known[lo:lo + len(rows)] if known is not None else row_norms(rows)
        for i in range(len(queries)):
            scores = _scores(rows, chunk_norms, queries[i:i + 1], None)
            _select(scores, lo, exclude[i:i + 1], best[i:i + 1])
        if progress is not None:
            progress(len(rows))
    return best


def margin(dim):
    """Bound on |matrix-product score - matrix-vector score| for unit queries (any summation
    order of D float32 products: 2*gamma_D*|x||q|, plus the division's rounding)."""
    u = 2.0 ** -24
    gamma = dim * u / (1 - dim * u)
    return 2.02 * gamma + 4.04 * u


def rescore(weight, queries, proposed, k, tol, norms=None, block_bytes=SCORE_BYTES):
    """The best ``k`` keys per query among the proposed rows, their scores recomputed with
    gensim's arithmetic (a matrix-vector product over the query's rows), and whether they are
    certainly the best ``k`` of the whole table: the ``k``-th exact score beats the last
    proposal's score by more than ``tol``, or nothing was left out."""
    cand, _ = decode_arrays(proposed)
    q, width = cand.shape
    best = np.full((q, k), EMPTY, np.int64)
    kth = np.full(q, np.nan, f32)
    block = max(1, block_bytes // max(1, 4 * width * weight.shape[1]))
    for lo in range(0, q, block):
        c = cand[lo:lo + block]
        present = c >= 0
        flat = np.where(present, c, 0).reshape(-1)
        vecs = as_f32(weight[flat])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            n = (norms[flat] if norms is not None else row_norms(vecs)).reshape(c.shape)
            # a matrix-vector product per query over its proposed rows (BLAS gemv, rows in
            # groups of 4 as in the table pass)
            dots = np.matmul(vecs.reshape(*c.shape, -1), queries[lo:lo + block, :, None])[..., 0]
            scores = dots / n
        keys = np.where(present, encode_keys(scores, c), EMPTY)
        keys = np.sort(keys, axis=1)[:, ::-1][:, :k]
        best[lo:lo + block, :keys.shape[1]] = keys
        if keys.shape[1] == k:
            kth[lo:lo + block] = decode_arrays(keys[:, -1])[1]
    last = proposed[:, -1]
    _, last_score = decode_arrays(last)
    with np.errstate(invalid="ignore"):
        sure = (last == EMPTY) | np.isnan(last_score) | (kth > last_score + f64(tol))
    return best, sure


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
