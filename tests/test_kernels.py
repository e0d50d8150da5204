"""The array kernels, numpy twin against Numba twin: identical bits on generated (hypothesis) and
adversarial inputs (NaN, infinities, -0.0, subnormals, padding, empty bags, duplicates, ties),
every kernel of ``embtool.kernels.KERNELS``; plus the registry and the backend rule.

The rest of the suite runs once, on the default backend, against PyTorch/gensim and their golden
fixtures; this module is what makes the other backend equally exact.  The text kernels are in
test_kernels_text.py.  ``NUMBA_DISABLE_JIT=1`` runs the Numba twins as Python (CI does).
"""
from __future__ import annotations

import inspect
import os
import signal

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

import naive_query
from embtool import kernels
from embtool.errors import ConfigError
from embtool.kernels import common
from embtool.kernels import numba_kernels as nb
from embtool.kernels import numpy_kernels as npk
from embtool.kernels._numba import backward, bag, formatting, lookup, optim, threads, topk
from embtool.similar import decode

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on inf and NaN
f32 = np.float32


def examples(n: int):
    """Hypothesis settings for ``n`` examples, a tenth of them when the Numba twins run as Python
    (``NUMBA_DISABLE_JIT=1``, about 100x slower)."""
    return settings(max_examples=max(10, n // 10) if numba.config.DISABLE_JIT else n, deadline=None)


EXAMPLES = examples(60)
#: float32 values that break careless kernels, mixed into generated arrays.
NASTY = np.float32([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-45, -1e-45, 1e-38, 3.4e38,
                    -3.4e38, 1.0, -1.0, 0.5, 2.0 ** -20])


def same(a, b):
    """The same dtype, shape and bits (the sign of zero included), NaN where NaN: the sign and
    payload of a NaN made by an invalid operation or from several NaN operands is left open by
    IEEE 754 and differs between numpy's and LLVM's instructions (x86 FMA returns the first NaN
    operand in the order of whichever of its three forms the compiler picked)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    if a.dtype.kind == "f":
        nan = np.isnan(a)
        if not np.array_equal(nan, np.isnan(b)):
            return False
        a, b = (np.where(nan, 0, x).astype(x.dtype).view(f"u{x.dtype.itemsize}") for x in (a, b))
    return np.array_equal(a, b)


@pytest.fixture(autouse=True)
def many_slices(monkeypatch):
    """Three threads and one item per slice, so that small inputs exercise the slicing of the
    Numba kernels' parallel loops."""
    monkeypatch.setattr(threads, "threads", lambda: 3)
    for module in (bag, backward, formatting, lookup, optim, topk):
        monkeypatch.setattr(module, "GRAIN", 1)


def floats32(shape, nasty: float = 0.3):
    """float32 arrays of ``shape``: normal values with ``NASTY`` ones mixed in."""
    return hs.builds(_mixed, hs.integers(0, 2**32 - 1), hs.just(shape), hs.just(nasty))


def _mixed(seed, shape, nasty):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)).astype(f32)
    pick = rng.random(shape) < nasty
    a[pick] = rng.choice(NASTY, int(pick.sum()))
    return a


# -- the registry and the backend rule ----------------------------------------------------------

@pytest.mark.parametrize("name", kernels.KERNELS)
def test_both_backends_have_every_kernel_with_the_same_arguments(name):
    def params(f):
        return list(inspect.signature(getattr(f, "py_func", f)).parameters)

    assert params(getattr(npk, name)) == params(getattr(nb, name))


def test_choose(monkeypatch):
    assert kernels.choose(10) is npk
    assert kernels.choose(kernels.NUMBA_MIN_WORK) is nb
    assert kernels.choose() is nb
    monkeypatch.setenv("EMBTOOL_BACKEND", "numba")
    assert kernels.choose(10) is nb
    monkeypatch.setenv("EMBTOOL_BACKEND", "numpy")
    assert kernels.choose(10**12) is npk
    monkeypatch.setenv("EMBTOOL_BACKEND", "fast")
    with pytest.raises(ConfigError, match="EMBTOOL_BACKEND must be numpy, numba or auto"):
        kernels.choose(10)


def test_prepare_loads_numba_in_the_background_only_for_jobs_that_use_it():
    """``prepare`` starts Numba (and its warm-up calls) on a thread for a large job only: small
    jobs and a numpy backend never import it; a warm-up that fails is the job's to report."""
    import subprocess
    import sys

    code = ("import os, sys, threading; from embtool import kernels; from embtool.formats import text\n"
            "kernels.prepare(10, lambda K: text.warm_up(K, 'float32'))\n"
            "os.environ['EMBTOOL_BACKEND'] = 'numpy'; kernels.prepare(10**9, None)\n"
            "print('numba' in sys.modules, threading.active_count())\n"
            "os.environ['EMBTOOL_BACKEND'] = 'auto'\n"
            "def warm(K): text.warm_up(K, 'float32'); raise RuntimeError('reported by the job')\n"
            "kernels.prepare(10**9, warm)\n"
            "[t.join() for t in threading.enumerate() if t.name == 'embtool-numba-start']\n"
            "print('embtool.kernels.numba_kernels' in sys.modules, threading.active_count())\n")
    env = {k: v for k, v in os.environ.items() if k != "EMBTOOL_BACKEND"}
    # Uncompiled (NUMBA_DISABLE_JIT, the CI's second run) the parser's uint64 arithmetic wraps
    # around as numpy scalars, which warn: the child ignores them as that run's pytest does.
    quiet = ["-W", "ignore::RuntimeWarning"] if os.environ.get("NUMBA_DISABLE_JIT") == "1" else []
    out = subprocess.run([sys.executable, *quiet, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.split() == ["False", "1", "True", "1"]
    assert out.stderr == ""


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_warm_up_runs_the_text_kernels_of_both_backends(dtype):
    from embtool.formats import text

    for K in (npk, nb):
        text.warm_up(K, dtype)


def test_a_forked_child_runs_the_threaded_kernels():
    """The thread pool does not survive fork(): the child must make its own, not wait forever."""
    weight = _mixed(1, (300, 5), 0.0)
    ids = np.arange(300)[::-1].copy()
    nb.gather(weight, ids, np.empty((300, 5), f32))  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            signal.alarm(60)
            code = 0 if same(nb.gather(weight, ids, np.empty((300, 5), f32)), weight[ids]) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- fma32 --------------------------------------------------------------------------------------

@EXAMPLES
@given(hs.integers(0, 2**32 - 1), hs.integers(1, 50))
def test_fma32(seed, n):
    a, b, c = (_mixed(seed + i, (n,), 0.3) for i in range(3))
    assert same(npk.fma32(a, b, c), nb.fma32(a, b, c))


@examples(200)
@given(hs.lists(hs.tuples(*[hs.floats(width=32)] * 3), min_size=1, max_size=20))
def test_fma32_any_floats(triples):
    a, b, c = (np.array(x, f32) for x in zip(*triples))
    assert same(npk.fma32(a, b, c), nb.fma32(a, b, c))


def test_fma32_near_float32_midpoints():
    """a*b lands exactly on a float32 midpoint and c nudges it by far less than a float64 ulp of
    the sum: plain float64 evaluation double-rounds here, neither twin may."""
    from fractions import Fraction

    a = b = np.array([1 + 2**-12] * 4, f32)  # a*b = 1 + 2**-11 + 2**-24, a float32 midpoint
    c = np.array([2.0**-80, -(2.0**-80), 0.0, 2.0**-60], f32)

    def round_f32(x: Fraction) -> np.float32:
        lo = f32(float(x))
        cands = [lo, np.nextafter(lo, f32(np.inf)), np.nextafter(lo, f32(-np.inf))]
        return min(cands, key=lambda v: (abs(Fraction(float(v)) - x),
                                         int(np.array(v).view(np.uint32)) & 1))

    want = np.array([round_f32(Fraction(1 + 2**-12) ** 2 + Fraction(float(x))) for x in c], f32)
    assert same(npk.fma32(a, b, c), want)
    assert same(nb.fma32(a, b, c), want)


# -- norms, renorm, gather ----------------------------------------------------------------------

NORM_TYPES = [2.0, 1.0, 3.0, 0.5, np.inf, -np.inf, 0.0, 2.5, -1.0]


@EXAMPLES
@given(hs.integers(0, 2**32 - 1), hs.integers(0, 12), hs.integers(0, 40), hs.sampled_from(NORM_TYPES))
def test_row_norms(seed, k, d, p):
    rows = _mixed(seed, (k, d), 0.1)
    assert same(npk.row_norms(rows, p), nb.row_norms(rows, p))


@EXAMPLES
@given(hs.integers(0, 2**32 - 1), hs.integers(0, 12), hs.integers(1, 40), hs.sampled_from(NORM_TYPES),
       hs.sampled_from([0.0, 1.0, 1e-3, 7.5]))
def test_renorm_rows(seed, k, d, p, max_norm):
    rows = _mixed(seed, (k, d), 0.1)
    a, b = rows.copy(), rows.copy()
    assert same(npk.renorm_rows(a, max_norm, p), nb.renorm_rows(b, max_norm, p))
    assert same(a, b)


@EXAMPLES
@given(hs.integers(0, 2**32 - 1), hs.integers(1, 30), hs.integers(1, 20), hs.integers(0, 60),
       hs.sampled_from(NORM_TYPES))
def test_renorm_ids(seed, v, d, n, p):
    weight = _mixed(seed, (v, d), 0.1)
    ids = np.random.default_rng(seed).integers(0, v, n)  # with duplicates
    a, b = weight.copy(), weight.copy()
    assert npk.renorm_ids(a, ids, 1.0, p) == nb.renorm_ids(b, ids, 1.0, p)
    assert same(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.uint16])
@pytest.mark.parametrize("n, d", [(0, 3), (1, 1), (50, 17), (300, 64)])
def test_gather(dtype, n, d):
    rng = np.random.default_rng(n + d)
    weight = rng.integers(0, 2**16, (40, d)).astype(np.uint16)  # bfloat16 tables are uint16
    if dtype != np.uint16:
        weight = _mixed(n + d, (40, d), 0.2).astype(dtype)
    ids = rng.integers(0, 40, n)
    outs = [K.gather(weight, ids, np.empty((n, d), dtype)) for K in (npk, nb)]
    assert same(*outs)
    assert same(outs[0], weight[ids])


# -- EmbeddingBag ---------------------------------------------------------------------------------

def bags(seed, n_bags, dim, dtype=np.float32, padding=True):
    """Weight, indices, starts, ends (empty bags included), a padding_idx (or -1) and weights."""
    rng = np.random.default_rng(seed)
    v = int(rng.integers(1, 30))
    weight = _mixed(seed, (v, dim), 0.2).astype(dtype)
    lengths = rng.choice([0, 1, 2, 3, 4, 5, 8, 9, 17], n_bags)  # groups of 8 rows, and the rest
    ends = np.cumsum(lengths).astype(np.int64)
    starts = ends - lengths
    indices = rng.integers(0, v, int(lengths.sum())).astype(np.int64)
    pad = int(rng.integers(0, v)) if padding and rng.random() < 0.7 else -1
    if pad >= 0:
        indices[rng.random(indices.size) < 0.3] = pad
    psw = _mixed(seed + 1, (indices.size,), 0.2).astype(dtype)
    return weight, indices, starts, ends, pad, psw


BAG_ARGS = [hs.integers(0, 2**32 - 1), hs.integers(0, 12), hs.integers(1, 21),
            hs.sampled_from([np.float32, np.float64])]


@EXAMPLES
@given(*BAG_ARGS, hs.booleans())
def test_bag_sum(seed, n_bags, dim, dtype, mean):
    weight, indices, starts, ends, pad, _ = bags(seed, n_bags, dim, dtype)
    divisor = np.maximum(ends - starts, 1).astype(dtype) if mean else np.empty(0, dtype)
    outs = [np.full((n_bags, dim), np.nan, dtype) for _ in range(2)]
    for K, out in zip((npk, nb), outs):
        K.bag_sum(weight, indices, starts, ends, pad, divisor, out)
    assert same(*outs)


@EXAMPLES
@given(*BAG_ARGS, hs.booleans())
def test_bag_weighted_sum(seed, n_bags, dim, dtype, fused):
    weight, indices, starts, ends, pad, psw = bags(seed, n_bags, dim, dtype)
    fused = fused and dtype == np.float32 and pad < 0  # as bag.py calls it
    outs = [np.full((n_bags, dim), np.nan, dtype) for _ in range(2)]
    for K, out in zip((npk, nb), outs):
        K.bag_weighted_sum(weight, indices, starts, ends, psw, pad, fused, out)
    assert same(*outs)


@EXAMPLES
@given(*BAG_ARGS)
def test_bag_max(seed, n_bags, dim, dtype):
    weight, indices, starts, ends, pad, _ = bags(seed, n_bags, dim, dtype)
    outs = [np.full((n_bags, dim), np.nan, dtype) for _ in range(2)]
    for K, out in zip((npk, nb), outs):
        K.bag_max(weight, indices, starts, ends, pad, out)
    assert same(*outs)


# -- backward -------------------------------------------------------------------------------------

@EXAMPLES
@given(hs.integers(0, 2**32 - 1), hs.integers(0, 200), hs.sampled_from([5, 40, 100_000]),
       hs.sampled_from([-1, 3]))
def test_group_rows(seed, n, num_embeddings, padding_idx):
    """Dense indices take the Numba twin's counting sort, sparse ones numpy's stable sort."""
    flat = np.random.default_rng(seed).integers(0, min(num_embeddings, 40), n).astype(np.int64)
    got = [K.group_rows(flat, np.int64(padding_idx), np.int64(num_embeddings)) for K in (npk, nb)]
    for a, b in zip(*got):
        assert same(a, b)
    order, rows, starts = got[0]
    assert padding_idx not in rows.tolist() and order.size == np.count_nonzero(flat != padding_idx)
    for s, r in enumerate(rows):
        seg = order[starts[s]:starts[s + 1]]
        assert (flat[seg] == r).all() and (np.diff(seg) > 0).all()


def segments(seed, n_rows, dim, entries=60):
    """Values and the (order, begin, end) of rows accumulating them, plus per-row scales."""
    rng = np.random.default_rng(seed)
    values = _mixed(seed, (entries, dim), 0.2)
    flat = rng.integers(0, max(n_rows, 1), entries) if n_rows else np.zeros(0, np.int64)
    order, rows, starts = npk.group_rows(flat.astype(np.int64), np.int64(-1), np.int64(n_rows))
    scale = rng.choice(np.float32([1.0, 0.5, 1 / 3, -2.0, 0.0]), rows.size)
    return values, order, starts, scale, rows


@EXAMPLES
@given(hs.integers(0, 2**32 - 1), hs.integers(0, 20), hs.integers(1, 13), hs.booleans())
def test_scatter_rows(seed, n_rows, dim, zero_init):
    values, order, starts, scale, rows = segments(seed, n_rows, dim)
    init = _mixed(seed + 2, (rows.size, dim), 0.2)
    outs = [init.copy() for _ in range(2)]
    for K, out in zip((npk, nb), outs):
        K.scatter_rows(values, order, starts[:-1], starts[1:], scale, zero_init, out)
    assert same(*outs)


# -- optimizers -----------------------------------------------------------------------------------

def optim_case(seed, v, dim, k):
    """A table, a state tensor of positive values, touched rows and gradients (some rows with a
    zero gradient: ``gidx`` -1)."""
    rng = np.random.default_rng(seed)
    weight = _mixed(seed, (v, dim), 0.1)
    state = [np.abs(_mixed(seed + i, (v, dim), 0.05)) for i in (1, 2, 3)]
    rows = rng.choice(v, min(k, v), replace=False).astype(np.int64)
    gvals = _mixed(seed + 4, (rows.size, dim), 0.1)
    gidx = np.where(rng.random(rows.size) < 0.2, -1, np.arange(rows.size)).astype(np.int64)
    return weight, state, rows, gvals, gidx


def run_both(name, *args, rows, n_out, unused=0):
    """Call kernel ``name`` of both backends with ``args``, ``n_out`` fresh outputs of ``rows``
    rows and ``unused`` empty ones (an optimizer's unused state); compare the outputs."""
    dim = args[0].shape[1]
    results = []
    for K in (npk, nb):
        outs = [np.full((rows, dim), np.nan, f32) for _ in range(n_out)]
        outs += [np.empty((0, dim), f32) for _ in range(int(unused))]
        getattr(K, name)(*args, *outs)
        results.append(outs)
    for a, b in zip(*results):
        assert same(a, b), name


HP = hs.sampled_from([f32(0.0), f32(0.1), f32(-1.5), f32(1e-8), f32(np.inf)])
OPTIM_ARGS = [hs.integers(0, 2**32 - 1), hs.integers(1, 30), hs.integers(1, 9), hs.integers(0, 30)]


@EXAMPLES
@given(*OPTIM_ARGS, HP, HP, HP, hs.booleans(), hs.booleans(), hs.booleans())
def test_sgd_rows(seed, v, dim, k, lr, momentum, wd, nesterov, maximize, first):
    weight, (buf, _, _), rows, gvals, gidx = optim_case(seed, v, dim, k)
    if momentum == 0:
        buf = np.empty((0, dim), f32)
    run_both("sgd_rows", weight, buf, rows, gvals, gidx, -lr, momentum, f32(0.9), wd, nesterov,
             maximize, first, rows=rows.size, n_out=2 if momentum != 0 else 1, unused=momentum == 0)


@EXAMPLES
@given(*OPTIM_ARGS, HP, HP, hs.sampled_from([f32(1e-10), f32(0.0)]), hs.booleans(), hs.booleans())
def test_adagrad_rows(seed, v, dim, k, clr, wd, eps, maximize, sparse):
    weight, (acc, _, _), rows, gvals, gidx = optim_case(seed, v, dim, k)
    run_both("adagrad_rows", weight, acc, rows, gvals, gidx, -clr, wd, eps, maximize, sparse,
             rows=rows.size, n_out=2)


@EXAMPLES
@given(*OPTIM_ARGS, hs.booleans())
def test_sparse_adam_rows(seed, v, dim, k, maximize):
    weight, (m, s, _), rows, gvals, gidx = optim_case(seed, v, dim, k)
    run_both("sparse_adam_rows", weight, m, s, rows, gvals, gidx, f32(0.1), f32(0.001), f32(1e-8),
             f32(-0.01), maximize, rows=rows.size, n_out=3)


@EXAMPLES
@given(*OPTIM_ARGS, HP, hs.sampled_from([f32(1.0), f32(0.99)]), hs.sampled_from([f32(0.1), f32(0.7)]),
       hs.booleans(), hs.booleans())
def test_adam_rows(seed, v, dim, k, wd, decay, one_minus_b1, amsgrad, maximize):
    weight, (m, s, vmax), rows, gvals, gidx = optim_case(seed, v, dim, k)
    if not amsgrad:
        vmax = np.empty((0, dim), f32)
    run_both("adam_rows", weight, m, s, vmax, rows, gvals, gidx, one_minus_b1, f32(0.999),
             f32(0.001), f32(1e-8), wd, decay, amsgrad, maximize, f32(-0.01), f32(1.3),
             rows=rows.size, n_out=4 if amsgrad else 3, unused=not amsgrad)


@EXAMPLES
@given(hs.integers(0, 2**32 - 1), hs.integers(1, 20), hs.integers(1, 13), HP)
def test_sgd_segment_rows(seed, n_rows, dim, lr):
    values, order, starts, scale, rows = segments(seed, n_rows, dim)
    weight = _mixed(seed + 3, (n_rows, dim), 0.2)
    run_both("sgd_segment_rows", weight, values, order, starts[:-1], starts[1:], scale, rows, -lr,
             rows=rows.size, n_out=1)


# -- top-k ------------------------------------------------------------------------------------------

SCORE_POOL = np.float32([0.5, -0.0, 0.0, np.nan, -np.nan, -np.inf, np.inf, 0.25, -1, 1e-30, -1e-45])


@EXAMPLES
@given(hs.integers(0, 2**32 - 1), hs.integers(1, 4), hs.integers(0, 12), hs.integers(0, 4),
       hs.booleans())
def test_select(seed, q, k, n_exclude, tricky):
    """Chunk after chunk into the same running top-k, with ties, NaN, -0.0 and exclusions: the
    twins agree, and equal a full sort of all the scores."""
    rng = np.random.default_rng(seed)
    exclude = rng.integers(-1, 50, (q, n_exclude))
    best = [np.full((q, k), common.EMPTY, np.int64) for _ in range(2)]
    chunks = []
    for _ in range(int(rng.integers(1, 5))):
        n = int(rng.integers(0, 20))
        scores = rng.choice(SCORE_POOL, (q, n)) if tricky else rng.standard_normal((q, n)).astype(f32)
        for K, b in zip((npk, nb), best):
            K.select(np.ascontiguousarray(scores), sum(c.shape[1] for c in chunks), exclude, b)
        chunks.append(scores)
    assert same(*best)
    allscores = np.concatenate(chunks, axis=1)
    for i in range(q):
        want = naive_query.top_rows(allscores[i], k, exclude[i])
        got = decode(best[0][i])
        assert [r for r, _ in got] == [r for r, _ in want]
        assert np.array_equal([s for _, s in got], [s for _, s in want], equal_nan=True)


def test_select_many_ties():
    rng = np.random.default_rng(27)
    scores = np.round(rng.standard_normal((7, 5000)), 1).astype(f32)
    exclude = rng.integers(0, 5000, (7, 3))
    best = [np.full((7, 25), common.EMPTY, np.int64) for _ in range(2)]
    for K, b in zip((npk, nb), best):
        K.select(scores, 100, exclude, b)
    assert same(*best)
