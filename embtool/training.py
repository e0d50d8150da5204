"""``train-step`` on a table file: forward renorm, embedding backward and a torch.optim step, with
the optimizer state kept in the table.

``train_step(path, batches, ...)`` opens the table for writing (an exclusive lock: concurrent
steps are serialised, none is lost), refuses a frozen or non-F32 table, checks every batch against
it, then computes all the steps in memory and writes the result as **one** crash-safe transaction:

* row-sparse steps (``OptimizerSpec.row_sparse``: plain SGD, Adagrad without weight decay,
  SparseAdam) work on a compact copy of the rows the batches name, and write back only the rows
  that changed, in place through the journal: O(k) for k rows, whatever the table's size;
* every other step (Adam, AdamW, SGD with momentum, ...) may change every row: the table is
  rewritten atomically;
* the first step of an optimizer that keeps state adds the ``optim.*`` tensors, and
  ``reset_optimizer`` drops or re-initialises them: also an atomic rewrite (streamed, so a sparse
  first step does not hold the whole table in memory).

Nothing is written before every batch has been validated and every step computed, so bad input
(or a torch refusal) leaves the file untouched, and a kill at any instant leaves the state before
or after all the steps of the call.

Per step, as ``nn.Embedding`` + ``torch.optim`` do: with ``max_norm`` the distinct looked-up rows
are renormalised first (``torch.embedding_renorm_``, padding row included), then the backward of
the lookup (padding_idx, scale_grad_by_freq, the table's ``sparse`` flag choosing the gradient
layout) and ``optimizer.step()``.  Gradients are cast to float32, as autograd casts a gradient to
the output's dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backward import SPARSE_SCALE_MESSAGE, embedding_backward
from .errors import ConfigError, FormatError, ShapeError, StateError
from .ids import check_ids
from .inputs import read_array, read_ids
from .ops import STREAM_BYTES, embedding_renorm_
from .optim import OptimizerSpec, init_state, state_names, step
from .store import ChunkedTensor
from .table import PREFIX, Table, check_trainable

#: the tensor the optimizer state belongs to (the state tensors' names are per file)
META_TENSOR = PREFIX + "optim.tensor"


@dataclass
class Batch:
    """One step's input: ``ids`` of any shape and ``grad`` of shape ``ids.shape + (D,)``; ``where``
    names their origin in error messages."""

    ids: np.ndarray
    grad: np.ndarray
    ids_where: str
    grad_where: str


# --------------------------------------------------------------------------------------------
# Reading inputs


def read_batch(ids_source, grad_source) -> Batch:
    """A step from an index file (JSON, whitespace integers, .npy; ``-`` for stdin) and a gradient
    file (.npy, .safetensors, JSON)."""
    ids = read_ids(ids_source)
    grad = read_array(grad_source, what="gradient")
    return Batch(ids, grad, _where(ids_source), _where(grad_source))


def _where(source) -> str:
    return "<stdin>" if source == "-" else str(source)


def read_batches(path) -> list[Batch]:
    """The steps of a batches file: a ``.safetensors`` or ``.npz`` file holding ``ids.0``,
    ``grad.0``, ``ids.1``, ``grad.1``, ... (steps numbered from 0 without gaps, applied in order)."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(b"PK"):
        arrays = _npz_arrays(path)
    else:
        arrays = _safetensors_arrays(path)
    steps: dict[int, dict[str, np.ndarray]] = {}
    for name, arr in arrays.items():
        kind, _, num = name.partition(".")
        if kind not in ("ids", "grad") or not num.isdigit() or (num != "0" and num.startswith("0")):
            raise FormatError(f"{path}: unexpected tensor {name!r}; a batches file holds ids.0, grad.0, "
                              "ids.1, grad.1, ...")
        steps.setdefault(int(num), {})[kind] = arr
    if not steps:
        raise FormatError(f"{path}: no steps (expected tensors ids.0, grad.0, ...)")
    batches = []
    for s in range(len(steps)):
        if s not in steps:
            raise FormatError(f"{path}: step {s} is missing (steps must be numbered 0 to {len(steps) - 1})")
        pair = steps[s]
        for kind, other in (("ids", "grad"), ("grad", "ids")):
            if kind not in pair:
                raise FormatError(f"{path}: step {s}: {other}.{s} has no {kind}.{s}")
        grad = pair["grad"]
        if grad.dtype.kind not in "fiu":
            raise FormatError(f"{path}: step {s}: grad.{s} must be numeric, not {grad.dtype}")
        batches.append(Batch(pair["ids"], grad, f"{path}: step {s}: ids.{s}", f"{path}: step {s}: grad.{s}"))
    return batches


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path}: not a valid .npz batches file ({exc})") from None


def _safetensors_arrays(path: Path) -> dict[str, np.ndarray]:
    from . import store as st
    from .table import bf16_to_f32

    with st.Store(path) as s:
        out = {}
        for name, info in s.tensors.items():
            arr = s.array(name)
            out[name] = bf16_to_f32(arr) if info.dtype == "BF16" else arr
        return out


# --------------------------------------------------------------------------------------------
# The optimizer: options vs the stored state


def resolve_optimizer(table: Table, name: str | None, given: dict, reset: bool) -> tuple[OptimizerSpec, int, bool]:
    """``(spec, step_count, fresh)`` for a step on ``table``.

    The optimizer is ``name``, else the stored one, else SGD; hyper-parameters not given are the
    stored ones (same optimizer) or torch's defaults.  A request that differs from the stored state
    is a StateError naming the difference, unless ``reset`` (which restarts the state and the step
    count: ``fresh`` is then true, as it is when the table has no optimizer yet)."""
    given = {k: v for k, v in given.items() if v is not None}
    stored = OptimizerSpec.from_metadata(table.metadata)
    state_tensors = sorted(table.optimizer_tensors())
    if stored is None or reset:
        if stored is None and state_tensors and not reset:
            raise StateError(f"{table.path}: tensors {', '.join(state_tensors)} but no optimizer "
                             "metadata; reset the optimizer state (--reset-optimizer) to start over")
        return OptimizerSpec(name or (stored[0].name if stored else "sgd"), **given), 0, True
    spec, count = stored
    owner = table.metadata.get(META_TENSOR, table.tensor)
    if owner != table.tensor:
        raise StateError(f"{table.path}: the optimizer state belongs to tensor {owner!r}, not "
                         f"{table.tensor!r}; reset it (--reset-optimizer) to train {table.tensor!r}")
    name = name or spec.name
    if name != spec.name:
        raise StateError(f"{table.path}: the optimizer state is {spec.name}'s (step {count}), not "
                         f"{name}'s; reset it (--reset-optimizer) to change optimizer")
    requested = OptimizerSpec(name, **{**spec.hparams, **given})
    changed = [k for k in spec.hparams if _differs(spec.hparams[k], requested.hparams[k])]
    if changed:
        diffs = ", ".join(f"{k}={requested.hparams[k]!r} (stored {spec.hparams[k]!r})" for k in changed)
        raise StateError(f"{table.path}: {spec.name} state (step {count}) was made with other "
                         f"hyper-parameters: {diffs}; reset it (--reset-optimizer) to change them")
    return spec, count, False


def _differs(a, b) -> bool:
    if isinstance(a, tuple):
        return any(_differs(x, y) for x, y in zip(a, b))
    return a != b and not (isinstance(a, float) and math.isnan(a) and math.isnan(b))


# --------------------------------------------------------------------------------------------
# The step


def train_step(path, batches: list[Batch], *, tensor: str | None = None, optimizer: str | None = None,
               hparams: dict | None = None, reset_optimizer: bool = False, progress=None) -> dict:
    """Apply ``batches`` (in order) to the table at ``path`` as one transaction; the summary
    (see ``train``).  Without ``tensor``, a file whose optimizer state names its tensor trains that
    one (the ``optim.*`` tensors are 2-D too, so the default pick would be ambiguous)."""
    if tensor is None and Path(path).is_file():
        from .store import read_header

        tensor = read_header(path).metadata.get(META_TENSOR)
    with Table.open(path, tensor=tensor, write=True) as table:
        return train(table, batches, optimizer=optimizer, hparams=hparams,
                     reset_optimizer=reset_optimizer, progress=progress)


def train(table: Table, batches: list[Batch], *, optimizer: str | None = None, hparams: dict | None = None,
          reset_optimizer: bool = False, progress=None) -> dict:
    """``train_step`` on a table opened for writing.  Returns the summary: ``step`` (the optimizer's
    step count after the call), ``rows_touched`` (distinct rows given a gradient), ``grad_norm``
    (L2 norm of the last step's gradient), ``rows_written`` and ``write`` (``in-place`` or
    ``rewrite``), and ``steps``: per step ``step``, ``rows_touched``, ``grad_norm``,
    ``rows_renormed``."""
    table.require_writable()
    check_trainable(table)
    if table.dtype != "F32":
        raise ConfigError(f"{table.path}: tensor {table.tensor!r} is {table.dtype}; training needs an "
                          "F32 weight (torch.optim keeps float32 state and arithmetic)")
    spec, count, fresh = resolve_optimizer(table, optimizer, hparams or {}, reset_optimizer)
    cfg = table.config
    if cfg.sparse and cfg.scale_grad_by_freq:
        raise ConfigError(f"{table.path}: {SPARSE_SCALE_MESSAGE}")
    spec.check_gradient(cfg.sparse)
    checked = [_check_batch(b, table) for b in batches]
    names = state_names(spec)
    if not fresh:
        _check_state(table, names)
    work = _Work.compact(table, spec, names, fresh, checked) if spec.row_sparse(cfg.sparse) else \
        _Work.full(table, spec, names, fresh)
    with np.errstate(all="ignore"):  # IEEE arithmetic as torch's: inf and NaN propagate silently
        records, count = work.run(spec, count, cfg, checked)
    meta = {**spec.to_metadata(count), META_TENSOR: table.tensor}
    existing = set(table.optimizer_tensors())
    summary = {
        "table": str(table.path), "tensor": table.tensor, "optimizer": spec.name, "hparams": spec.hparams,
        "step": count, "steps_applied": len(records), "rows_touched": work.rows_touched(),
        "grad_norm": records[-1]["grad_norm"] if records else 0.0, "reset": bool(reset_optimizer),
    }
    if work.every_row or (fresh and (names or existing)):
        tensors = work.rewrite_tensors(table, names)
        tensors.update({n: None for n in existing - set(names)})
        summary.update(rows_written=int(work.weight_changed.sum()), write="rewrite")
        table.rewrite(tensors, meta, progress=progress)
    else:
        rows = work.changed_rows(table, names)
        summary.update(rows_written=int(rows[table.tensor][0].size), write="in-place")
        table.update(rows, meta)
    summary["steps"] = records
    return summary


def _check_batch(b: Batch, table: Table) -> tuple[np.ndarray, np.ndarray]:
    ids = check_ids(b.ids, table.num_embeddings, where=b.ids_where)
    expected = ids.shape + (table.embedding_dim,)
    grad = np.asarray(b.grad)
    if grad.shape != expected:
        raise ShapeError(f"{b.grad_where}: gradient has shape {list(grad.shape)}, expected {list(expected)} "
                         f"(indices of shape {list(ids.shape)} from {b.ids_where}, embedding_dim "
                         f"{table.embedding_dim})")
    if grad.dtype.kind not in "fiu":
        raise FormatError(f"{b.grad_where}: gradient must be numeric, not {grad.dtype}")
    return ids, np.ascontiguousarray(grad, dtype=np.float32)


def _check_state(table: Table, names: list[str]) -> None:
    for name in names:
        info = table.store.tensors.get(name)
        if info is None:
            raise StateError(f"{table.path}: optimizer state tensor {name} is missing; reset the "
                             "optimizer state (--reset-optimizer)")
        if info.dtype != "F32" or info.shape != table.shape:
            raise StateError(f"{table.path}: optimizer state tensor {name} is {info.dtype} "
                             f"{list(info.shape)}, expected F32 {list(table.shape)}")


class _Work:
    """The rows a call computes on, in memory: the whole table (``every_row``) or a compact copy of
    the sorted distinct rows ``rows`` that the batches name (a row-sparse optimizer changes no
    other row)."""

    def __init__(self, rows, weight, state, every_row: bool, state_fill):
        self.rows = rows  # table row of each work row (None: the identity)
        self.weight = weight
        self.state = state
        self.every_row = every_row
        self.state_fill = state_fill  # fresh state: the init value of rows never touched, else None
        n = weight.shape[0]
        self.weight_changed = np.zeros(n, bool)
        self.state_changed = np.zeros(n, bool)
        self.touched = np.zeros(n, bool)

    @classmethod
    def full(cls, table, spec, names, fresh):
        weight = np.array(table.raw)
        state = init_state(spec, table.shape) if fresh else {n: np.array(table.store.array(n)) for n in names}
        return cls(None, weight, state, True, None)

    @classmethod
    def compact(cls, table, spec, names, fresh, checked):
        parts = [ids.reshape(-1) for ids, _ in checked]
        rows = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        weight = np.take(table.raw, rows, axis=0)
        if fresh:
            state = init_state(spec, weight.shape)
            fill = {n: v[0, 0] for n, v in init_state(spec, (1, 1)).items()}
        else:
            state = {n: np.take(table.store.array(n), rows, axis=0) for n in names}
            fill = None
        return cls(rows, weight, state, False, fill)

    def _local(self, ids: np.ndarray) -> np.ndarray:
        return ids if self.rows is None else np.searchsorted(self.rows, ids)

    def _local_padding(self, padding_idx):
        if padding_idx is None or self.rows is None:
            return padding_idx
        pos = int(np.searchsorted(self.rows, padding_idx))
        return pos if pos < self.rows.size and self.rows[pos] == padding_idx else None

    def run(self, spec, count, cfg, checked):
        """Apply the steps; per-step records and the final step count."""
        records = []
        pad = self._local_padding(cfg.padding_idx)
        for ids, grad in checked:
            local = self._local(ids)
            renormed = 0
            if cfg.max_norm is not None:
                # the forward pass: torch.embedding_renorm_ of the distinct looked-up rows
                renormed = embedding_renorm_(self.weight, local, cfg.max_norm, cfg.norm_type)
                self.weight_changed[np.unique(local)] = True
            rg = embedding_backward(local, grad, num_embeddings=self.weight.shape[0], padding_idx=pad,
                                    scale_grad_by_freq=cfg.scale_grad_by_freq, sparse=cfg.sparse)
            up = step(spec, count, self.weight, self.state, rg)
            count = up.step_count
            if up.rows is None:
                self.weight, self.state = up.weight, up.state
                self.weight_changed[:] = self.state_changed[:] = True
            else:
                self.weight[up.rows] = up.weight
                for name, values in up.state.items():
                    self.state[name][up.rows] = values
                self.weight_changed[up.rows] = True
                self.state_changed[up.rows] = True
            grad_rows = np.unique(rg.rows) if rg.sparse else rg.rows  # rows of the coalesced gradient
            self.touched[grad_rows] = True
            records.append({"step": count, "rows_touched": int(grad_rows.size),
                            "grad_norm": up.grad_norm, "rows_renormed": int(renormed)})
        return records, count

    def rows_touched(self) -> int:
        return int(self.touched.sum())

    def changed_rows(self, table, names) -> dict:
        """``Table.update``'s rows: the changed rows of the weight and of each state tensor."""
        w, s = self.weight_changed, self.state_changed
        out = {table.tensor: (self.rows[w], self.weight[w])}
        out.update({n: (self.rows[s], self.state[n][s]) for n in names})
        return out

    def rewrite_tensors(self, table, names) -> dict:
        """``Table.rewrite``'s tensors: the new weight and state, streamed for a compact copy."""
        if self.every_row:
            return {table.tensor: self.weight, **self.state}
        w, s = self.weight_changed, self.state_changed
        out = {table.tensor: _patched(table.raw, None, self.rows[w], self.weight[w])}
        for n in names:
            out[n] = _patched(None, self.state_fill[n], self.rows[s], self.state[n][s], shape=table.shape)
        return out


def _patched(base, fill, rows, values, shape=None) -> ChunkedTensor:
    """A float32 tensor streamed in blocks: ``base`` (or ``fill`` everywhere) with the sorted rows
    ``rows`` replaced by ``values``."""
    shape = tuple(base.shape if base is not None else shape)
    per_block = max(1, STREAM_BYTES // max(1, shape[1] * 4))

    def chunks():
        for start in range(0, shape[0], per_block):
            stop = min(shape[0], start + per_block)
            if base is not None:
                block = np.array(base[start:stop], dtype=np.float32)
            else:
                block = np.full((stop - start, shape[1]), fill, np.float32)
            lo, hi = np.searchsorted(rows, [start, stop])
            block[rows[lo:hi] - start] = values[lo:hi]
            yield block

    return ChunkedTensor("F32", shape, chunks)
