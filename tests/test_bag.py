"""EmbeddingBag: committed PyTorch 2.13 results, the naive reference, live PyTorch,
and every validation error of docs/semantics.md §4.1."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embtool import kernels
from embtool.bag import embedding_bag
from embtool.errors import ConfigError, EmbtoolError, IndexRangeError, ShapeError

import naive_query as naive

GOLDEN = np.load(Path(__file__).parent / "golden" / "query.npz")
BAG_CASES = sorted({int(k[3:].split("_")[0]) for k in GOLDEN.files if k.startswith("bag")})


def golden_case(i):
    g = {k.split("_", 1)[1]: GOLDEN[k] for k in GOLDEN.files if k.startswith(f"bag{i}_")}
    return (g["weight"], g["indices"], g.get("offsets"), json.loads(str(g["args"])),
            g.get("psw"), g["out"])


def ulps(a, b):
    """Distance in units in the last place, elementwise (NaN == NaN, -0.0 == 0.0)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    itype = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]

    def ordered(x):
        i = (x + x.dtype.type(0)).view(itype).astype(np.int64)
        return np.where(i < 0, np.iinfo(itype).min - i, i)

    d = np.abs(ordered(a) - ordered(b))
    both_nan = np.isnan(a) & np.isnan(b)
    return np.where(both_nan, 0, np.where(np.isnan(a) | np.isnan(b), np.iinfo(np.int64).max, d))


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("case", BAG_CASES)
def test_matches_torch_golden_bit_for_bit(case):
    w, idx, off, kw, psw, want = golden_case(case)
    got = embedding_bag(w, idx, off, per_sample_weights=psw, **kw)
    assert same(got, want), (kw, w.dtype, np.max(ulps(got, want)))


@pytest.mark.parametrize("case", BAG_CASES)
def test_matches_naive_reference(case):
    w, idx, off, kw, psw, _ = golden_case(case)
    if off is None:  # 2-D input: bags of fixed length
        off = np.arange(0, idx.size, idx.shape[1])
        idx = idx.reshape(-1)
        kw = dict(kw, include_last_offset=False)
        psw = None if psw is None else psw.reshape(-1)
    want = naive.bag(w, idx, off, kw["mode"], psw, kw["include_last_offset"], kw["padding_idx"])
    assert same(embedding_bag(w, idx, off, per_sample_weights=psw, **kw), want)


def random_case(rng, dtype=np.float32):
    v, d, n = int(rng.integers(1, 40)), int(rng.integers(1, 24)), int(rng.integers(0, 80))
    w = rng.standard_normal((v, d)).astype(dtype)
    if rng.random() < 0.3:
        w[rng.integers(0, v), rng.integers(0, d)] = np.nan
    idx = rng.integers(0, v, n)
    off = np.sort(rng.integers(0, n + 1, int(rng.integers(1, 9))))
    off[0] = 0
    ilo = bool(rng.integers(0, 2))
    if ilo:
        off = np.append(off, n)
    mode = ("sum", "mean", "max")[int(rng.integers(0, 3))]
    pad = None if rng.random() < 0.5 else int(rng.integers(-v, v))
    psw = rng.standard_normal(n).astype(dtype) if mode == "sum" and rng.random() < 0.5 else None
    return w, idx, off, dict(mode=mode, padding_idx=pad, include_last_offset=ilo), psw


def test_matches_live_torch_within_2_ulp(torch):
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    for trial in range(300):
        w, idx, off, kw, psw = random_case(rng, (np.float32, np.float64, np.float16)[trial % 3])
        want = F.embedding_bag(torch.from_numpy(idx), torch.from_numpy(w), torch.from_numpy(off),
                               per_sample_weights=None if psw is None else torch.from_numpy(psw),
                               **kw).numpy()
        got = embedding_bag(w, idx, off, per_sample_weights=psw, **kw)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert ulps(got, want).max(initial=0) <= 2, (trial, kw, w.dtype)


def test_two_dimensional_input_matches_live_torch(torch):
    F = torch.nn.functional
    rng = np.random.default_rng(12)
    w = rng.standard_normal((30, 7)).astype(np.float32)
    idx = rng.integers(0, 30, (6, 5))
    psw = rng.standard_normal((6, 5)).astype(np.float32)
    for mode in ("sum", "mean", "max"):
        for pad in (None, 3):
            p = psw if mode == "sum" else None
            want = F.embedding_bag(torch.from_numpy(idx), torch.from_numpy(w), mode=mode, padding_idx=pad,
                                   per_sample_weights=None if p is None else torch.from_numpy(p)).numpy()
            assert same(embedding_bag(w, idx, mode=mode, padding_idx=pad, per_sample_weights=p), want)


def test_documented_semantics_by_hand():
    w = np.array([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]], np.float32)
    # torch's known example (test/nn/test_embedding.py): input [3,1,1,1,4,0], offsets [0,0,3,3,6]
    idx, off = np.array([3, 1, 1, 1, 4, 0]), np.array([0, 0, 3, 3, 6])
    assert embedding_bag(w, idx, off, mode="sum").tolist() == [[0, 0], [13, 16], [0, 0], [13, 16], [0, 0]]
    assert embedding_bag(w, idx, off[:3], mode="max").tolist() == [[0, 0], [7, 8], [9, 10]]
    # padding is skipped and left out of the mean's count; a bag of padding only is zero
    got = embedding_bag(w, np.array([0, 2, 2, 2]), np.array([0, 2, 3]), mode="mean", padding_idx=2)
    assert got.tolist() == [[1, 2], [0, 0], [0, 0]]
    # max: ties keep the first; NaN is ignored unless first
    wn = np.array([[np.nan, 1], [2, 1], [1, 5]], np.float32)
    got = embedding_bag(wn, np.array([1, 0, 2, 0, 1]), np.array([0, 3]), mode="max")
    assert got[0].tolist() == [2, 5]
    assert np.isnan(got[1, 0]) and got[1, 1] == 1


def test_include_last_offset_short_of_the_input_is_csr():
    """PyTorch is path-dependent here (docs/semantics.md §4.2); embtool always ends bag b at offsets[b+1]."""
    w = np.arange(12, dtype=np.float32).reshape(6, 2)
    idx, off = np.array([0, 1, 2, 3]), np.array([0, 2, 3])
    for mode in ("sum", "mean", "max"):
        for pad in (None, 5):
            got = embedding_bag(w, idx, off, mode=mode, include_last_offset=True, padding_idx=pad)
            assert same(got, naive.bag(w, idx, off, mode, None, True, pad))
    assert embedding_bag(w, idx, off, mode="sum", include_last_offset=True).tolist() == [[2, 4], [4, 5]]


def test_csr_answer_is_torchs_float32_sum_fast_path(torch):
    w = np.random.default_rng(2).standard_normal((6, 5)).astype(np.float32)
    idx, off = np.array([0, 1, 2, 3, 4]), np.array([0, 2, 3, 3])
    want = torch.nn.functional.embedding_bag(torch.from_numpy(idx), torch.from_numpy(w), torch.from_numpy(off),
                                             mode="sum", include_last_offset=True).numpy()
    assert same(embedding_bag(w, idx, off, mode="sum", include_last_offset=True), want)


def test_empty_inputs():
    w = np.ones((4, 3), np.float32)
    assert embedding_bag(w, [], [0], mode="max").tolist() == [[0, 0, 0]]
    assert embedding_bag(w, [], [0, 0], include_last_offset=True).tolist() == [[0, 0, 0]]
    assert embedding_bag(w, [], [0], include_last_offset=True).shape == (0, 3)
    assert embedding_bag(w, np.zeros((0, 2), np.int64)).shape == (0, 3)
    assert embedding_bag(w, [1, 2], np.zeros(0, np.int64)).shape == (0, 3)


def test_read_only_memory_mapped_weight(tmp_path):
    w = np.random.default_rng(4).standard_normal((50, 8)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    mm = np.load(tmp_path / "w.npy", mmap_mode="r")
    idx, off = np.array([1, 2, 3, 49, 0]), np.array([0, 2])
    for mode in ("sum", "mean", "max"):
        assert same(embedding_bag(mm, idx, off, mode=mode), embedding_bag(w, idx, off, mode=mode))


def test_per_sample_weights_of_another_dtype_are_rounded_to_the_table():
    w = np.random.default_rng(5).standard_normal((5, 4)).astype(np.float32)
    psw = np.array([0.1, 0.7, 1.3])
    got = embedding_bag(w, [0, 1, 2], [0], mode="sum", per_sample_weights=psw)
    assert same(got, embedding_bag(w, [0, 1, 2], [0], mode="sum", per_sample_weights=psw.astype(np.float32)))


W = np.zeros((5, 3), np.float32)
ERRORS = [
    (dict(indices=[1, 2], offsets=[0], per_sample_weights=[1.0]), ShapeError, "same shape as the input"),
    (dict(weight=np.zeros(5, np.float32), indices=[1], offsets=[0]), ShapeError, "weight has to be a 2D Tensor"),
    (dict(indices=[[1, 2]], offsets=[0]), ShapeError, "offsets has to be None"),
    (dict(indices=np.zeros((2, 0), np.int64)), ShapeError, "step must be nonzero"),
    (dict(indices=[1, 2]), ShapeError, "offsets has to be a 1D Tensor but got None"),
    (dict(indices=[1, 2], offsets=[[0]]), ShapeError, "offsets has to be a 1D Tensor"),
    (dict(indices=[[[1]]], offsets=None), ShapeError, "input has to be 1D or 2D Tensor"),
    (dict(indices=np.int64(1), offsets=[0]), ShapeError, "input has to be 1D or 2D Tensor"),
    (dict(indices=[1], offsets=[0], mode="median"), ConfigError, "mode has to be one of sum, mean or max"),
    (dict(indices=[1], offsets=[0], mode="mean", per_sample_weights=[1.0]), ConfigError, "only supported for mode='sum'"),
    (dict(indices=[1], offsets=[0], mode="max", per_sample_weights=[1.0]), ConfigError, "only supported for mode='sum'"),
    (dict(indices=[1], offsets=[0], padding_idx=5), ConfigError, "padding_idx must be within the number of embeddings"),
    (dict(indices=[1], offsets=[0], padding_idx=-6), ConfigError, "-5 through 4"),
    (dict(indices=[1.0], offsets=[0]), ConfigError, "indices must be integers"),
    (dict(indices=[1], offsets=[0.0]), ConfigError, "offsets must be integers"),
    (dict(weight=np.zeros((5, 3), np.int32), indices=[1], offsets=[0]), ConfigError, "weight must be float"),
    (dict(indices=[1, 2], offsets=[1]), IndexRangeError, "offsets[0] has to be 0"),
    (dict(indices=[1, 2], offsets=[0, 3]), IndexRangeError, "offsets[-1] can not be greater than input's length (2)"),
    (dict(indices=[1, 2], offsets=[], include_last_offset=True), ShapeError, "number of offset should be at least 1"),
    (dict(indices=[1, 2, 3], offsets=[0, 2, 1]), IndexRangeError, "offsets[2] = 1 is below offsets[1] = 2"),
    (dict(indices=[1, 5], offsets=[0]), IndexRangeError, "Index 1 of input takes value 5 which is not in the valid range [0, 5)"),
    (dict(indices=[-1, 2], offsets=[0]), IndexRangeError, "Index 0 of input takes value -1"),
    (dict(indices=[[0, 2], [7, 1]]), IndexRangeError, "Index 2 of input takes value 7"),
]


def call(case):
    kw = dict(case)
    weight = kw.pop("weight", W)
    indices = np.asarray(kw.pop("indices"))
    offsets = kw.pop("offsets", None)
    return embedding_bag(weight, indices, None if offsets is None else np.asarray(offsets), **kw)


@pytest.mark.parametrize("case,error,message", ERRORS)
def test_errors(case, error, message):
    with pytest.raises(error) as info:
        call(case)
    assert isinstance(info.value, EmbtoolError)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("case,error,message", [e for e in ERRORS if "is below offsets" not in e[2]])
def test_torch_also_refuses(torch, case, error, message):
    """Every refused input is refused by PyTorch too.  (Decreasing offsets are left out: PyTorch
    refuses them on its fast path only and gives path-dependent bags elsewhere; embtool refuses
    them always.)"""
    kw = dict(case)
    weight = torch.from_numpy(np.asarray(kw.pop("weight", W)))
    indices = np.asarray(kw.pop("indices"))
    if indices.dtype.kind == "f" and indices.size:
        indices = torch.from_numpy(indices.astype(np.float32))
    else:
        indices = torch.from_numpy(indices.astype(np.int64))
    offsets = kw.pop("offsets", None)
    if offsets is not None:
        offsets = np.asarray(offsets)
        offsets = torch.from_numpy(offsets.astype(np.float32 if offsets.dtype.kind == "f" else np.int64))
    if "per_sample_weights" in kw:
        kw["per_sample_weights"] = torch.tensor(kw["per_sample_weights"], dtype=weight.dtype)
    with pytest.raises(Exception):
        torch.nn.functional.embedding_bag(indices, weight, offsets, **kw)
