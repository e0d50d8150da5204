"""``train-step`` on a table file: forward renorm, embedding backward and a torch.optim step, with
the optimizer state kept in the table, or in a file of its own written with it (``StateHome``).

``train_step(path, batches, ...)`` opens the table for writing (an exclusive lock: concurrent
steps are serialised, none is lost), refuses a frozen or non-F32 table, checks every batch against
it, then computes all the steps in memory and writes the result as **one** crash-safe transaction:

* row-sparse steps (``OptimizerSpec.row_sparse``: plain SGD, Adagrad without weight decay,
  SparseAdam) work on a compact copy of the rows the batches name, and write back only the rows
  that changed, logged and then written in place: O(k) for k rows, whatever the table's size;
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
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import kernels
from .backward import SPARSE_SCALE_MESSAGE, embedding_backward, row_kernels
from .errors import ConfigError, FormatError, ShapeError, StateError
from .ids import check_ids, distinct, distinct_inverse
from .inputs import read_array, read_ids
from .ops import STREAM_BYTES, embedding_renorm_
from .config import META_HPARAMS, META_NAME, META_STATE_FILE, META_STEP
from .optim import OptimizerSpec, init_state, state_names, step
from .store import PRIMARY_KEY, ChunkedTensor, Store, read_header
from .config import PREFIX
from .table import Table, check_trainable

#: the tensor the optimizer state belongs to (the state tensors' names are per file)
META_TENSOR = PREFIX + "optim.tensor"
#: in a table whose optimizer state is kept in a file of its own: that file, relative to the table
STATE_FILE = META_STATE_FILE
OPTIM_KEYS = (META_NAME, META_HPARAMS, META_STEP, META_TENSOR)


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
    from .dtypes import bf16_to_f32

    with st.Store(path) as s:
        out = {}
        for name, info in s.tensors.items():
            arr = s.array(name)
            out[name] = bf16_to_f32(arr) if info.dtype == "BF16" else arr
        return out


# --------------------------------------------------------------------------------------------
# The optimizer: options vs the stored state


class StateHome:
    """Where a table's optimizer state lives: inside the table (``optim.*`` tensors and
    ``embtool.optim.*`` metadata), or in a safetensors file of its own (``train-step --state``) that
    holds both, so that the table stays a plain state_dict file.  The table names that file
    (``embtool.optim.state_file``) and the file names the table as its primary
    (``embtool.primary``): both are written under the table's lock, in one transaction.

    ``requested`` is the ``--state`` path (None: wherever the state is now)."""

    def __init__(self, table: Table, requested=None, reset: bool = False):
        self.table = table
        self.store: Store | None = None
        self.old: Path | None = None  # a state file to remove (the state moves)
        named = table.metadata.get(STATE_FILE)
        current = _beside(table.path, named) if named else None
        self.path = current if requested is None else Path(requested)
        if requested is not None and not _same(self.path, current):
            if current is not None and not reset:
                raise StateError(f"{table.path}: its optimizer state lives in {current}, not {self.path}; "
                                 f"reset it (--reset-optimizer) to start again in {self.path}")
            if current is None and _inside(table) and not reset:
                raise StateError(f"{table.path}: its optimizer state is inside the table; reset it "
                                 f"(--reset-optimizer) to keep the state in {self.path} instead")
            if self.path.exists() and not self._ours(self.path):
                raise StateError(f"{self.path} already exists and is not the optimizer state of "
                                 f"{table.path}; choose another --state file")
            self.old = current if current is not None and current.exists() and self._ours(current) else None
        if self.path is not None and self.path.exists():
            if not self._ours(self.path):
                raise StateError(f"{self.path} is not the optimizer state of {table.path} (its "
                                 f"{PRIMARY_KEY} names another file)")
            self.store = table.store.group.open(self.path)
        elif self.path is not None and requested is None and not reset:
            raise StateError(f"{table.path}: its optimizer state file {self.path} is missing; reset the "
                             "optimizer state (--reset-optimizer) to start over")

    def _ours(self, path: Path) -> bool:
        named = read_header(path).metadata.get(PRIMARY_KEY)
        return bool(named) and _same(_beside(path, named), self.table.path)

    @property
    def external(self) -> bool:
        return self.path is not None

    @property
    def where(self) -> Path:
        return self.path if self.external else self.table.path

    @property
    def metadata(self) -> dict[str, str]:
        if not self.external:
            return self.table.metadata
        return self.store.metadata if self.store is not None else {}

    def tensors(self) -> dict:
        holder = self.store if self.external else self.table.store
        return {} if holder is None else {n: t for n, t in holder.tensors.items() if n.startswith("optim.")}

    @property
    def holder(self) -> Store:
        """The open file that holds the state tensors."""
        return self.store if self.external else self.table.store

    def array(self, name: str) -> np.ndarray:
        return self.holder.array(name)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _beside(path: Path, name: str) -> Path:
    return Path(os.path.normpath(Path(path).parent / name))


def _same(a: Path | None, b: Path | None) -> bool:
    if a is None or b is None:
        return a is b
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _inside(table: Table) -> bool:
    return bool(table.optimizer_tensors()) or META_NAME in table.metadata


def resolve_optimizer(home: StateHome, name: str | None, given: dict, reset: bool) -> tuple[OptimizerSpec, int, bool]:
    """``(spec, step_count, fresh)`` for a step on ``home.table``.

    The optimizer is ``name``, else the stored one, else SGD; hyper-parameters not given are the
    stored ones (same optimizer) or torch's defaults.  A request that differs from the stored state
    is a StateError naming the difference, unless ``reset`` (which restarts the state and the step
    count: ``fresh`` is then true, as it is when the table has no optimizer yet)."""
    table, where = home.table, home.where
    given = {k: v for k, v in given.items() if v is not None}
    stored = OptimizerSpec.from_metadata(home.metadata)
    state_tensors = sorted(home.tensors())
    if stored is None or reset:
        if stored is None and state_tensors and not reset:
            raise StateError(f"{where}: tensors {', '.join(state_tensors)} but no optimizer "
                             "metadata; reset the optimizer state (--reset-optimizer) to start over")
        return OptimizerSpec(name or (stored[0].name if stored else "sgd"), **given), 0, True
    spec, count = stored
    owner = home.metadata.get(META_TENSOR, table.tensor)
    if owner != table.tensor:
        raise StateError(f"{where}: the optimizer state belongs to tensor {owner!r}, not "
                         f"{table.tensor!r}; reset it (--reset-optimizer) to train {table.tensor!r}")
    name = name or spec.name
    if name != spec.name:
        raise StateError(f"{where}: the optimizer state is {spec.name}'s (step {count}), not "
                         f"{name}'s; reset it (--reset-optimizer) to change optimizer")
    requested = OptimizerSpec(name, **{**spec.hparams, **given})
    changed = [k for k in spec.hparams if _differs(spec.hparams[k], requested.hparams[k])]
    if changed:
        diffs = ", ".join(f"{k}={requested.hparams[k]!r} (stored {spec.hparams[k]!r})" for k in changed)
        raise StateError(f"{where}: {spec.name} state (step {count}) was made with other "
                         f"hyper-parameters: {diffs}; reset it (--reset-optimizer) to change them")
    return spec, count, False


def _differs(a, b) -> bool:
    if isinstance(a, tuple):
        return any(_differs(x, y) for x, y in zip(a, b))
    return a != b and not (isinstance(a, float) and math.isnan(a) and math.isnan(b))


# --------------------------------------------------------------------------------------------
# The step


def train_step(path, batches: list[Batch], *, tensor: str | None = None, optimizer: str | None = None,
               hparams: dict | None = None, reset_optimizer: bool = False, state=None, progress=None) -> dict:
    """Apply ``batches`` (in order) to the table at ``path`` as one transaction; the summary
    (see ``train``).  Without ``tensor``, a file whose optimizer state names its tensor trains that
    one (the ``optim.*`` tensors are 2-D too, so the default pick would be ambiguous)."""
    if tensor is None and Path(path).is_file():
        tensor = _stored_tensor(Path(path))
    with Table.open(path, tensor=tensor, write=True) as table:
        return train(table, batches, optimizer=optimizer, hparams=hparams,
                     reset_optimizer=reset_optimizer, state=state, progress=progress)


def _stored_tensor(path: Path) -> str | None:
    meta = read_header(path).metadata
    if STATE_FILE in meta:
        state = _beside(path, meta[STATE_FILE])
        meta = read_header(state).metadata if state.is_file() else {}
    return meta.get(META_TENSOR)


def train(table: Table, batches: list[Batch], *, optimizer: str | None = None, hparams: dict | None = None,
          reset_optimizer: bool = False, state=None, progress=None) -> dict:
    """``train_step`` on a table opened for writing.  ``state``: keep the optimizer state in that
    safetensors file instead of the table (see ``StateHome``; later steps find it by themselves).

    Returns the summary: ``step`` (the optimizer's step count after the call), ``rows_touched``
    (distinct rows given a gradient), ``grad_norm`` (L2 norm of the last step's gradient),
    ``rows_written`` and ``write`` (``in-place`` or ``rewrite``), ``state_file`` (or None), and
    ``steps``: per step ``step``, ``rows_touched``, ``grad_norm``, ``rows_renormed``."""
    table.require_writable()
    check_trainable(table)
    if table.dtype != "F32":
        raise ConfigError(f"{table.path}: tensor {table.tensor!r} is {table.dtype}; training needs an "
                          "F32 weight (torch.optim keeps float32 state and arithmetic)")
    home = StateHome(table, state, reset_optimizer)
    try:
        return _train(table, home, batches, optimizer, hparams, reset_optimizer, progress)
    finally:
        home.close()


def prepare(table, home, batches, optimizer, hparams, reset_optimizer):
    """What a call checks and resolves before computing anything (on a table file, or on a sharded
    table, whose ``home`` is its own): ``(spec, step_count, fresh, checked batches, state names)``."""
    spec, count, fresh = resolve_optimizer(home, optimizer, hparams or {}, reset_optimizer)
    cfg = table.config
    if cfg.sparse and cfg.scale_grad_by_freq:
        raise ConfigError(f"{table.path}: {SPARSE_SCALE_MESSAGE}")
    spec.check_gradient(cfg.sparse)
    checked = [_check_batch(b, table) for b in batches]
    names = state_names(spec)
    if not fresh:
        _check_state(home, names)
    return spec, count, fresh, checked, names


def compute_steps(table, home, spec, names, fresh, checked, count: int, cfg, row_sparse: bool):
    """Every step of a call, in memory (on a table file, or a shard in a task, whose ``cfg`` has
    its own padding row): ``(work, records, step count)``.  ``row_sparse``: compute on a compact
    copy of the rows the steps name (the optimizer changes no other row), else on the whole
    table.  The backends are chosen for the whole call, so the steps of a batch start Numba
    once."""
    with kernels.call_work(sum(ids.size for ids, _ in checked) * table.shape[1] * kernels.PER_ROW_UPDATE):
        work = _Work.compact(table, home, spec, names, fresh, checked) if row_sparse else \
            _Work.full(table, home, spec, names, fresh)
        with np.errstate(all="ignore"):  # IEEE arithmetic as torch's: inf and NaN propagate silently
            records, count = work.run(spec, count, cfg, checked)
    return work, records, count


def _train(table: Table, home: StateHome, batches, optimizer, hparams, reset_optimizer, progress) -> dict:
    spec, count, fresh, checked, names = prepare(table, home, batches, optimizer, hparams, reset_optimizer)
    cfg = table.config
    work, records, count = compute_steps(table, home, spec, names, fresh, checked, count, cfg,
                                         spec.row_sparse(cfg.sparse))
    meta = {**spec.to_metadata(count), META_TENSOR: table.tensor}
    summary = {
        "table": str(table.path), "tensor": table.tensor, "optimizer": spec.name, "hparams": spec.hparams,
        "step": count, "steps_applied": len(records), "rows_touched": work.rows_touched(),
        "grad_norm": records[-1]["grad_norm"] if records else 0.0, "reset": bool(reset_optimizer),
        "state_file": str(home.path) if home.external else None,
    }
    if home.external:
        _write_external(table, home, work, names, meta, fresh, summary, progress)
    else:
        existing = set(home.tensors())
        if work.every_row or (fresh and (names or existing)):
            tensors = {table.tensor: work.weight_tensor(table), **work.state_tensors(names, table.shape)}
            tensors.update({n: None for n in existing - set(names)})
            summary.update(rows_written=int(work.weight_changed.sum()), write="rewrite")
            table.rewrite(tensors, meta, progress=progress)
        else:
            rows = {table.tensor: work.weight_rows(), **work.state_rows(names)}
            summary.update(rows_written=int(rows[table.tensor][0].size), write="in-place")
            table.update(rows, meta)
    summary["steps"] = records
    return summary


def _write_external(table: Table, home: StateHome, work, names, meta, fresh, summary, progress) -> None:
    """One transaction over the table and its state file (the table's lock and log cover both)."""
    table_meta = {STATE_FILE: os.path.relpath(home.path, table.path.parent),
                  **{k: None for k in OPTIM_KEYS if k in table.metadata}}
    if all(table.metadata.get(k) == v for k, v in table_meta.items()):
        table_meta = None
    state_meta = {**meta, PRIMARY_KEY: os.path.relpath(table.path, home.path.parent)}
    inside = set(table.optimizer_tensors())
    with table.store.transaction() as tx:
        if work.every_row or inside:
            summary.update(rows_written=int(work.weight_changed.sum()), write="rewrite")
            table.rewrite({table.tensor: work.weight_tensor(table), **{n: None for n in inside}}, table_meta,
                          tx=tx, progress=progress)
        else:
            rows = work.weight_rows()
            summary.update(rows_written=int(rows[0].size), write="in-place")
            table.update({table.tensor: rows}, table_meta, tx=tx)
        if fresh or work.every_row or home.store is None:
            tx.replace(home.path, work.state_tensors(names, table.shape), state_meta, progress=progress)
        else:
            tx.update(home.store, work.state_rows(names), state_meta)
        if home.old is not None:
            tx.remove(home.old)


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


def _check_state(home: StateHome, names: list[str]) -> None:
    tensors, shape = home.tensors(), home.table.shape
    for name in names:
        info = tensors.get(name)
        if info is None:
            raise StateError(f"{home.where}: optimizer state tensor {name} is missing; reset the "
                             "optimizer state (--reset-optimizer)")
        if info.dtype != "F32" or info.shape != shape:
            raise StateError(f"{home.where}: optimizer state tensor {name} is {info.dtype} "
                             f"{list(info.shape)}, expected F32 {list(shape)}")


class _Work:
    """The rows a call computes on, in memory: the whole table (``every_row``) or a compact copy of
    the sorted distinct rows ``rows`` that the batches name (a row-sparse optimizer changes no
    other row)."""

    def __init__(self, rows, weight, state, every_row: bool, state_fill, local=None):
        self.rows = rows  # table row of each work row (None: the identity)
        self.weight = weight
        self.state = state
        self.every_row = every_row
        self.state_fill = state_fill  # fresh state: the init value of rows never touched, else None
        self.local = local  # per step, its ids as work rows (None: the ids themselves)
        n = weight.shape[0]
        self.weight_changed = np.zeros(n, bool)
        self.state_changed = np.zeros(n, bool)
        self.touched = np.zeros(n, bool)

    @classmethod
    def full(cls, table, home, spec, names, fresh):
        weight = np.array(table.raw)
        state = init_state(spec, table.shape) if fresh else {n: np.array(home.array(n)) for n in names}
        return cls(None, weight, state, True, None)

    @classmethod
    def compact(cls, table, home, spec, names, fresh, checked):
        # One sort for every step's ids gives the rows and each step's ids as work rows (a
        # search per step would cost more than its update for a call of many steps).
        flat = np.concatenate([ids.reshape(-1) for ids, _ in checked]) if checked else np.zeros(0, np.int64)
        rows, inverse = distinct_inverse(flat)
        ends = np.cumsum([ids.size for ids, _ in checked])
        local = [part.reshape(ids.shape) for part, (ids, _) in zip(np.split(inverse, ends[:-1]), checked)]
        weight = _rows_of(table.store, table.tensor, rows)
        if fresh:
            state = init_state(spec, weight.shape)
            fill = {n: v[0, 0] for n, v in init_state(spec, (1, 1)).items()}
        else:
            state = {n: _rows_of(home.holder, n, rows) for n in names}
            fill = None
        return cls(rows, weight, state, False, fill, local)

    def _local_padding(self, padding_idx):
        if padding_idx is None or self.rows is None:
            return padding_idx
        pos = int(np.searchsorted(self.rows, padding_idx))
        return pos if pos < self.rows.size and self.rows[pos] == padding_idx else None

    def run(self, spec, count, cfg, checked):
        """Apply the steps; per-step records and the final step count."""
        records = []
        pad = self._local_padding(cfg.padding_idx)
        for i, (ids, grad) in enumerate(checked):
            local = ids if self.local is None else self.local[i]
            renormed = 0
            if cfg.max_norm is not None:
                # the forward pass: torch.embedding_renorm_ of the distinct looked-up rows
                renormed = embedding_renorm_(self.weight, local, cfg.max_norm, cfg.norm_type)
                self.weight_changed[local.reshape(-1)] = True
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
            # rows of the coalesced gradient (a row-sparse update names exactly those)
            grad_rows = up.rows if up.rows is not None else distinct(rg.rows) if rg.sparse else rg.rows
            self.touched[grad_rows] = True
            records.append({"step": count, "rows_touched": int(grad_rows.size),
                            "grad_norm": up.grad_norm, "rows_renormed": int(renormed)})
        return records, count

    def rows_touched(self) -> int:
        return int(self.touched.sum())

    def weight_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The changed rows of the weight: (rows, values), for ``Table.update``."""
        return _selected(self.weight_changed, self.rows, self.weight)

    def state_rows(self, names) -> dict:
        return {n: _selected(self.state_changed, self.rows, self.state[n]) for n in names}

    def weight_tensor(self, table):
        """The whole new weight, streamed for a compact copy (for a rewrite)."""
        if self.every_row:
            return self.weight
        w = self.weight_changed
        return _patched(table.raw, None, self.rows[w], self.weight[w])

    def state_tensors(self, names, shape) -> dict:
        if self.every_row:
            return dict(self.state)
        s = self.state_changed
        return {n: _patched(None, self.state_fill[n], self.rows[s], self.state[n][s], shape=shape) for n in names}


#: a call's rows fewer than one in this many of the table's are read with ``pread``, not through
#: the map (``Store.read_rows``): scattered rows gain nothing from a map's fault-around
PREAD_FRACTION = 16


def _rows_of(store: Store, name: str, rows) -> np.ndarray:
    """Rows ``rows`` (sorted, distinct) of the float32 tensor ``name`` of ``store``, copied: read
    with ``pread`` when they are few, else gathered from the map on the backend the call's work
    asks for."""
    tensor = store.array(name)
    if rows.size * PREAD_FRACTION <= tensor.shape[0]:
        return store.read_rows(name, rows)
    out = np.empty((rows.size, tensor.shape[1]), tensor.dtype)
    return row_kernels(out.size).gather(tensor, rows, out) if out.size else out


def _selected(mask, rows, values):
    """``(rows[mask], values[mask])``, without copying when every row is selected (a step
    usually changes every row it computed on)."""
    return (rows, values) if mask.all() else (rows[mask], values[mask])


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
