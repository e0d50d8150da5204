"""embtool.backward: nn.Embedding's weight gradient, dense and sparse.

Checked three ways: against the naive loops of tests/naive_train.py, against the committed
golden fixture made by tests/golden/make_train.py, and live against torch when it imports.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import naive_train as naive
from embtool.backward import SPARSE_SCALE_MESSAGE, RowGrad, embedding_backward
from embtool.errors import ConfigError, FormatError, IndexRangeError, ShapeError

GOLDEN = Path(__file__).parent / "golden" / "train_cases.npz"
V, D = 23, 5


def bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.int32)


def batch(seed, shape, num_embeddings=V, dim=D, hot=None, pad=None, pad_rate=0.3):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, hot or num_embeddings, size=shape)
    if pad is not None:
        idx = np.where(rng.random(shape) < pad_rate, pad % num_embeddings, idx)
    return idx.astype(np.int64), rng.standard_normal(shape + (dim,)).astype(np.float32)


SHAPES = [(40,), (6, 7), (2, 3, 4), (), (0,), (3, 0)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("padding_idx", [None, 4, -1])
@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
def test_dense_matches_naive(shape, padding_idx, scale_grad_by_freq):
    idx, grad = batch(1, shape, hot=7, pad=padding_idx)
    rg = embedding_backward(idx, grad, num_embeddings=V, padding_idx=padding_idx,
                            scale_grad_by_freq=scale_grad_by_freq)
    expected = naive.dense_backward(idx, grad, V, padding_idx, scale_grad_by_freq)
    assert np.array_equal(bits(rg.to_dense()), bits(expected))
    assert not rg.sparse and rg.coalesced
    nonpad = np.unique(idx[idx != (padding_idx % V if padding_idx is not None else -1)])
    assert np.array_equal(rg.rows, nonpad)
    assert rg.values.shape == (nonpad.size, D)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("padding_idx", [None, 0, -3])
def test_sparse_layout_and_coalesce_match_naive(shape, padding_idx):
    idx, grad = batch(2, shape, hot=6, pad=padding_idx)
    rg = embedding_backward(idx, grad, num_embeddings=V, padding_idx=padding_idx, sparse=True)
    rows, values = naive.sparse_backward(idx, grad, padding_idx, V)
    assert rg.sparse and not rg.coalesced
    assert np.array_equal(rg.rows, rows) and np.array_equal(bits(rg.values), bits(values))
    c = rg.coalesce()
    crows, cvalues = naive.coalesce(rows, values)
    assert c.coalesced and np.array_equal(c.rows, crows)
    assert np.array_equal(bits(c.values), bits(cvalues))
    # the dense and sparse gradients are the same sums (input-order adds in both)
    dense = embedding_backward(idx, grad, num_embeddings=V, padding_idx=padding_idx)
    assert np.array_equal(dense.to_dense(), c.to_dense())


def test_coalesce_keeps_a_lone_negative_zero():
    """torch copies a row's first entry and adds the rest, so -0.0 alone stays -0.0."""
    grad = np.array([[-0.0, 1.0], [-0.0, -0.0], [-0.0, 2.0]], np.float32)
    rg = embedding_backward(np.array([3, 5, 3]), grad, num_embeddings=6, sparse=True).coalesce()
    assert rg.rows.tolist() == [3, 5]
    assert np.signbit(rg.values[1]).all()  # single entry, copied
    assert np.signbit(rg.values[0, 0])  # -0 + -0 = -0
    dense = embedding_backward(np.array([5]), grad[1:2], num_embeddings=6)
    assert not np.signbit(dense.values).any()  # dense accumulates from +0: +0 + -0 = +0


def test_all_padding_and_empty():
    idx = np.full((3, 2), 4)
    grad = np.ones((3, 2, D), np.float32)
    for sparse in (False, True):
        rg = embedding_backward(idx, grad, num_embeddings=V, padding_idx=4, sparse=sparse)
        assert rg.rows.shape == (0,) and rg.values.shape == (0, D)
        assert rg.coalesce().values.shape == (0, D)
        assert not rg.to_dense().any()


def test_errors():
    idx, grad = batch(5, (3, 4))
    with pytest.raises(ShapeError, match=r"\(3, 5, 5\).*\(3, 4\)"):
        embedding_backward(idx, np.zeros((3, 5, D), np.float32), num_embeddings=V)
    with pytest.raises(ShapeError):
        embedding_backward(idx, np.zeros((3, 4), np.float32), num_embeddings=V)
    bad = idx.copy()
    bad[1, 2] = V
    with pytest.raises(IndexRangeError, match=rf"index {V} at position \[1, 2\]"):
        embedding_backward(bad, grad, num_embeddings=V)
    bad[1, 2] = -1
    with pytest.raises(IndexRangeError, match=r"index -1 at position \[1, 2\]"):
        embedding_backward(bad, grad, num_embeddings=V)
    with pytest.raises(FormatError, match="not an integer"):
        embedding_backward(idx + 0.5, grad, num_embeddings=V)
    with pytest.raises(ConfigError, match="float32"):
        embedding_backward(idx, grad.astype(np.float64), num_embeddings=V)
    for pad in (V, -V - 1):
        with pytest.raises(ConfigError, match="padding_idx must be within num_embeddings"):
            embedding_backward(idx, grad, num_embeddings=V, padding_idx=pad)
    with pytest.raises(ConfigError, match=f"^{SPARSE_SCALE_MESSAGE}$"):
        embedding_backward(idx, grad, num_embeddings=V, sparse=True, scale_grad_by_freq=True)


def test_golden_fixture():
    data = np.load(GOLDEN)
    idx, grad = data["backward/indices"], data["backward/grad"]
    v = data["backward/dense_sgf0"].shape[0]
    for sgf in (0, 1):
        rg = embedding_backward(idx, grad, num_embeddings=v, padding_idx=5, scale_grad_by_freq=bool(sgf))
        assert np.array_equal(bits(rg.to_dense()), bits(data[f"backward/dense_sgf{sgf}"]))
    rg = embedding_backward(idx, grad, num_embeddings=v, padding_idx=5, sparse=True)
    assert np.array_equal(rg.rows, data["backward/sparse_rows"])
    assert np.array_equal(bits(rg.values), bits(data["backward/sparse_values"]))
    assert json.loads(data["meta"].tobytes())["torch"].startswith("2.13")


# -- live torch -------------------------------------------------------------------------------

def torch_grad(torch, idx, grad, padding_idx=None, scale_grad_by_freq=False, sparse=False, v=V):
    w = torch.zeros(v, grad.shape[-1], requires_grad=True)
    out = torch.nn.functional.embedding(torch.from_numpy(idx), w, padding_idx=padding_idx,
                                        scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)
    out.backward(torch.from_numpy(grad))
    return w.grad


@pytest.mark.torch
@pytest.mark.parametrize("shape", SHAPES + [(1500,)])
@pytest.mark.parametrize("padding_idx", [None, 2, -2])
@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
def test_dense_vs_torch(torch, shape, padding_idx, scale_grad_by_freq):
    idx, grad = batch(6, shape, hot=9, pad=padding_idx)
    expected = torch_grad(torch, idx, grad, padding_idx, scale_grad_by_freq).numpy()
    rg = embedding_backward(idx, grad, num_embeddings=V, padding_idx=padding_idx,
                            scale_grad_by_freq=scale_grad_by_freq)
    assert np.array_equal(bits(rg.to_dense()), bits(expected))


@pytest.mark.torch
@pytest.mark.parametrize("shape", SHAPES + [(16,), (1500,)])
@pytest.mark.parametrize("padding_idx", [None, 2, -2])
def test_sparse_vs_torch(torch, shape, padding_idx):
    idx, grad = batch(7, shape, hot=9, pad=padding_idx)
    if shape == () and padding_idx is not None:
        # torch 2.13 cannot do this one (IndexError in its sparse backward of a 0-d index with
        # padding_idx); embtool gives the answer of the same index as a 1-element batch.
        with pytest.raises(IndexError):
            torch_grad(torch, idx, grad, padding_idx, sparse=True)
        one = embedding_backward(idx.reshape(1), grad.reshape(1, -1), num_embeddings=V,
                                 padding_idx=padding_idx, sparse=True)
        rg = embedding_backward(idx, grad, num_embeddings=V, padding_idx=padding_idx, sparse=True)
        assert np.array_equal(rg.rows, one.rows) and np.array_equal(bits(rg.values), bits(one.values))
        return
    tg = torch_grad(torch, idx, grad, padding_idx, sparse=True)
    rg = embedding_backward(idx, grad, num_embeddings=V, padding_idx=padding_idx, sparse=True)
    assert np.array_equal(rg.rows, tg._indices().numpy()[0])
    assert np.array_equal(bits(rg.values), bits(tg._values().numpy()))
    tc, c = tg.coalesce(), rg.coalesce()
    assert np.array_equal(c.rows, tc._indices().numpy()[0])
    if c.rows.size == 0 or rg.rows.size <= 16:  # torch's unstable sort keeps input order up to 16
        assert np.array_equal(bits(c.values), bits(tc._values().numpy()))
    else:  # beyond, duplicates are summed in another order: within the float32 summation bound
        abs_sum = embedding_backward(idx, np.abs(grad), num_embeddings=V, padding_idx=padding_idx)
        counts = np.bincount(rg.rows, minlength=V)[c.rows, None]
        bound = counts * np.finfo(np.float32).eps * abs_sum.values
        assert (np.abs(c.values.astype(np.float64) - tc._values().numpy()) <= bound).all()


@pytest.mark.torch
def test_sparse_scale_grad_by_freq_refused_like_torch(torch):
    idx, grad = batch(8, (4,))
    with pytest.raises(RuntimeError) as exc:
        torch_grad(torch, idx, grad, scale_grad_by_freq=True, sparse=True)
    assert str(exc.value).startswith(SPARSE_SCALE_MESSAGE)
    with pytest.raises(ConfigError, match=SPARSE_SCALE_MESSAGE):
        embedding_backward(idx, grad, num_embeddings=V, sparse=True, scale_grad_by_freq=True)


def test_rowgrad_repr_and_dim():
    rg = embedding_backward(np.array([1, 1, 2]), np.ones((3, 4), np.float32), num_embeddings=3)
    assert isinstance(rg, RowGrad) and rg.embedding_dim == 4 and "dense" in repr(rg)
    assert rg.values.tolist() == [[2.0] * 4, [1.0] * 4]


@pytest.mark.parametrize("sparse,scale,padding_idx", [(True, False, None), (True, False, 3),
                                                      (False, False, None), (False, True, 3)])
@pytest.mark.parametrize("rows", [6, 100_000])  # mostly repeated rows / mostly rows of one entry
def test_norm_is_the_norm_of_the_coalesced_gradient(sparse, scale, padding_idx, rows):
    rng = np.random.default_rng(rows)
    idx = rng.integers(0, rows, (400, 3))
    grad = rng.standard_normal((400, 3, 8)).astype(np.float32)

    def rowgrad():
        return embedding_backward(idx, grad, num_embeddings=rows, sparse=sparse, scale_grad_by_freq=scale,
                                  padding_idx=padding_idx)

    v = rowgrad().coalesce().values
    assert rowgrad().norm() == pytest.approx(np.sqrt(np.einsum("ij,ij->", v, v, dtype=np.float64)), rel=1e-12)
