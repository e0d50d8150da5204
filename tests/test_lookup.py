"""F.embedding and embedding_renorm_ exactness: committed golden fixtures from PyTorch 2.13, live
comparisons when torch is importable."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embtool import ops
from embtool.errors import IndexRangeError

GOLDEN = np.load(Path(__file__).parent / "golden" / "lookup.npz")
DIMS = sorted({int(k.split("_")[1]) for k in GOLDEN.files if k.startswith("w_")})
NORM_TYPES = [2.0, 1.0, 3.0, 0.5, float("inf"), float("-inf"), 0.0, 2.5, -1.0]


def same_bits(a, b):
    return np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("p", NORM_TYPES)
def test_row_norms_match_torch_golden(d, p):
    w = GOLDEN[f"w_{d}"]
    got = ops.row_norms(w, p)
    assert np.array_equal(got, GOLDEN[f"norm_{d}_{p}"], equal_nan=True)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("p", NORM_TYPES)
@pytest.mark.parametrize("max_norm", [1.0, 3.0])
def test_embedding_max_norm_matches_torch_golden(d, p, max_norm):
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
def test_plain_lookup_is_bit_identical(d):
    w = GOLDEN[f"w_{d}"]
    out = ops.embedding(w, GOLDEN[f"ids_{d}"])
    assert same_bits(out, GOLDEN[f"plain_{d}"])


def test_live_torch_random_tables(torch):
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


def test_renorm_formula_details():
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


def test_empty_and_scalar_index_shapes():
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert ops.embedding(w, np.zeros((0,), np.int64)).shape == (0, 3)
    assert ops.embedding(w, np.zeros((2, 0), np.int64)).shape == (2, 0, 3)
    assert ops.embedding(w, np.int64(2)).tolist() == [6.0, 7.0, 8.0]
