"""embtool.optim: torch.optim's SGD, Adagrad, SparseAdam, Adam and AdamW as row updates.

Tolerances (the issue's "done when"), with their reasons:
* bit-identical: SGD on dense gradients and plain SGD on sparse ones; every optimizer once
  torch's own sqrt is swapped into the numpy kernels (dense gradients, and sparse ones of at most
  16 entries, where torch's coalesce keeps input order);
* 3 steps: within 4 ulp, an ulp being that of the row's largest magnitude in torch's tensor
  (an element that cancels to near zero can show more *own* ulps for the same absolute error);
* 100 steps: max |ours - torch| / max |torch| <= 1e-5 per tensor (weight and every state).
The remaining differences come from torch's MKL sqrt (sometimes 1 ulp low), the order in which
torch's unstable sort sums duplicates of a sparse gradient, and SGD momentum on sparse gradients
(torch keeps an uncoalesced sparse buffer; we keep a dense one).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embtool import kernels
from embtool.backward import embedding_backward
from embtool.errors import ConfigError, ShapeError, StateError
from embtool.optim import (ADAGRAD_SPARSE_WD, ADAM_SPARSE, DEFAULTS, SGD_SPARSE_WD, SPARSE_ADAM_DENSE,
                           OptimizerSpec, init_state, state_names, step)
from golden.make_train import CASES, TORCH_CLASS, case_batches, case_weight, make_batches, torch_run

GOLDEN = Path(__file__).parent / "golden" / "train_cases.npz"
V, D = 24, 6


def bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.int32)


def run(name, hparams, weight0, batches, *, padding_idx=None, sparse=False, scale_grad_by_freq=False):
    """embtool's trajectory, applying each Update as the table layer would."""
    spec = OptimizerSpec(name, **hparams)
    w = weight0.copy()
    state = init_state(spec, w.shape)
    count = 0
    out = []
    for idx, grad in batches:
        rg = embedding_backward(idx, grad, num_embeddings=w.shape[0], padding_idx=padding_idx,
                                sparse=sparse, scale_grad_by_freq=scale_grad_by_freq)
        up = step(spec, count, w, state, rg)
        count = up.step_count
        if up.rows is None:
            w = up.weight.copy()
            state = {k: v.copy() for k, v in up.state.items()}
        else:
            w[up.rows] = up.weight
            for k, v in up.state.items():
                state[k][up.rows] = v
        out.append({"weight": w.copy(), **{k: v.copy() for k, v in state.items()}, "step": count})
    return out


def row_ulps(ours, ref):
    """|ours - ref| in ulps of the largest magnitude of ref's row."""
    scale = np.max(np.abs(ref), axis=-1, keepdims=True)
    return np.max(np.abs(ours.astype(np.float64) - ref) / np.spacing(np.maximum(scale, np.float32(1e-30))))


def compare(ours, theirs, *, exact=False, ulps=None, rel=None):
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs):
        assert o["step"] == t["step"]
        assert set(o) == set(t), (set(o), set(t))
        for key in t:
            if key == "step":
                continue
            a, b = o[key], t[key]
            nan = np.isnan(b)
            assert np.array_equal(np.isnan(a), nan), key
            a, b = np.where(nan, 0, a).astype(np.float32), np.where(nan, 0, b).astype(np.float32)
            if exact:
                assert np.array_equal(bits(a), bits(b)), key
            if ulps is not None:
                assert row_ulps(a, b) <= ulps, (key, row_ulps(a, b))
            if rel is not None and np.abs(b).max() > 0:
                diff = np.max(np.abs(a.astype(np.float64) - b)) / np.abs(b).max()
                assert diff <= rel, (key, diff)


# Configurations run against torch: (optimizer, hyper-parameters, table options).
CONFIGS = [
    ("sgd", dict(lr=0.1), dict(padding_idx=3)),
    ("sgd", dict(lr=0.1, maximize=True), dict(padding_idx=-1, scale_grad_by_freq=True)),
    ("sgd", dict(lr=0.1), dict(padding_idx=-1, sparse=True)),
    ("sgd", dict(lr=0.1, maximize=True), dict(sparse=True)),
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01), dict(padding_idx=0, scale_grad_by_freq=True)),
    ("sgd", dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True), dict(padding_idx=2)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True), dict(sparse=True, padding_idx=1)),
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.3), dict(sparse=True)),
    ("adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1), dict(padding_idx=3)),
    ("adagrad", dict(lr=0.1, maximize=True), dict(scale_grad_by_freq=True)),
    ("adagrad", dict(lr=0.1, eps=0.0, initial_accumulator_value=0.5), dict(padding_idx=3)),
    ("adagrad", dict(lr=0.1, eps=0.0), dict(padding_idx=3)),  # 0/0: untouched rows become NaN
    ("adagrad", dict(lr=0.1, lr_decay=0.01, maximize=True), dict(sparse=True, padding_idx=0)),
    ("adagrad", dict(lr=0.05, initial_accumulator_value=0.2), dict(sparse=True)),
    ("sparse-adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), dict(sparse=True, padding_idx=4)),
    ("sparse-adam", dict(lr=0.01, maximize=True), dict(sparse=True)),
    ("adam", dict(lr=0.01, weight_decay=0.01, amsgrad=True), dict(padding_idx=3)),
    ("adam", dict(lr=0.01, betas=(0.3, 0.5)), dict(scale_grad_by_freq=True)),
    ("adam", dict(lr=0.01, maximize=True), dict(padding_idx=-2)),
    ("adamw", dict(lr=0.01, betas=(0.7, 0.9), maximize=True), dict(scale_grad_by_freq=True)),
    ("adamw", dict(lr=0.01, amsgrad=True, weight_decay=0.1), dict(padding_idx=0)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in {**h, **o}.items())}" for n, h, o in CONFIGS]


def weight0(seed=0):
    return np.random.default_rng(seed).standard_normal((V, D)).astype(np.float32)


def exact_sgd(name, hparams, opts):
    """SGD steps torch computes exactly like us (all but momentum on sparse gradients)."""
    return name == "sgd" and not (opts.get("sparse") and hparams.get("momentum"))


@pytest.mark.torch
@pytest.mark.parametrize("name,hparams,opts", CONFIGS, ids=IDS)
def test_three_steps_vs_torch(torch, name, hparams, opts):
    batches = make_batches(11, V, D, 3, (4, 5), padding_idx=opts.get("padding_idx"), hot=12)
    theirs = torch_run(torch, name, hparams, weight0(), batches, **opts)
    ours = run(name, hparams, weight0(), batches, **opts)
    compare(ours, theirs, exact=exact_sgd(name, hparams, opts), ulps=4)


@pytest.mark.torch
@pytest.mark.parametrize("name,hparams,opts", CONFIGS, ids=IDS)
def test_hundred_steps_vs_torch(torch, name, hparams, opts):
    batches = make_batches(12, V, D, 100, (8, 10), padding_idx=opts.get("padding_idx"), hot=16)
    theirs = torch_run(torch, name, hparams, weight0(1), batches, **opts)
    ours = run(name, hparams, weight0(1), batches, **opts)
    compare(ours, theirs, exact=exact_sgd(name, hparams, opts), rel=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("name,hparams,opts", [c for c in CONFIGS if c[0] != "sgd"],
                         ids=[i for c, i in zip(CONFIGS, IDS) if c[0] != "sgd"])
def test_bit_identical_with_torch_sqrt(torch, monkeypatch, name, hparams, opts):
    """With torch's sqrt in the numpy kernels, every formula reproduces torch bit for bit
    (sparse batches of 16 entries, where torch's coalesce keeps input order).  SGD uses no sqrt:
    plain SGD is bit-identical anyway, and momentum on sparse gradients rounds in torch's
    sparse-buffer order (tested within tolerance above)."""
    import embtool.kernels._numpy.optim as numpy_optim

    monkeypatch.setenv("EMBTOOL_BACKEND", "numpy")
    monkeypatch.setattr(numpy_optim, "sqrt", lambda x: torch.from_numpy(np.ascontiguousarray(x)).sqrt().numpy())
    batches = make_batches(13, V, D, 5, (4, 4), padding_idx=opts.get("padding_idx"), hot=12)
    theirs = torch_run(torch, name, hparams, weight0(2), batches, **opts)
    compare(run(name, hparams, weight0(2), batches, **opts), theirs, exact=True)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c[0] for c in CASES])
def test_golden_trajectories(i):
    """The committed torch trajectories (tests/golden/make_train.py), without torch."""
    data = np.load(GOLDEN)
    meta = json.loads(data["meta"].tobytes())["cases"][i]
    case, name, hparams, opts = CASES[i]
    assert meta["case"] == case
    ours = run(name, hparams, case_weight(i), case_batches(i, opts), **opts)
    theirs = []
    for s, count in enumerate(meta["steps"]):
        prefix = f"{case}/{s}/"
        theirs.append({"step": count, **{k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}})
    compare(ours, theirs, exact=exact_sgd(name, hparams, opts), ulps=4)


# -- hyper-parameters, defaults and refusals --------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("name", list(DEFAULTS))
def test_defaults_are_torch_defaults(torch, name):
    p = torch.nn.Parameter(torch.zeros(2, 2))
    theirs = getattr(torch.optim, TORCH_CLASS[name])([p]).defaults
    for key, value in OptimizerSpec(name).hparams.items():
        assert theirs[key] == value, key


INVALID = [
    ("sgd", dict(lr=-0.1), "Invalid learning rate: -0.1"),
    ("sgd", dict(momentum=-1.0), "Invalid momentum value: -1.0"),
    ("sgd", dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
    ("sgd", dict(nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    ("sgd", dict(nesterov=True, momentum=0.9, dampening=0.1), "Nesterov momentum requires a momentum and zero dampening"),
    ("adagrad", dict(lr=-1.0), "Invalid learning rate: -1.0"),
    ("adagrad", dict(lr_decay=-1.0), "Invalid lr_decay value: -1.0"),
    ("adagrad", dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
    ("adagrad", dict(initial_accumulator_value=-1.0), "Invalid initial_accumulator_value value: -1.0"),
    ("adagrad", dict(eps=-1.0), "Invalid epsilon value: -1.0"),
    ("adagrad", dict(lr=float("nan")), "Invalid learning rate: nan"),
    ("sparse-adam", dict(lr=0.0), "Invalid learning rate: 0.0"),
    ("sparse-adam", dict(eps=0.0), "Invalid epsilon value: 0.0"),
    ("sparse-adam", dict(betas=(1.0, 0.9)), "Invalid beta parameter at index 0: 1.0"),
    ("adam", dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    ("adam", dict(eps=-1.0), "Invalid epsilon value: -1.0"),
    ("adam", dict(lr=-1.0), "Invalid learning rate: -1.0"),
    ("adamw", dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
]


@pytest.mark.parametrize("name,hparams,message", INVALID)
def test_invalid_hparams(name, hparams, message):
    with pytest.raises(ConfigError) as exc:
        OptimizerSpec(name, **hparams)
    assert str(exc.value) == message


@pytest.mark.torch
@pytest.mark.parametrize("name,hparams,message", INVALID)
def test_invalid_hparams_torch_says_the_same(torch, name, hparams, message):
    p = torch.nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError) as exc:
        getattr(torch.optim, TORCH_CLASS[name])([p], **hparams)
    assert str(exc.value) == message


def test_torch_accepts_what_we_accept():
    OptimizerSpec("sgd", lr=float("nan"))  # torch's `lr < 0.0` lets NaN through
    OptimizerSpec("adam", lr=0.0, eps=0.0, betas=(0, 0))
    OptimizerSpec("sgd", nesterov=True, momentum=0.5)
    for bad in (dict(momentum="0.9"), dict(nesterov=1), dict(bogus=1.0)):
        with pytest.raises(ConfigError):
            OptimizerSpec("sgd", **bad)
    with pytest.raises(ConfigError, match="unknown optimizer"):
        OptimizerSpec("rmsprop")
    with pytest.raises(ConfigError, match="betas"):
        OptimizerSpec("adam", betas=(0.9,))


REFUSALS = [("adam", {}, True, ADAM_SPARSE), ("adamw", {}, True, ADAM_SPARSE),
            ("sparse-adam", {}, False, SPARSE_ADAM_DENSE),
            ("sgd", dict(weight_decay=0.1), True, SGD_SPARSE_WD),
            ("adagrad", dict(weight_decay=0.1), True, ADAGRAD_SPARSE_WD)]


@pytest.mark.parametrize("name,hparams,sparse,message", REFUSALS)
def test_gradient_refusals(name, hparams, sparse, message):
    spec = OptimizerSpec(name, **hparams)
    w = weight0()
    rg = embedding_backward(np.array([1, 2]), np.ones((2, D), np.float32), num_embeddings=V, sparse=sparse)
    with pytest.raises(ConfigError) as exc:
        step(spec, 0, w, init_state(spec, w.shape), rg)
    assert str(exc.value).startswith(message)


@pytest.mark.torch
@pytest.mark.parametrize("name,hparams,sparse,message", REFUSALS)
def test_gradient_refusals_torch_says_the_same(torch, name, hparams, sparse, message):
    batches = [(np.array([1, 2]), np.ones((2, D), np.float32))]
    with pytest.raises(RuntimeError) as exc:
        torch_run(torch, name, hparams, weight0(), batches, sparse=sparse)
    assert str(exc.value) == message


# -- state, metadata, row sparsity ------------------------------------------------------------

def test_state_names_and_init():
    assert state_names(OptimizerSpec("sgd")) == []
    assert state_names(OptimizerSpec("sgd", momentum=0.9)) == ["optim.momentum_buffer"]
    assert state_names(OptimizerSpec("adagrad")) == ["optim.sum"]
    assert state_names(OptimizerSpec("sparse-adam")) == ["optim.exp_avg", "optim.exp_avg_sq"]
    assert state_names(OptimizerSpec("adamw", amsgrad=True))[-1] == "optim.max_exp_avg_sq"
    st = init_state(OptimizerSpec("adagrad", initial_accumulator_value=0.25), (3, 2))
    assert st["optim.sum"].dtype == np.float32 and (st["optim.sum"] == 0.25).all()


def test_metadata_round_trip_and_mismatch():
    spec = OptimizerSpec("adam", lr=0.01, betas=(0.5, 0.75), amsgrad=True)
    meta = spec.to_metadata(7)
    assert set(meta) == {"embtool.optim.name", "embtool.optim.hparams", "embtool.optim.step"}
    assert all(isinstance(v, str) for v in meta.values())
    back, count = OptimizerSpec.from_metadata({**meta, "other": "x"})
    assert back == spec and count == 7 and back.betas == (0.5, 0.75)
    back.ensure_same(spec)
    with pytest.raises(StateError, match="reset"):
        back.ensure_same(OptimizerSpec("adam", lr=0.02, betas=(0.5, 0.75), amsgrad=True))
    with pytest.raises(StateError):
        back.ensure_same(OptimizerSpec("adamw"))
    assert OptimizerSpec.from_metadata({"x": "y"}) is None
    with pytest.raises(StateError):
        OptimizerSpec.from_metadata({**meta, "embtool.optim.hparams": "{nope"})


@pytest.mark.parametrize("name,hparams,sparse,expected", [
    ("sgd", {}, False, True), ("sgd", {}, True, True), ("sgd", dict(maximize=True), False, False),
    ("sgd", dict(weight_decay=0.1), False, False), ("sgd", dict(momentum=0.5), True, False),
    ("sgd", dict(lr=float("inf")), False, False),
    ("adagrad", {}, False, True), ("adagrad", {}, True, True), ("adagrad", dict(eps=0.0), False, False),
    ("adagrad", dict(eps=1e-50), False, False), ("adagrad", dict(maximize=True), False, False),
    ("adagrad", dict(initial_accumulator_value=-0.0), False, False),
    ("sparse-adam", {}, True, True), ("adam", {}, False, False), ("adamw", {}, False, False),
])
def test_row_sparse_claims(name, hparams, sparse, expected):
    """row_sparse() says a step changes only the gradient's rows; check it against the full
    (every-row) computation, with -0.0, zero and NaN weights in untouched rows."""
    spec = OptimizerSpec(name, **hparams)
    assert spec.row_sparse(sparse) is expected
    if not expected or name == "sparse-adam":
        return
    w = weight0()
    w[10, :3] = [-0.0, 0.0, np.nan]
    state = init_state(spec, w.shape)
    rg = embedding_backward(np.array([[1, 2], [2, 5]]), np.ones((2, 2, D), np.float32), num_embeddings=V,
                            sparse=sparse)
    up = step(spec, 4, w, state, rg)
    assert up.rows.tolist() == [1, 2, 5] and up.weight.shape == (3, D)
    # the same step computed on every row leaves the other rows bitwise unchanged
    full_rows = np.arange(V)
    gidx = np.full(V, -1)
    gidx[up.rows] = np.arange(3)
    K = kernels.choose(w.size)
    k = K.sgd_rows if name == "sgd" else K.adagrad_rows
    out_w = np.empty_like(w)
    from embtool.optim import _KERNEL_ARGS  # noqa: PLC0415 - the kernel's own arguments
    args = _KERNEL_ARGS[name](spec, up.step_count, sparse, 4)
    ins = [state[n] for n in state_names(spec)] or [np.empty((0, D), np.float32)]
    outs = [np.empty_like(w) for _ in ins]
    k(w, *ins, full_rows, rg.coalesce().values, gidx, *args, out_w, *outs)
    others = np.setdiff1d(full_rows, up.rows)
    assert np.array_equal(bits(out_w[others]), bits(w[others]))
    if not sparse:  # dense formulas on the touched rows agree with the row-sparse update
        assert np.array_equal(bits(out_w[up.rows]), bits(up.weight))


def test_update_contents():
    w = weight0()
    idx, grad = np.array([3, 3, 7, 0]), np.arange(4 * D, dtype=np.float32).reshape(4, D)
    spec = OptimizerSpec("adam")
    up = step(spec, 0, w, init_state(spec, w.shape), embedding_backward(idx, grad, num_embeddings=V, padding_idx=0))
    assert up.rows is None and up.weight.shape == (V, D) and up.step_count == 1 and up.rows_touched == 2
    assert set(up.state) == {"optim.exp_avg", "optim.exp_avg_sq"}
    g = grad[:3].astype(np.float64)
    assert up.grad_norm == pytest.approx(np.sqrt(((g[0] + g[1]) ** 2).sum() + (g[2] ** 2).sum()))
    spec = OptimizerSpec("sparse-adam")
    rg = embedding_backward(idx, grad, num_embeddings=V, padding_idx=0, sparse=True)
    up2 = step(spec, 0, w, init_state(spec, w.shape), rg)
    assert up2.rows.tolist() == [3, 7] and up2.grad_norm == pytest.approx(up.grad_norm)
    sgd = step(OptimizerSpec("sgd"), 0, w, {}, rg)
    assert sgd.grad_norm == pytest.approx(up.grad_norm) and sgd.rows_touched == 2


def test_step_counters_follow_torch():
    """Adam/Adagrad count in float32 (saturating at 2**24); SparseAdam and SGD in ints; an
    empty gradient still counts a step."""
    w = weight0()
    empty = embedding_backward(np.array([4]), np.ones((1, D), np.float32), num_embeddings=V, padding_idx=4,
                               sparse=True)
    for name, start, expected in (("adagrad", 2**24, 2**24), ("sparse-adam", 2**24, 2**24 + 1),
                                  ("sgd", 5, 6), ("adagrad", 9, 10)):
        spec = OptimizerSpec(name)
        up = step(spec, start, w, init_state(spec, w.shape), empty)
        assert up.step_count == expected and up.rows.size == 0
    dense = embedding_backward(np.array([4]), np.ones((1, D), np.float32), num_embeddings=V)
    spec = OptimizerSpec("adam")
    assert step(spec, 2**24, w, init_state(spec, w.shape), dense).step_count == 2**24


def test_bad_arrays():
    spec = OptimizerSpec("adagrad")
    w = weight0()
    rg = embedding_backward(np.array([1]), np.ones((1, D), np.float32), num_embeddings=V)
    with pytest.raises(StateError, match="optim.sum"):
        step(spec, 0, w, {}, rg)
    with pytest.raises(StateError, match="optim.sum"):
        step(spec, 0, w, {"optim.sum": np.zeros((V, D + 1), np.float32)}, rg)
    with pytest.raises(ConfigError, match="float32"):
        step(spec, 0, w.astype(np.float64), init_state(spec, w.shape), rg)
    with pytest.raises(ShapeError):
        step(spec, 0, w[:5], init_state(spec, (5, D)), rg)


def test_small_steps_do_not_import_numba():
    """A small training step runs on numpy without importing Numba (docs/performance.md)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from embtool.backward import embedding_backward\n"
        "from embtool.optim import OptimizerSpec, init_state, step\n"
        "w = np.zeros((1000, 16), np.float32)\n"
        "for name, sparse in (('sgd', False), ('adam', False), ('sparse-adam', True)):\n"
        "    spec = OptimizerSpec(name)\n"
        "    rg = embedding_backward(np.arange(100), np.ones((100, 16), np.float32), num_embeddings=1000,"
        " sparse=sparse)\n"
        "    step(spec, 0, w, init_state(spec, w.shape), rg).grad_norm\n"
        "assert 'numba' not in sys.modules, 'numba imported'\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "EMBTOOL_BACKEND"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
