"""torch.optim's SGD, Adagrad, SparseAdam, Adam and AdamW for one embedding weight, as row updates.

A step never writes to its inputs: ``step(spec, step_count, weight, state, rowgrad)`` reads the
weight and the state tensors (memory maps are fine) and returns an ``Update`` saying which rows
change and their new values, so the table layer can log O(k) rows or rewrite the file.

Numbers follow PyTorch 2.13's single-tensor CPU code paths (docs/semantics.md §6); the
remaining differences are:

* ``sqrt``: torch uses MKL's, about 0.7% of results 1 ulp low; we use the correctly rounded one
  (Adagrad, SparseAdam, Adam, AdamW: a few ulp after some steps).
* sparse gradients are coalesced with a stable sort where torch's is unstable
  (``embtool.backward`` module doc): rows with more than two entries in batches of more than 16.
* SGD with momentum on sparse gradients: torch keeps the momentum buffer as an uncoalesced sparse
  tensor grown by merge-adds, and applies its entries to the weight one by one.  We keep it as a
  dense float32 tensor (``optim.momentum_buffer``) updated with the dense formulas on the
  coalesced gradient: the same sums, rounded in a different order (last-bit differences that
  stay within 1e-5 relative over 100 steps); rows absent from the buffer have a zero buffer and
  keep their weight bit for bit, as in torch.

Step counters are those of torch's state: an int for SGD (embtool's own count) and SparseAdam, a
float32 tensor for Adagrad, Adam and AdamW (so it saturates at 2**24 exactly as torch's does).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from embtool import jsontext
from embtool.backward import RowGrad, row_kernels
from embtool.config import META_HPARAMS, META_NAME, META_STEP
from embtool.errors import ConfigError, FormatError, ShapeError, StateError

f32 = np.float32

DEFAULTS: dict[str, dict] = {
    "sgd": dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    "adagrad": dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                    maximize=False),
    "sparse-adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False),
    "adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False),
    "adamw": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False),
}
NAMES = tuple(DEFAULTS)
_BOOLS = {"nesterov", "maximize", "amsgrad"}

# torch's refusals of a gradient layout, verbatim (docs/semantics.md §6.1).
ADAM_SPARSE = "Adam does not support sparse gradients, please consider SparseAdam instead"
SPARSE_ADAM_DENSE = "SparseAdam does not support dense gradients, please consider Adam instead"
SGD_SPARSE_WD = "add(sparse, dense) is not supported. Use add(dense, sparse) instead."
ADAGRAD_SPARSE_WD = "weight_decay option is not compatible with sparse gradients"


def _validate(name: str, h: dict) -> None:
    """torch.optim's constructor checks, comparisons kept as written there (NaN passes where
    torch lets it pass)."""
    lr, wd = h["lr"], h.get("weight_decay", 0.0)
    if name == "sgd":
        if lr < 0.0:
            raise ConfigError(f"Invalid learning rate: {lr}")
        if h["momentum"] < 0.0:
            raise ConfigError(f"Invalid momentum value: {h['momentum']}")
        if wd < 0.0:
            raise ConfigError(f"Invalid weight_decay value: {wd}")
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ConfigError("Nesterov momentum requires a momentum and zero dampening")
        return
    if name == "adagrad":
        for key, label in (("lr", "learning rate"), ("lr_decay", "lr_decay value"),
                           ("weight_decay", "weight_decay value"),
                           ("initial_accumulator_value", "initial_accumulator_value value"),
                           ("eps", "epsilon value")):
            if not 0.0 <= h[key]:
                raise ConfigError(f"Invalid {label}: {h[key]}")
        return
    strict = name == "sparse-adam"  # SparseAdam wants lr > 0 and eps > 0
    if not (0.0 < lr if strict else 0.0 <= lr):
        raise ConfigError(f"Invalid learning rate: {lr}")
    if not (0.0 < h["eps"] if strict else 0.0 <= h["eps"]):
        raise ConfigError(f"Invalid epsilon value: {h['eps']}")
    for i, beta in enumerate(h["betas"]):
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"Invalid beta parameter at index {i}: {beta}")
    if not strict and not 0.0 <= wd:
        raise ConfigError(f"Invalid weight_decay value: {wd}")


def _coerce(name: str, key: str, value):
    if key in _BOOLS:
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"{name}: {key} must be true or false, not {value!r}")
        return bool(value)
    if key == "betas":
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ConfigError(f"{name}: betas must be a pair of numbers, not {value!r}")
        return tuple(_coerce(name, "beta", b) for b in value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name}: {key} must be a number, not {value!r}")
    return float(value)


class OptimizerSpec:
    """An optimizer name (``sgd``, ``adagrad``, ``sparse-adam``, ``adam``, ``adamw``) and its
    hyper-parameters under torch's names, defaults filled in and validated as torch.optim does."""

    def __init__(self, name: str, **hparams):
        if name not in DEFAULTS:
            raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(NAMES)}")
        unknown = sorted(set(hparams) - set(DEFAULTS[name]))
        if unknown:
            raise ConfigError(f"{name} has no hyper-parameter {unknown[0]!r} "
                              f"(it takes {', '.join(DEFAULTS[name])})")
        full = dict(DEFAULTS[name])
        full.update({k: _coerce(name, k, v) for k, v in hparams.items() if v is not None})
        _validate(name, full)
        self.name = name
        self.hparams = full

    def __getattr__(self, key):
        try:
            return self.__dict__["hparams"][key]
        except KeyError:
            raise AttributeError(key) from None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{self.name}({args})"

    def _key(self) -> str:
        return json.dumps(self.hparams, sort_keys=True)

    def __eq__(self, other) -> bool:
        return isinstance(other, OptimizerSpec) and (self.name, self._key()) == (other.name, other._key())

    def __hash__(self) -> int:
        return hash((self.name, self._key()))

    # -- persistence -------------------------------------------------------------------------
    def to_metadata(self, step_count: int = 0) -> dict[str, str]:
        """The ``embtool.optim.*`` metadata entries (all strings) for this spec at ``step_count``."""
        return {META_NAME: self.name, META_HPARAMS: self._key(), META_STEP: str(int(step_count))}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> "tuple[OptimizerSpec, int] | None":
        """``(spec, step_count)`` stored in a table's metadata, or None when it has no optimizer."""
        if META_NAME not in meta:
            return None
        try:
            hparams = jsontext.loads(meta.get(META_HPARAMS, "{}"), META_HPARAMS)
            step_count = int(meta.get(META_STEP, "0"))
        except (ValueError, FormatError) as exc:
            raise StateError(f"corrupt optimizer metadata {META_HPARAMS}/{META_STEP}: {exc}") from None
        if not isinstance(hparams, dict) or step_count < 0:
            raise StateError(f"corrupt optimizer metadata {META_HPARAMS}/{META_STEP}")
        return cls(meta[META_NAME], **hparams), step_count

    def ensure_same(self, requested: "OptimizerSpec") -> None:
        """StateError unless ``requested`` is this (stored) optimizer with the same hyper-parameters."""
        if requested != self:
            raise StateError(f"the table's optimizer state is for {self!r}, not {requested!r}; "
                             "reset the optimizer state to change optimizer or hyper-parameters")

    # -- gradient layouts --------------------------------------------------------------------
    def check_gradient(self, sparse: bool) -> None:
        """ConfigError with torch's message when torch.optim refuses this gradient layout."""
        if sparse and self.name in ("adam", "adamw"):
            raise ConfigError(ADAM_SPARSE)
        if not sparse and self.name == "sparse-adam":
            raise ConfigError(SPARSE_ADAM_DENSE)
        if sparse and self.name == "sgd" and self.hparams["weight_decay"] != 0:
            raise ConfigError(f"{SGD_SPARSE_WD} (SGD weight_decay needs dense gradients)")
        if sparse and self.name == "adagrad" and self.hparams["weight_decay"] != 0:
            raise ConfigError(ADAGRAD_SPARSE_WD)

    def row_sparse(self, sparse: bool) -> bool:
        """Whether a step on a (sparse or dense) gradient changes only the gradient's rows, bit for
        bit as torch: then ``Update.rows`` lists them; otherwise every row may change."""
        h = self.hparams
        if self.name == "sparse-adam":
            return True
        if self.name == "sgd" and h["momentum"] == 0:
            # Dense: fma(+0, -lr, p) == p bitwise unless lr is not finite, or maximize turns the
            # zero gradient into -0.0 (then -0.0 weights would become +0.0).
            return sparse or (h["weight_decay"] == 0 and not h["maximize"] and bool(np.isfinite(f32(h["lr"]))))
        if self.name == "adagrad":
            # Dense zero-gradient rows: sum stays, p + (-clr*0)/std == p when std > 0 (eps > 0 in
            # float32; eps=0 with sum=0 gives NaN in torch) and the sum is not -0.0.
            iav = h["initial_accumulator_value"]
            return sparse or bool(h["weight_decay"] == 0 and not h["maximize"] and f32(h["eps"]) > 0
                                  and np.isfinite(f32(h["lr"])) and math.copysign(1.0, iav) > 0)
        return False


def state_names(spec: OptimizerSpec) -> list[str]:
    """The state tensors of ``spec``, stored as ``optim.<torch state key>``, each shaped like weight."""
    if spec.name == "sgd":
        return ["optim.momentum_buffer"] if spec.momentum != 0 else []
    if spec.name == "adagrad":
        return ["optim.sum"]
    names = ["optim.exp_avg", "optim.exp_avg_sq"]
    if spec.name != "sparse-adam" and spec.amsgrad:
        names.append("optim.max_exp_avg_sq")
    return names


def init_state(spec: OptimizerSpec, shape) -> dict[str, np.ndarray]:
    """Fresh state as torch creates it: zeros, Adagrad's ``sum`` filled with initial_accumulator_value."""
    fill = f32(spec.initial_accumulator_value) if spec.name == "adagrad" else f32(0)
    return {name: np.full(tuple(shape), fill, np.float32) for name in state_names(spec)}


@dataclass
class Update:
    """The result of one step.  ``rows``: int64 table rows that change (ascending), or None when
    every row may change; ``weight`` and ``state[name]``: their new values, ``len(rows) x D`` (or
    the whole table when ``rows`` is None).  ``rows_touched``: distinct rows with a gradient."""

    step_count: int
    rows: np.ndarray | None
    weight: np.ndarray
    state: dict[str, np.ndarray]
    rows_touched: int
    grad: RowGrad = field(repr=False)

    @property
    def grad_norm(self) -> float:
        """L2 norm of the (coalesced) gradient, before maximize and weight decay, in float64."""
        return self.grad.norm()


def _next_step(spec: OptimizerSpec, step_count: int) -> int:
    if spec.name in ("adagrad", "adam", "adamw"):  # a float32 tensor in torch: += 1 rounds
        return int(f32(step_count) + f32(1))
    return step_count + 1


def _check_arrays(spec, weight, state, rowgrad) -> None:
    if weight.ndim != 2 or weight.dtype != np.float32:
        raise ConfigError(f"training needs a 2-D float32 weight, got {weight.dtype} {tuple(weight.shape)}")
    if (rowgrad.num_embeddings, rowgrad.embedding_dim) != weight.shape:
        raise ShapeError(f"gradient of shape ({rowgrad.num_embeddings}, {rowgrad.embedding_dim}) "
                         f"does not match weight shape {tuple(weight.shape)}")
    for name in state_names(spec):
        if name not in state:
            raise StateError(f"optimizer state tensor {name} is missing")
        arr = state[name]
        if arr.shape != weight.shape or arr.dtype != np.float32:
            raise StateError(f"optimizer state tensor {name} is {arr.dtype} {tuple(arr.shape)}, "
                             f"expected float32 {tuple(weight.shape)}")


def step(spec: OptimizerSpec, step_count: int, weight: np.ndarray, state: dict[str, np.ndarray],
         rowgrad: RowGrad) -> Update:
    """One ``optimizer.step()`` of ``spec`` after ``step_count`` earlier steps (module docstring)."""
    spec.check_gradient(rowgrad.sparse)
    _check_arrays(spec, weight, state, rowgrad)
    new_step = _next_step(spec, step_count)
    n, dim = weight.shape
    if spec.name == "sgd" and spec.momentum == 0 and rowgrad.sparse:
        return _sgd_sparse_entries(spec, new_step, weight, rowgrad)
    if spec.name == "sgd" and rowgrad.segments is not None and spec.row_sparse(False):
        return _sgd_dense_fused(spec, new_step, weight, rowgrad)
    grad = rowgrad.coalesce()
    row_sparse = spec.row_sparse(rowgrad.sparse)
    if row_sparse:
        rows, gidx = grad.rows, np.arange(grad.rows.size, dtype=np.int64)
    else:
        rows, gidx = np.arange(n, dtype=np.int64), np.full(n, -1, np.int64)
        gidx[grad.rows] = np.arange(grad.rows.size)
    names = state_names(spec)
    out_w = np.empty((rows.size, dim), np.float32)
    out = {name: np.empty((rows.size, dim), np.float32) for name in names}
    args = _KERNEL_ARGS[spec.name](spec, new_step, rowgrad.sparse, step_count)
    ins = [state[name] for name in names]
    outs = [out[name] for name in names]
    if spec.name in ("adam", "adamw") and not spec.amsgrad:  # the kernel's unused vmax slots
        ins.append(np.empty((0, dim), np.float32))
        outs.append(np.empty((0, dim), np.float32))
    if spec.name == "sgd" and spec.momentum == 0:
        ins.append(np.empty((0, dim), np.float32))
        outs.append(np.empty((0, dim), np.float32))
    kernel = getattr(row_kernels(rows.size * dim), _KERNEL[spec.name])
    kernel(weight, *ins, rows, grad.values, gidx, *args, out_w, *outs)
    return Update(new_step, rows if row_sparse else None, out_w, out, int(grad.rows.size), grad)


def _sgd_dense_fused(spec, new_step, weight, rowgrad) -> Update:
    """Plain SGD on a dense gradient still held as segments: the backward accumulation and
    ``p = fma(g, f32(-lr), p)`` in one pass over each row (no k x D gradient temporary)."""
    seg = rowgrad.segments
    out_w = np.empty((rowgrad.rows.size, weight.shape[1]), np.float32)
    row_kernels(seg.entries.size).sgd_segment_rows(
        weight, seg.entries, seg.order, seg.starts[:-1], seg.starts[1:], seg.scale, rowgrad.rows,
        -f32(spec.lr), out_w)
    return Update(new_step, rowgrad.rows, out_w, {}, int(rowgrad.rows.size), rowgrad)


def _sgd_sparse_entries(spec, new_step, weight, rowgrad) -> Update:
    """Plain SGD on a sparse gradient: torch's ``p.add_(grad, alpha=-lr)`` applies the uncoalesced
    entries one by one, ``p = fma(v, f32(-lr), p)`` in stored order."""
    order, rows, starts = rowgrad.groups()
    lr = f32(spec.lr) if spec.maximize else -f32(spec.lr)  # fma(-v, -lr, p) == fma(v, lr, p)
    out_w = weight[rows]  # a copy (fancy indexing); float32, as _check_arrays made sure
    row_kernels(rowgrad.values.size).scatter_rows(
        rowgrad.values, order, starts[:-1], starts[1:], np.full(rows.size, lr, np.float32), False, out_w)
    return Update(new_step, rows, out_w, {}, int(rows.size), rowgrad)


def _sgd_args(spec, new_step, sparse, step_count):
    h = spec.hparams
    return (f32(-h["lr"]), f32(h["momentum"]), f32(1 - h["dampening"]), f32(h["weight_decay"]),
            h["nesterov"], h["maximize"], step_count == 0)


def _adagrad_args(spec, new_step, sparse, step_count):
    h = spec.hparams
    t = float(new_step)
    clr = h["lr"] / (1 + (t - 1) * h["lr_decay"])
    return f32(-clr), f32(h["weight_decay"]), f32(h["eps"]), h["maximize"], sparse


def _sparse_adam_args(spec, new_step, sparse, step_count):
    h = spec.hparams
    b1, b2 = h["betas"]
    step_size = h["lr"] * math.sqrt(1 - b2**new_step) / (1 - b1**new_step)
    return f32(1 - b1), f32(1 - b2), f32(h["eps"]), f32(-step_size), h["maximize"]


def _adam_args(spec, new_step, sparse, step_count):
    h = spec.hparams
    b1, b2 = h["betas"]
    t = float(new_step)
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    decoupled = spec.name == "adamw" and h["weight_decay"] != 0
    wd = 0.0 if spec.name == "adamw" else h["weight_decay"]
    decay = f32(1 - h["lr"] * h["weight_decay"]) if decoupled else f32(1)
    return (f32(1 - b1), f32(b2), f32(1 - b2), f32(h["eps"]), f32(wd), decay, h["amsgrad"], h["maximize"],
            f32(-(h["lr"] / bc1)), f32(bc2**0.5))


_KERNEL = {"sgd": "sgd_rows", "adagrad": "adagrad_rows", "sparse-adam": "sparse_adam_rows",
           "adam": "adam_rows", "adamw": "adam_rows"}
_KERNEL_ARGS = {"sgd": _sgd_args, "adagrad": _adagrad_args, "sparse-adam": _sparse_adam_args,
                "adam": _adam_args, "adamw": _adam_args}
