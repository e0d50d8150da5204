"""``train-step`` on a sharded table: the optimizer step of each shard's rows as a task.

Everything a step does to a row depends on that row alone (its gradient entries in input order,
its optimizer state, the step count and the hyper-parameters; ``docs/semantics.md`` §5-6), so a
task runs the one-file computation of ``embtool.training`` on its shard, as an ordinary table,
with the entries of the batches that fall in its rows (in their input order, row ids made
local, ``padding_idx`` local or absent): its rows come out bit for bit as they would in one file.

* Row-sparse steps (plain SGD, Adagrad, SparseAdam): only shards named by the batches have work;
  each sends back its changed rows (weight and state), and they are written together, in place.
* Other steps (Adam, AdamW, SGD with momentum, ...) change every row: every shard's task writes a
  new copy of its shard beside it, and the copies replace the shards together.  So does the first
  step of an optimizer that keeps state (the shards gain their ``optim.*`` tensors).
* The step count, the optimizer's description and ``rows_touched`` / ``grad_norm`` of each step
  are computed here, from the whole batch, exactly as on one file; the number of rows renormed
  is the tasks' sum.

Nothing is written before every task has finished; then one write (``sharded.Change``) changes
the shards and the index together.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .backward import embedding_backward
from .errors import ConfigError
from .ids import distinct, distinct_inverse
from .sharded import Change, ShardedTable, shard_of, write_shard_temp
from .table import check_trainable
from .training import META_TENSOR, compute_steps, prepare


def train(table: ShardedTable, batches, *, optimizer=None, hparams=None, reset_optimizer=False,
          progress=None) -> dict:
    """``embtool.training.train`` for a sharded table opened for writing (module docstring);
    the same summary."""
    table.require_writable()
    check_trainable(table)
    if table.dtype != "F32":
        raise ConfigError(f"{table.path}: tensor {table.tensor!r} is {table.dtype}; training needs an "
                          "F32 weight (torch.optim keeps float32 state and arithmetic)")
    spec, count, fresh, checked, names = prepare(table, _TableState(table), batches, optimizer, hparams,
                                                 reset_optimizer)
    cfg = table.config
    existing = table.optimizer_tensors()
    sparse_rows = spec.row_sparse(cfg.sparse)
    rewrite = not sparse_rows or (fresh and bool(names or existing))
    records, final = _records(spec, count, cfg, checked)
    drop = sorted(set(existing) - set(names)) if rewrite else []
    jobs = []
    for i, (source, (lo, hi)) in enumerate(zip(table.shard_sources(), table.ranges)):
        local = [_local(ids, grad, lo, hi) for ids, grad in checked]
        if not rewrite and not any(ids.size for ids, _ in local):
            continue  # a row-sparse step changes no row of this shard
        pad = cfg.padding_idx
        shard_cfg = replace(cfg, padding_idx=pad - lo if pad is not None and lo <= pad < hi else None)
        jobs.append((i, (source, table.tensor, local, spec, count, fresh, shard_cfg, names, sparse_rows,
                         rewrite, drop)))
    results = table.executor.map(train_shard_task, [job for _, job in jobs], retry=False)
    change = Change(table)
    written = 0
    try:
        for (i, _), (rows, temp, renormed, changed) in zip(jobs, results):
            for step_record, n in zip(records, renormed):
                step_record["rows_renormed"] += n
            written += changed
            if temp is not None:
                change.replace_shard(i, temp)
            else:
                lo = table.ranges[i][0]
                for name, (local_rows, values) in rows.items():
                    change.set_rows(name, local_rows + lo, values)
        change.metadata.update({**spec.to_metadata(final), META_TENSOR: table.tensor})
        summary = {
            "table": str(table.path), "tensor": table.tensor, "optimizer": spec.name,
            "hparams": spec.hparams, "step": final, "steps_applied": len(records),
            "rows_touched": _rows_touched(checked, cfg), "grad_norm": records[-1]["grad_norm"] if records else 0.0,
            "reset": bool(reset_optimizer), "state_file": None, "rows_written": written,
            "write": "rewrite" if rewrite else "in-place",
        }
        change.commit()
    except BaseException:
        change.discard()
        raise
    summary["steps"] = records
    return summary


class _TableState:
    """``training``'s ``StateHome`` for a sharded table: the state lives in the shards (``optim.*``
    tensors, described as one tensor each) and its description in the index's metadata."""

    def __init__(self, table: ShardedTable):
        self.table = table
        self.where = table.path
        self.metadata = table.metadata
        self.tensors = table.optimizer_tensors


def _local(ids: np.ndarray, grad: np.ndarray, lo: int, hi: int):
    """The entries of a step whose rows lie in ``[lo, hi)``, in input order, rows made local."""
    flat = ids.reshape(-1)
    keep = np.flatnonzero((flat >= lo) & (flat < hi))
    return flat[keep] - lo, grad.reshape(flat.size, -1)[keep]


def _records(spec, count, cfg, checked):
    """Per step ``step``, ``rows_touched``, ``grad_norm`` (computed as ``training`` does, on the
    distinct rows of the step) and ``rows_renormed`` (0 here, the tasks' counts are added)."""
    from .optim import _next_step

    records = []
    for ids, grad in checked:
        flat = ids.reshape(-1)
        uniq, local = distinct_inverse(flat)
        pad = cfg.padding_idx
        where = int(np.searchsorted(uniq, pad)) if pad is not None else -1
        local_pad = where if pad is not None and where < uniq.size and uniq[where] == pad else None
        rg = embedding_backward(local.reshape(ids.shape), grad, num_embeddings=uniq.size, padding_idx=local_pad,
                                scale_grad_by_freq=cfg.scale_grad_by_freq, sparse=cfg.sparse)
        count = _next_step(spec, count)
        grad_rows = distinct(rg.rows) if rg.sparse else rg.rows  # as training's records count them
        records.append({"step": count, "rows_touched": int(grad_rows.size), "grad_norm": _step_norm(spec, rg),
                        "rows_renormed": 0})
    return records, count


def _step_norm(spec, rg) -> float:
    """The gradient norm ``optim.step`` reports, summed as it sums it: plain SGD keeps the
    backward's layout (entries or segments); every other step coalesces the gradient and its
    kernels read the rows, whose norm ``RowGrad.norm`` then sums as one array (the same
    dispatch as ``optim.step``)."""
    if spec.name == "sgd" and spec.momentum == 0 and (
            rg.sparse or (rg.segments is not None and spec.row_sparse(False))):
        return rg.norm()
    grad = rg.coalesce()
    grad.values  # noqa: B018 - materialised, as the step's kernels do
    return grad.norm()


def _rows_touched(checked, cfg) -> int:
    """Distinct rows given a gradient over all the steps (the padding row gets none)."""
    parts = [ids.reshape(-1) for ids, _ in checked]
    rows = distinct(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    if cfg.padding_idx is not None:
        rows = rows[rows != cfg.padding_idx]
    return int(rows.size)


class _ShardState:
    """``training``'s ``StateHome`` for a shard: its optimizer state lives in the shard."""

    def __init__(self, shard):
        self.holder = shard.store
        self.array = shard.store.array


def train_shard_task(job):
    """Task: the steps on one shard.  Returns ``(rows, temp, renormed, changed)``: the changed
    rows of the weight and state (local rows, values) or the name of the new shard file it
    wrote, the rows renormed per step, and the number of weight rows changed."""
    source, tensor, local, spec, count, fresh, cfg, names, sparse_rows, rewrite, drop = job
    shard = shard_of(source, tensor)
    home = _ShardState(shard)
    work, records, _ = compute_steps(shard, home, spec, names, fresh, local, count, cfg, sparse_rows)
    renormed = [r["rows_renormed"] for r in records]
    changed = int(work.weight_changed.sum())
    if not rewrite:
        return {tensor: work.weight_rows(), **work.state_rows(names)}, None, renormed, changed
    tensors = shard.store.raw_tensors()
    for name in drop:
        tensors.pop(name, None)
    tensors.update({tensor: work.weight_tensor(shard), **work.state_tensors(names, shard.shape)})
    return None, write_shard_temp(shard.path, tensors, shard.metadata), renormed, changed


def train_step(path, batches, *, tensor=None, optimizer=None, hparams=None, reset_optimizer=False,
               state=None, progress=None) -> dict:
    """``embtool.training.train_step`` for a table file or a sharded table's index."""
    from .sharded import is_index
    from .training import train_step as train_file

    if not is_index(path):
        return train_file(path, batches, tensor=tensor, optimizer=optimizer, hparams=hparams,
                          reset_optimizer=reset_optimizer, state=state, progress=progress)
    if state is not None:
        raise ConfigError(f"{path}: a sharded table keeps its optimizer state in its shards; "
                          "--state is for table files")
    with ShardedTable.open(path, tensor=tensor, write=True) as table:
        return train(table, batches, optimizer=optimizer, hparams=hparams,
                     reset_optimizer=reset_optimizer, progress=progress)
