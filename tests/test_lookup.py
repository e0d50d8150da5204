"""F.embedding and embedding_renorm_ exactness: committed golden fixtures from PyTorch 2.13, live
comparisons when torch is importable, and both kernel backends."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from embtool import kernels, ops
from embtool.errors import IndexRangeError
from embtool.kernels._numpy.fp import fma32 as np_fma32

GOLDEN = np.load(Path(__file__).parent / "golden" / "lookup.npz")
DIMS = sorted({int(k.split("_")[1]) for k in GOLDEN.files if k.startswith("w_")})
NORM_TYPES = [2.0, 1.0, 3.0, 0.5, float("inf"), float("-inf"), 0.0, 2.5, -1.0]


def same_bits(a, b):
    return np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("p", NORM_TYPES)
def test_row_norms_match_torch_golden(backend, d, p):
    w = GOLDEN[f"w_{d}"]
    got = ops.row_norms(w, p)
    assert np.array_equal(got, GOLDEN[f"norm_{d}_{p}"], equal_nan=True)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("p", NORM_TYPES)
@pytest.mark.parametrize("max_norm", [1.0, 3.0])
def test_embedding_max_norm_matches_torch_golden(backend, d, p, max_norm):
    w = GOLDEN[f"w_{d}"].copy()
    ids = GOLDEN[f"ids_{d}"]
    out = ops.embedding(w, ids, max_norm=max_norm, norm_type=p)
    key = f"{d}_{p}_{max_norm}"
    # weight written in place exactly as torch mutates it (bit for bit, NaN included)
    assert same_bits(w, GOLDEN[f"weight_{key}"])
    if f"out_{key}" in GOLDEN.files:
        assert same_bits(out, GOLDEN[f"out_{key}"])
    assert out.shape == ids.shape + (d,)


@pytest.mark.parametrize("d", DIMS)
def test_plain_lookup_is_bit_identical(backend, d):
    w = GOLDEN[f"w_{d}"]
    out = ops.embedding(w, GOLDEN[f"ids_{d}"])
    assert same_bits(out, GOLDEN[f"plain_{d}"])


def test_backends_agree_on_large_gather_and_renorm():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((5000, 37)) * 3).astype(np.float32)
    ids = rng.integers(0, 5000, 20000)
    results = []
    for b in kernels.BACKENDS:
        ww = w.copy()
        changed = kernels.get("lookup.renorm_ids", backend=b)(ww, ids, 2.0, 2.0)
        g = kernels.get("lookup.gather", backend=b)(ww, ids, np.empty((ids.size, 37), np.float32))
        results.append((changed, ww, g))
    assert results[0][0] == results[1][0] > 0
    assert same_bits(results[0][1], results[1][1])
    assert same_bits(results[0][2], results[1][2])


def test_live_torch_random_tables(backend, torch):
    rng = np.random.default_rng(11)
    for d in (2, 6, 10, 17, 33, 96, 257):
        w = (rng.standard_normal((300, d)) * rng.choice([0.01, 1, 10], (300, 1))).astype(np.float32)
        ids = rng.integers(0, 300, (50, 3))
        for p in (2.0, 1.0, 3.0, float("inf"), 0.7):
            tw = torch.from_numpy(w.copy())
            ref = torch.nn.functional.embedding(torch.from_numpy(ids), tw, max_norm=1.5, norm_type=p)
            ww = w.copy()
            got = ops.embedding(ww, ids, max_norm=1.5, norm_type=p)
            assert same_bits(got, ref.numpy()), (d, p)
            assert same_bits(ww, tw.numpy()), (d, p)


def test_renorm_formula_details(backend):
    # strict '>' keeps a row of norm exactly max_norm; a renormed row lands just below max_norm.
    w = np.array([[3.0, 4.0], [6.0, 8.0], [0.0, 0.0]], np.float32)
    changed = ops.embedding_renorm_(w, [0, 1, 1, 2], 5.0, 2.0)
    assert changed == 1
    assert w[0].tolist() == [3.0, 4.0]
    expected_scale = np.float32(5.0 / (10.0 + 1e-7))
    assert same_bits(w[1], np.array([6.0, 8.0], np.float32) * expected_scale)
    assert w[2].tolist() == [0.0, 0.0]


def test_negative_and_out_of_range_ids_are_errors():
    w = np.zeros((4, 3), np.float32)
    with pytest.raises(IndexRangeError, match="negative"):
        ops.embedding(w, [0, -1])
    with pytest.raises(IndexRangeError, match="index 7 at position \\[1, 0\\]"):
        ops.embedding(w, [[0, 1], [7, 2]])


def test_empty_and_scalar_index_shapes(backend):
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert ops.embedding(w, np.zeros((0,), np.int64)).shape == (0, 3)
    assert ops.embedding(w, np.zeros((2, 0), np.int64)).shape == (2, 0, 3)
    assert ops.embedding(w, np.int64(2)).tolist() == [6.0, 7.0, 8.0]


f32s = hs.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(hs.lists(hs.tuples(f32s, f32s, f32s), min_size=1, max_size=40))
def test_fma_numpy_equals_hardware_fma(triples):
    a, b, c = (np.array(x, np.float32) for x in zip(*triples))
    fma = kernels.get("fp.fma32_array", backend="numba")
    assert same_bits(np_fma32(a, b, c), fma(a, b, c))


def test_fma_near_float32_midpoints():
    # a*b lands exactly on a float32 midpoint and c nudges it by far less than a float64 ulp
    # of the sum: plain float64 evaluation double-rounds here, the emulation must not.
    a = np.array([1 + 2**-12] * 4, np.float32)
    b = np.array([1 + 2**-12] * 4, np.float32)  # a*b = 1 + 2**-11 + 2**-24 (a float32 midpoint)
    c = np.array([2.0**-80, -(2.0**-80), 0.0, 2.0**-60], np.float32)
    exact = [(1 + 2**-12) ** 2 + float(x) for x in c]
    from fractions import Fraction

    def round_f32(x: Fraction) -> np.float32:
        lo = np.float32(float(x))
        cands = [lo, np.nextafter(lo, np.float32(np.inf)), np.nextafter(lo, np.float32(-np.inf))]
        return min(cands, key=lambda v: (abs(Fraction(float(v)) - x),
                                         int(np.array(v).view(np.uint32)) & 1))

    ref = [round_f32(Fraction(1 + 2**-12) ** 2 + Fraction(float(x))) for x in c]
    assert exact  # documents the intent
    assert same_bits(np_fma32(a, b, c), np.array(ref, np.float32))
    fma = kernels.get("fp.fma32_array", backend="numba")
    assert same_bits(fma(a, b, c), np.array(ref, np.float32))
