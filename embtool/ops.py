"""Checked public operations on tables and on in-memory arrays: init, lookup (F.embedding),
max_norm renormalisation (torch.embedding_renorm_).

The in-memory functions ``embedding`` and ``embedding_renorm_`` take numpy arrays and behave as
their PyTorch namesakes (renorm mutates the array, as torch mutates ``weight``); the table functions
read rows from the memory-mapped file and write changed rows back in place (one logged transaction).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import dtypes, kernels
from .errors import ConfigError, ShapeError
from .ids import check_ids, distinct
from .store import ChunkedTensor
from .config import Config
from .dtypes import bf16_to_f32, f32_to_bf16, value_dtype, widen
from .table import Table, create

f32 = np.float32
#: rows per chunk when a whole table is streamed (about 64 MB of float32 at D=128)
STREAM_BYTES = 64 << 20


# --------------------------------------------------------------------------------------------
# Norms and renorm on blocks of rows


def row_norms(rows: np.ndarray, norm_type: float) -> np.ndarray:
    """Norms of a 2-D block as torch computes them (float32 bit-exact; float64 in double)."""
    rows = np.asarray(rows)
    if rows.dtype == np.float64:
        return _norms_f64(rows, norm_type)
    rows = np.ascontiguousarray(rows, f32)
    return kernels.choose(rows.size).row_norms(rows, float(norm_type))


def _norms_f64(rows, p):
    p = float(p)
    a = np.abs(rows)
    if p == 0:
        return (rows != 0).sum(axis=1).astype(np.float64)
    if np.isinf(p):
        return (a.max(axis=1) if p > 0 else a.min(axis=1)) if rows.shape[1] else np.zeros(len(rows))
    if p == 2:
        return np.sqrt((rows * rows).sum(axis=1))
    if p == 1:
        return a.sum(axis=1)
    return (a ** p).sum(axis=1) ** (1.0 / p)


def renorm_block(rows: np.ndarray, max_norm: float, norm_type: float) -> np.ndarray:
    """Renormalise a writable block of rows in place (PyTorch's formula); the mask of rows changed.

    float32 rows follow torch bit for bit: ``scale = f32(max_norm / (norm + 1e-7))`` computed in
    double, applied with one float32 multiply, only where ``norm > max_norm``.  float64 rows use
    the double scale (torch multiplies a double weight by the double scale).
    """
    with np.errstate(all="ignore"):  # IEEE arithmetic as torch's (any max_norm, norm_type)
        if rows.dtype == np.float64:
            norms = _norms_f64(rows, norm_type)
            hit = norms > max_norm
            rows[hit] *= (max_norm / (norms[hit] + 1e-7))[:, None]
            return hit
        return kernels.choose(rows.size).renorm_rows(rows, float(max_norm), float(norm_type))


# --------------------------------------------------------------------------------------------
# In-memory API (numpy arrays), the counterparts of F.embedding and torch.embedding_renorm_


def embedding_renorm_(weight: np.ndarray, ids, max_norm: float, norm_type: float = 2.0) -> int:
    """``torch.embedding_renorm_``: renorm, in place, each distinct row of ``weight`` named in
    ``ids`` whose norm exceeds ``max_norm``; returns the number of rows changed."""
    _check_weight(weight, writable=True)
    flat = check_ids(ids, weight.shape[0]).reshape(-1)
    if weight.dtype == np.float32:
        K = kernels.choose(flat.size * max(1, weight.shape[1]))
        with np.errstate(all="ignore"):  # IEEE arithmetic as torch's (any max_norm, norm_type)
            return int(K.renorm_ids(weight, flat, float(max_norm), float(norm_type)))
    rows = distinct(flat)
    block = weight[rows]
    hit = renorm_block(block, max_norm, norm_type)
    weight[rows[hit]] = block[hit]
    return int(hit.sum())


def embedding(weight: np.ndarray, ids, *, max_norm: float | None = None, norm_type: float = 2.0) -> np.ndarray:
    """``F.embedding(ids, weight, max_norm=...)``: rows of ``weight`` in the shape ``ids.shape + (D,)``.

    With ``max_norm`` the looked-up rows of ``weight`` are renormalised in place first, as torch does.
    """
    _check_weight(weight, writable=max_norm is not None)
    ids = check_ids(ids, weight.shape[0])
    if max_norm is not None:
        embedding_renorm_(weight, ids, max_norm, norm_type)
    return gather(weight, ids.reshape(-1)).reshape(ids.shape + (weight.shape[1],))


def gather(weight: np.ndarray, flat_ids: np.ndarray) -> np.ndarray:
    """``weight[flat_ids]`` into a new array (ids already range-checked)."""
    if not isinstance(weight, np.ndarray):  # the rows of a sharded table gather themselves
        return weight.take(flat_ids)
    out = np.empty((flat_ids.size, weight.shape[1]), weight.dtype)
    if flat_ids.size == 0 or weight.shape[1] == 0:
        return out
    if weight.flags.c_contiguous and weight.dtype in (np.float32, np.float64, np.float16, np.uint16):
        return kernels.choose(flat_ids.size * weight.shape[1]).gather(weight, flat_ids, out)
    return np.take(weight, flat_ids, axis=0, out=out)


def _check_weight(weight, *, writable: bool) -> None:
    if not isinstance(weight, np.ndarray) or weight.ndim != 2:
        raise ShapeError(f"'weight' must be 2-D, got shape {list(np.shape(weight))}")
    if writable and not weight.flags.writeable:
        raise ConfigError("max_norm renormalises the weight in place: it must be writable")


# --------------------------------------------------------------------------------------------
# Tables


def effective_config(table: Table, **overrides) -> Config:
    """The table's configuration with one-call overrides (``--max-norm`` etc.)."""
    return table.config.with_overrides(table.num_embeddings, **overrides)


def lookup(table: Table, ids, *, max_norm=None, norm_type=None, padding_idx=None,
           write_back: bool = False) -> np.ndarray:
    """``F.embedding`` on a table: shape ``ids.shape + (D,)``, values in the table's value dtype
    (BF16 widened exactly to float32).  ``padding_idx`` is checked as nn.Embedding checks it;
    the forward pass does not use it.

    Out-of-range and negative indices are errors.  With max_norm (the table's, or the override)
    the distinct looked-up rows are renormalised in the returned copy; ``write_back`` also
    persists the renormed rows, as PyTorch mutates ``weight`` (in place, logged).
    """
    cfg = effective_config(table, max_norm=max_norm, norm_type=norm_type, padding_idx=padding_idx)
    ids = check_ids(ids, table.num_embeddings)
    flat = ids.reshape(-1)
    d = table.embedding_dim
    if cfg.max_norm is None:
        out = widen(gather(table.raw, flat), table.dtype)
        return out.reshape(ids.shape + (d,))
    uniq, inverse = np.unique(flat, return_inverse=True)
    block = np.ascontiguousarray(table.rows(uniq), dtype=_compute_dtype(table.dtype))
    hit = renorm_block(block, cfg.max_norm, cfg.norm_type)
    if table.dtype in ("F16", "BF16"):
        # Renormed in float32, stored back rounded, so the output equals what is (or would be) stored.
        block = _round_trip(block, table.dtype)
    if write_back and hit.any():
        table.update({table.tensor: (uniq[hit], block[hit])})
    return gather(block, inverse.reshape(-1)).reshape(ids.shape + (d,))


def _compute_dtype(dtype: str):
    return np.float64 if dtype == "F64" else f32


def _round_trip(block: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "F16":
        return block.astype(np.float16)
    return bf16_to_f32(f32_to_bf16(block))


@dataclass
class RenormReport:
    rows_checked: int
    rows_changed: int
    max_norm: float
    norm_type: float
    changed_ids: np.ndarray
    written: bool

    def to_dict(self) -> dict:
        """The report as JSON-ready values, every changed id included (never a silent sample)."""
        return {"rows_checked": self.rows_checked, "rows_changed": self.rows_changed,
                "max_norm": self.max_norm, "norm_type": self.norm_type,
                "changed_ids": self.changed_ids.tolist(), "written": self.written}


#: above this many bytes of changed rows a full renorm rewrites the file instead of logging them
#: (``EMBTOOL_REWRITE_BYTES`` overrides it)
REWRITE_BYTES = 256 << 20


def renorm(table: Table, ids=None, *, max_norm=None, norm_type=None, dry_run: bool = False,
           progress=None) -> RenormReport:
    """max_norm renormalisation of the whole table or of the distinct rows ``ids``."""
    cfg = effective_config(table, max_norm=max_norm, norm_type=norm_type)
    if cfg.max_norm is None:
        raise ConfigError(f"{table.path}: no max_norm: pass --max-norm or set it on the table")
    if ids is not None:
        rows = distinct(check_ids(ids, table.num_embeddings))
        block = np.ascontiguousarray(table.rows(rows), dtype=_compute_dtype(table.dtype))
        hit = renorm_block(block, cfg.max_norm, cfg.norm_type)
        changed, values = rows[hit], block[hit]
        checked = rows.size
    elif getattr(table, "sharded", False):
        return _renorm_shards(table, cfg, dry_run, progress)
    else:
        changed, values = _renorm_pass(table, cfg, progress)
        checked = table.num_embeddings
    report = RenormReport(checked, int(changed.size), cfg.max_norm, cfg.norm_type, changed, False)
    if dry_run or changed.size == 0:
        return report
    if ids is None and changed.size * table.embedding_dim * table.raw.itemsize > _rewrite_bytes():
        _rewrite_renormed(table, cfg, progress)  # the whole table, renormed: only without ids
    else:
        table.update({table.tensor: (changed, values)})
    report.written = True
    return report


def _rewrite_bytes() -> int:
    return int(os.environ.get("EMBTOOL_REWRITE_BYTES", REWRITE_BYTES))


def _renorm_pass(table: Table, cfg: Config, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the whole table that renorm changes, and their new values."""
    changed_parts, value_parts = [], []
    for start, block in _stream(table, progress):
        hit = renorm_block(block, cfg.max_norm, cfg.norm_type)
        changed_parts.append(np.flatnonzero(hit) + start)
        value_parts.append(block[hit])
    changed = np.concatenate(changed_parts) if changed_parts else np.zeros(0, np.int64)
    values = np.concatenate(value_parts) if value_parts else np.zeros((0, table.embedding_dim))
    return changed, values


def _renorm_shards(table, cfg: Config, dry_run: bool, progress) -> RenormReport:
    """Renorm of a whole sharded table: a task per shard finds its changed rows and sends them
    back, or writes a renormed copy of its shard when they are many (each shard gets its share of
    ``EMBTOOL_REWRITE_BYTES``); all shards change in one write."""
    from .sharded import Change

    limit = _rewrite_bytes() // len(table.ranges)
    jobs = [(src, table.tensor, lo, cfg, dry_run, limit)
            for src, (lo, _) in zip(table.shard_sources(), table.ranges)]
    results = table.executor.map(renorm_shard_task, jobs, retry=dry_run)
    changed = np.concatenate([r[0] for r in results])
    report = RenormReport(table.num_embeddings, int(changed.size), cfg.max_norm, cfg.norm_type, changed, False)
    if progress:
        progress(table.num_embeddings)
    if dry_run or changed.size == 0:
        return report
    change = Change(table)
    for i, (rows, values, temp) in enumerate(results):
        if temp is not None:
            change.replace_shard(i, temp)
        elif rows.size:
            change.set_rows(table.tensor, rows, values)
    change.commit()
    report.written = True
    return report


def renorm_shard_task(job):
    """Task: renorm one shard of a sharded table as ``renorm`` does a whole table.  Returns its
    changed rows (table rows), and their values or the name of the renormed copy it wrote."""
    from .sharded import shard_of, write_shard_temp

    source, tensor, lo, cfg, dry_run, limit = job
    shard = shard_of(source, tensor)
    changed, values = _renorm_pass(shard, cfg)
    if dry_run or not changed.size or changed.size * shard.embedding_dim * shard.raw.itemsize <= limit:
        return changed + lo, values, None
    tensors = {**shard.store.raw_tensors(), tensor: _renormed(shard, cfg)}
    return changed + lo, None, write_shard_temp(shard.path, tensors, shard.metadata)


def _renormed(table: Table, cfg: Config) -> ChunkedTensor:
    """The table's weight renormed, streamed block by block as stored."""
    def chunks():
        for _, block in _stream(table):
            renorm_block(block, cfg.max_norm, cfg.norm_type)
            yield f32_to_bf16(block) if table.dtype == "BF16" else block.astype(value_dtype(table.dtype))

    return ChunkedTensor(table.dtype, table.shape, chunks)


def _stream(table: Table, progress=None):
    """(first row, writable compute-dtype copy of the rows) over the whole table, chunk by chunk."""
    step = max(1, STREAM_BYTES // max(1, table.embedding_dim * 4))
    dtype = _compute_dtype(table.dtype)
    for start in range(0, table.num_embeddings, step):
        stop = min(table.num_embeddings, start + step)
        block = np.array(table.rows(np.arange(start, stop)), dtype=dtype)
        yield start, block
        if progress:
            progress(stop - start)


def _rewrite_renormed(table: Table, cfg: Config, progress) -> None:
    table.rewrite({table.tensor: _renormed(table, cfg)})


# --------------------------------------------------------------------------------------------
# init


INITS = ("normal", "uniform", "zeros")


def init_table(path, num_embeddings: int, embedding_dim: int, *, init: str = "normal",
               scale: float = 1.0, seed: int | None = None, dtype: str = "F32",
               config: Config = Config(), force: bool = False, progress=None,
               shards: int | None = None, rows_per_shard: int | None = None) -> dict:
    """A new table as ``nn.Embedding`` makes one: N(0, 1) rows (times ``scale``), or U(-1, 1) or
    zeros, the padding row zeroed.  Values come from numpy's PCG64 seeded with ``seed`` (PyTorch's
    MT19937 + Box-Muller stream cannot be reproduced bit for bit); the seed is recorded.
    With ``shards`` or ``rows_per_shard``, ``path`` is a sharded table's index and the rows are
    streamed into its shards (the same values as one file)."""
    if num_embeddings < 0 or embedding_dim < 0:
        raise ConfigError("Trying to create tensor with negative dimension: "
                          f"num_embeddings={num_embeddings}, embedding_dim={embedding_dim}")
    if init not in INITS:
        raise ConfigError(f"init must be one of {', '.join(INITS)}, not {init!r}")
    _check_size(num_embeddings, embedding_dim, dtype)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    elif seed < 0:  # numpy's SeedSequence takes any non-negative integer
        raise ConfigError(f"seed must be a non-negative integer, not {seed}")
    gen_dtype = np.float64 if dtype == "F64" else f32
    # zero-width rows hold no bytes: one chunk, however many rows
    step = max(1, STREAM_BYTES // (embedding_dim * 4)) if embedding_dim else max(1, num_embeddings)

    def chunks():
        rng = np.random.default_rng(seed)
        for start in range(0, num_embeddings, step):
            n = min(step, num_embeddings - start)
            if init == "normal":
                block = rng.standard_normal((n, embedding_dim), dtype=gen_dtype)
            elif init == "uniform":
                block = rng.uniform(-1.0, 1.0, (n, embedding_dim)).astype(gen_dtype)
            else:
                block = np.zeros((n, embedding_dim), gen_dtype)
            if scale != 1.0:
                block *= gen_dtype(scale)
            p = config.padding_idx
            if p is not None and start <= p < start + n:
                block[p - start] = 0
            if progress:
                progress(n)
            yield f32_to_bf16(block) if dtype == "BF16" else block.astype(value_dtype(dtype), copy=False)

    meta = {"embtool.init": f"{init}(scale={scale!r}, seed={seed}, generator=numpy.PCG64)"}
    weight = ChunkedTensor(dtype, (num_embeddings, embedding_dim), chunks)
    if shards is not None or rows_per_shard is not None:
        from .sharded import create_sharded

        create_sharded(path, {"weight": weight}, config, weight_dtype=dtype, extra_metadata=meta,
                       shards=shards, rows_per_shard=rows_per_shard, force=force)
    else:
        create(path, {"weight": weight}, config, weight_dtype=dtype, extra_metadata=meta, force=force)
    return {"path": str(path), "shape": [num_embeddings, embedding_dim], "dtype": dtype,
            "init": init, "scale": scale, "seed": seed}


def _check_size(num_embeddings: int, embedding_dim: int, dtype: str) -> None:
    """Refuse, before anything is written, a table no array can hold (more than 2**63-1 bytes,
    or as many rows of width 0: numpy counts a zero-length dimension as 1)."""
    from .store import MAX_ARRAY_BYTES, too_large

    itemsize = dtypes.bits(dtypes.code(dtype)) // 8
    if not too_large((num_embeddings, embedding_dim), itemsize):
        return
    need = num_embeddings * embedding_dim * itemsize
    if need > MAX_ARRAY_BYTES:
        raise ConfigError(f"a table of {num_embeddings} x {embedding_dim} {dtype} needs {need} "
                          f"bytes, more than the {MAX_ARRAY_BYTES} one file or array can hold")
    raise ConfigError(f"a table of {num_embeddings} x {embedding_dim} {dtype} has too many rows: "
                      f"an array holds at most {MAX_ARRAY_BYTES // itemsize} rows of {dtype}, "
                      "even of width 0")


# --------------------------------------------------------------------------------------------
# EmbeddingBag on a table


def lookup_bag(table: Table, ids, offsets=None, *, mode: str = "mean", per_sample_weights=None,
               include_last_offset: bool = False, padding_idx=None, max_norm=None, norm_type=None,
               write_back: bool = False) -> np.ndarray:
    """``F.embedding_bag`` on a table: (B, D).  padding_idx / max_norm default to the table's.

    With max_norm every index of the input is renormed first (padding included, as torch), the
    bags are then reduced over the renormed rows; ``write_back`` persists them as ``lookup`` does.
    """
    from .bag import embedding_bag

    cfg = effective_config(table, max_norm=max_norm, norm_type=norm_type, padding_idx=padding_idx)
    ids = check_ids(ids, table.num_embeddings)
    pad = cfg.padding_idx
    if cfg.max_norm is None and table.dtype != "BF16" and isinstance(table.raw, np.ndarray):
        weight, idx = table.raw, ids
    elif cfg.max_norm is None and table.dtype != "BF16":
        # A sharded table: reduce over its distinct rows as stored (the same numbers).  The
        # padding row is kept among them even when unused: a padding_idx, used or not, selects
        # PyTorch's unfused arithmetic.
        flat = ids.reshape(-1)
        uniq, inverse = np.unique(flat if pad is None else np.append(flat, pad), return_inverse=True)
        weight, idx = table.raw.take(uniq), inverse[:flat.size].reshape(ids.shape)
        pad = _position(uniq, pad)
    else:
        # Work on the distinct rows only: renorm them (if asked) and reduce over that block.
        uniq, inverse = np.unique(ids.reshape(-1), return_inverse=True)
        weight = np.ascontiguousarray(table.rows(uniq), dtype=_compute_dtype(table.dtype))
        if cfg.max_norm is not None:
            hit = renorm_block(weight, cfg.max_norm, cfg.norm_type)
            if table.dtype in ("F16", "BF16"):
                weight = np.ascontiguousarray(_round_trip(weight, table.dtype), dtype=f32)
            if write_back and hit.any():
                table.update({table.tensor: (uniq[hit], weight[hit])})
        idx, pad = inverse.reshape(ids.shape), _position(uniq, pad)
    return embedding_bag(weight, idx, offsets, mode=mode, per_sample_weights=per_sample_weights,
                         include_last_offset=include_last_offset, padding_idx=pad)


def _position(uniq: np.ndarray, row):
    """Where ``row`` is in the sorted distinct rows ``uniq`` (None: absent, or ``row`` is None)."""
    if row is None:
        return None
    where = np.searchsorted(uniq, row)
    return int(where) if where < uniq.size and uniq[where] == row else None
