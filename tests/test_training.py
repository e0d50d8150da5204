"""embtool.training: train-step on table files, in-process (the CLI runs are in test_cli_train.py).

Tolerances against torch (the issue's "done when", as in test_optim.py): after 3 steps within 4 ulp
of the row's largest magnitude; after 100 steps max |ours - torch| / max |torch| <= 1e-5 per
tensor (weight and every state tensor); plain SGD on a sparse table bit for bit.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from embtool import kernels
from embtool import store as st
from embtool.errors import ConfigError, FormatError, IndexRangeError, ShapeError, StateError
from embtool.optim import ADAM_SPARSE, SGD_SPARSE_WD, SPARSE_ADAM_DENSE
from embtool.table import Table
from embtool.training import Batch, read_batches, train_step
from golden.make_train_cli import (CASES, NUM_EMBEDDINGS, SNAPSHOTS, case_batches, case_weight,
                                   torch_trajectory)
from golden.make_train import make_batches
from helpers import make_table
from test_optim import compare

GOLDEN = Path(__file__).parent / "golden" / "train_cli.npz"
CASE_IDS = [c[0] for c in CASES]
D = 8


def case_table(path: Path, i: int) -> Path:
    """Case ``i``'s initial table (padding_idx normalised as nn.Embedding does)."""
    opts = dict(CASES[i][3])
    if opts.get("padding_idx") is not None:
        opts["padding_idx"] %= NUM_EMBEDDINGS
    return make_table(path, case_weight(i), **opts)


def snapshot(path: Path) -> dict:
    """Weight, optimizer state tensors and step counter of a table file (copies)."""
    with Table.open(path) as t:
        snap = {"weight": np.array(t.raw)}
        snap.update({n: np.array(t.store.array(n)) for n in t.optimizer_tensors()})
        snap["step"] = int(t.metadata.get("embtool.optim.step", 0))
    return snap


def golden_snapshots(i: int) -> dict:
    data = np.load(GOLDEN)
    meta = json.loads(data["meta"].tobytes())["cases"][i]
    case = CASES[i][0]
    assert meta["case"] == case
    out = {}
    for s in SNAPSHOTS:
        prefix = f"{case}/{s}/"
        out[s] = {"step": meta["steps"][str(s)],
                  **{k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}}
    return out


def check_against(ours: dict, theirs: dict, case: str) -> None:
    exact = case == "sgd_sparse"
    compare([ours[3]], [theirs[3]], exact=exact, ulps=4)
    compare([ours[100]], [theirs[100]], exact=exact, rel=1e-5)


def batch(ids, grad) -> Batch:
    return Batch(np.asarray(ids), np.asarray(grad, np.float32), "ids", "grad")


def run_case(path: Path, i: int, per_call: int = 1) -> dict:
    """Case ``i``'s 100 steps, ``per_call`` batches per train_step call; snapshots by step."""
    name, hparams, _ = CASES[i][1:]
    batches = [batch(*b) for b in case_batches(i, CASES[i][3])]
    out = {}
    for start in range(0, len(batches), per_call):
        train_step(path, batches[start:start + per_call], optimizer=name, hparams=hparams)
        s = start + per_call
        if s in SNAPSHOTS:
            out[s] = snapshot(path)
    return out


def live_torch():
    """torch when importable (always in CI), else None: the golden fixture still checks."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@pytest.mark.parametrize("i", range(len(CASES)), ids=CASE_IDS)
def test_trajectories(tmp_path, monkeypatch, i):
    """100 steps, one call per step, against the committed torch trajectory and live torch; the
    same 100 steps in one call (one transaction) give the same bits.  The steps of one call
    choose their kernels for the whole call's work: with the Numba threshold between one step's
    work and the call's, the single steps run on numpy and the call on Numba."""
    case, name, hparams, opts = CASES[i]
    used = []
    backend = kernels.backend
    monkeypatch.setattr(kernels, "backend", lambda b: used.append(b) or backend(b))
    ours = run_case(case_table(tmp_path / "a.safetensors", i), i)
    assert set(used) == {"numpy"}
    check_against(ours, golden_snapshots(i), case)
    torch = live_torch()
    if torch is not None:
        check_against(ours, torch_trajectory(torch, name, hparams, case_weight(i), case_batches(i, opts),
                                             **opts), case)
    ids = sum(np.size(b[0]) for b in case_batches(i, opts))
    monkeypatch.setattr(kernels, "NUMBA_MIN_WORK", ids * case_weight(i).shape[1] * kernels.PER_ROW_UPDATE)
    used.clear()
    many = run_case(case_table(tmp_path / "b.safetensors", i), i, per_call=100)
    assert set(used) == {"numba"}
    compare([ours[100]], [many[100]], exact=True)


@pytest.mark.parametrize("name,hparams,opts", [
    ("sgd", dict(lr=0.1), dict(padding_idx=2)),
    ("sgd", dict(lr=0.1), dict(sparse=True, max_norm=1.5)),
    ("adagrad", dict(lr=0.1, initial_accumulator_value=0.3), dict(sparse=True, padding_idx=4)),
    ("adagrad", dict(lr=0.1), dict(scale_grad_by_freq=True, max_norm=1.0)),
    ("sgd", dict(lr=0.05, maximize=True), dict(sparse=True, max_norm=1.2, padding_idx=0)),
])
@pytest.mark.parametrize("pread", [False, True])
def test_compact_rows_equal_whole_table(tmp_path, monkeypatch, name, hparams, opts, pread):
    """A row-sparse step computed on the compact copy of the named rows (and written in place)
    equals the same step computed on the whole table (and rewritten), bit for bit, whether the
    rows were read through the map or with pread.  (SparseAdam has no whole-table formula: torch
    leaves rows without gradient alone.)"""
    import embtool.optim
    import embtool.training

    reads = []
    monkeypatch.setattr(embtool.training, "PREAD_FRACTION", 0 if pread else 10**9)
    monkeypatch.setattr(st.Store, "read_rows", lambda s, *a, _f=st.Store.read_rows: reads.append(a) or _f(s, *a))

    w0 = np.random.default_rng(5).standard_normal((60, D)).astype(np.float32) * 2
    batches = [batch(*b) for b in make_batches(6, 60, D, 4, (5, 3), padding_idx=opts.get("padding_idx"), hot=25)]
    a = make_table(tmp_path / "a.safetensors", w0, **opts)
    b = make_table(tmp_path / "b.safetensors", w0, **opts)
    for k in range(len(batches)):
        assert train_step(a, batches[k:k + 1], optimizer=name, hparams=hparams)["write"] == (
            "rewrite" if k == 0 and name != "sgd" else "in-place")
    assert bool(reads) == pread
    monkeypatch.setattr(embtool.optim.OptimizerSpec, "row_sparse", lambda self, sparse: False)
    for k in range(len(batches)):
        assert train_step(b, batches[k:k + 1], optimizer=name, hparams=hparams)["write"] == "rewrite"
    compare([snapshot(a)], [snapshot(b)], exact=True)


def test_sparse_step_writes_only_the_touched_rows_in_place(tmp_path):
    w0 = np.random.default_rng(1).standard_normal((40, D)).astype(np.float32)
    p = make_table(tmp_path / "t.safetensors", w0, sparse=True, padding_idx=9)
    train_step(p, [batch([1, 2], np.ones((2, D)))], optimizer="sparse-adam")  # adds the state
    before, inode = p.read_bytes(), os.stat(p).st_ino
    ids = np.array([[3, 9, 3], [17, 9, 30]])
    s = train_step(p, [batch(ids, np.full((2, 3, D), 0.5))])
    assert (s["step"], s["rows_touched"], s["rows_written"], s["write"]) == (2, 3, 3, "in-place")
    assert os.stat(p).st_ino == inode  # patched, not replaced
    after = p.read_bytes()
    header = st.read_header(p)
    changed = np.flatnonzero(np.frombuffer(before, np.uint8) != np.frombuffer(after, np.uint8))
    allowed = set(range(header.data_start))  # the metadata (step counter)
    for name in ("weight", "optim.exp_avg", "optim.exp_avg_sq"):
        base = header.data_start + header.tensors[name].begin
        for r in (3, 17, 30):
            allowed.update(range(base + r * D * 4, base + (r + 1) * D * 4))
    assert changed.size and set(changed.tolist()) <= allowed
    snap = snapshot(p)
    assert np.array_equal(snap["weight"][9], w0[9])  # padding row: no gradient


def test_first_stateful_step_adds_state_with_torch_initial_values(tmp_path):
    w0 = np.random.default_rng(2).standard_normal((30, D)).astype(np.float32)
    p = make_table(tmp_path / "t.safetensors", w0, sparse=True)
    s = train_step(p, [batch([4, 4, 8], np.ones((3, D)))], optimizer="adagrad",
                   hparams=dict(lr=0.5, initial_accumulator_value=0.25))
    assert s["write"] == "rewrite" and s["rows_written"] == 2
    snap = snapshot(p)
    acc = snap["optim.sum"]
    untouched = np.setdiff1d(np.arange(30), [4, 8])
    assert (acc[untouched] == np.float32(0.25)).all()
    assert np.array_equal(acc[4], np.full(D, np.float32(0.25) + np.float32(4)))  # (1+1)^2 added
    assert np.array_equal(snap["weight"][untouched], w0[untouched])


def test_optimizer_options_resolution(tmp_path):
    w0 = np.zeros((10, 2), np.float32)
    p = make_table(tmp_path / "t.safetensors", w0)
    one = [batch([1], [[1.0, 2.0]])]
    assert train_step(p, one)["optimizer"] == "sgd"  # nothing stored: sgd with torch's defaults
    assert snapshot(p)["weight"][1].tolist() == [np.float32(-1e-3), np.float32(-2e-3)]
    with pytest.raises(StateError, match=r"lr=0\.1 \(stored 0\.001\)"):
        train_step(p, one, hparams=dict(lr=0.1))
    with pytest.raises(StateError, match="the optimizer state is sgd's .*not adam's"):
        train_step(p, one, optimizer="adam")
    s = train_step(p, one, optimizer="adam", hparams=dict(lr=0.1), reset_optimizer=True)
    assert (s["optimizer"], s["step"], s["hparams"]["lr"]) == ("adam", 1, 0.1)
    s = train_step(p, one)  # stored optimizer and hyper-parameters
    assert (s["optimizer"], s["step"], s["hparams"]["lr"]) == ("adam", 2, 0.1)
    train_step(p, one, hparams=dict(lr=0.1, betas=(0.9, 0.999)))  # the stored values, given again
    with pytest.raises(StateError, match="amsgrad=True"):
        train_step(p, one, hparams=dict(amsgrad=True))
    # reset: options not given take torch's defaults; the state tensors are dropped or replaced
    s = train_step(p, one, hparams=dict(momentum=0.5), optimizer="sgd", reset_optimizer=True)
    assert s["hparams"]["lr"] == 1e-3 and s["step"] == 1
    with Table.open(p) as t:
        assert sorted(t.optimizer_tensors()) == ["optim.momentum_buffer"]
    s = train_step(p, one, reset_optimizer=True)  # the stored optimizer's name is kept
    assert s["optimizer"] == "sgd" and s["hparams"]["momentum"] == 0.0
    with Table.open(p) as t:
        assert not t.optimizer_tensors()
    with pytest.raises(ConfigError, match="has no hyper-parameter 'momentum'"):
        train_step(p, one, optimizer="adagrad", hparams=dict(momentum=0.9), reset_optimizer=True)


def test_state_belongs_to_one_tensor(tmp_path):
    from safetensors.numpy import save_file

    p = tmp_path / "model.safetensors"
    save_file({"emb": np.zeros((6, 3), np.float32), "proj": np.zeros((6, 3), np.float32)}, str(p),
              metadata={"origin": "hub"})
    one = [batch([2], np.ones((1, 3)))]
    train_step(p, one, tensor="emb", optimizer="adagrad")
    with pytest.raises(StateError, match="belongs to tensor 'emb', not 'proj'"):
        train_step(p, one, tensor="proj", optimizer="adagrad")
    with Table.open(p, tensor="emb") as t:
        assert t.metadata["origin"] == "hub" and t.metadata["embtool.optim.tensor"] == "emb"
    assert train_step(p, one)["tensor"] == "emb"  # the state's tensor, though proj is 2-D too


def unchanged(path: Path):
    before = path.read_bytes()
    yield
    assert path.read_bytes() == before


@pytest.mark.parametrize("opts,name,hparams,err,message", [
    (dict(frozen=True), "sgd", {}, StateError, "frozen"),
    (dict(sparse=True), "adam", {}, ConfigError, ADAM_SPARSE),
    (dict(sparse=True), "adamw", {}, ConfigError, ADAM_SPARSE),
    (dict(), "sparse-adam", {}, ConfigError, SPARSE_ADAM_DENSE),
    (dict(sparse=True), "sgd", dict(weight_decay=0.1), ConfigError, SGD_SPARSE_WD),
    (dict(sparse=True, scale_grad_by_freq=True), "sgd", {}, ConfigError, "scale_grad_by_freq not supported"),
    (dict(), "sgd", dict(lr=-1.0), ConfigError, "Invalid learning rate: -1.0"),
])
def test_refusals_leave_the_table_untouched(tmp_path, opts, name, hparams, err, message):
    p = make_table(tmp_path / "t.safetensors", np.ones((10, D), np.float32), **opts)
    before = p.read_bytes()
    with pytest.raises(err) as exc:
        train_step(p, [batch([1, 2], np.ones((2, D)))], optimizer=name, hparams=hparams)
    assert message in str(exc.value)
    assert p.read_bytes() == before


def test_bad_batches_are_refused_before_any_step(tmp_path):
    p = make_table(tmp_path / "t.safetensors", np.ones((10, D), np.float32))
    before = p.read_bytes()
    good = batch([1, 2], np.ones((2, D)))
    with pytest.raises(ShapeError, match=r"g2: gradient has shape \[2, 7\], expected \[2, 8\]"):
        train_step(p, [good, Batch(np.array([1, 2]), np.ones((2, 7)), "i2", "g2")], optimizer="adam")
    with pytest.raises(IndexRangeError, match=r"i2: index 10 at position \[1\]"):
        train_step(p, [good, Batch(np.array([1, 10]), np.ones((2, D)), "i2", "g2")])
    assert p.read_bytes() == before


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_non_f32_weight_is_refused(tmp_path, dtype):
    p = make_table(tmp_path / "t.safetensors", np.ones((4, 2), dtype))
    with pytest.raises(ConfigError, match="training needs an F32 weight"):
        train_step(p, [batch([1], np.ones((1, 2)))])


def test_float64_and_integer_gradients_are_cast_to_float32(tmp_path):
    g = np.array([[0.1, 1e-46, 3.0]])  # rounds, underflows, exact
    a = make_table(tmp_path / "a.safetensors", np.ones((4, 3), np.float32))
    b = make_table(tmp_path / "b.safetensors", np.ones((4, 3), np.float32))
    train_step(a, [Batch(np.array([2]), g, "i", "g")], hparams=dict(lr=1.0))
    train_step(b, [Batch(np.array([2]), g.astype(np.float32), "i", "g")], hparams=dict(lr=1.0))
    assert np.array_equal(snapshot(a)["weight"], snapshot(b)["weight"])


def test_empty_batch_counts_a_step(tmp_path):
    p = make_table(tmp_path / "t.safetensors", np.ones((4, 3), np.float32), sparse=True)
    s = train_step(p, [Batch(np.zeros((0,), np.int64), np.zeros((0, 3)), "i", "g")], optimizer="sparse-adam")
    assert (s["step"], s["rows_touched"], s["grad_norm"]) == (1, 0, 0.0)
    assert np.array_equal(snapshot(p)["weight"], np.ones((4, 3), np.float32))


def test_unknown_metadata_survives_both_write_paths(tmp_path):
    from embtool.table import Config, create

    p = tmp_path / "t.safetensors"
    create(p, {"weight": np.ones((5, 2), np.float32)}, Config(sparse=True), extra_metadata={"x.note": "kept"})
    train_step(p, [batch([1], np.ones((1, 2)))], optimizer="sparse-adam")  # rewrite
    train_step(p, [batch([1], np.ones((1, 2)))])  # in place
    with Table.open(p) as t:
        assert t.metadata["x.note"] == "kept" and t.metadata["embtool.optim.step"] == "2"


# -- batches files ----------------------------------------------------------------------------

def test_read_batches_npz_and_safetensors(tmp_path):
    from safetensors.numpy import save_file

    arrays = {"ids.0": np.array([[1, 2]]), "grad.0": np.ones((1, 2, 3), np.float32),
              "ids.1": np.array([3]), "grad.1": np.zeros((1, 3), np.float64)}
    np.savez(tmp_path / "b.npz", **arrays)
    save_file(arrays, str(tmp_path / "b.safetensors"))
    for name in ("b.npz", "b.safetensors"):
        got = read_batches(tmp_path / name)
        assert [b.ids.tolist() for b in got] == [[[1, 2]], [3]]
        assert got[1].grad.shape == (1, 3) and got[1].ids_where.endswith("step 1: ids.1")


@pytest.mark.parametrize("arrays,message", [
    ({"ids.0": np.array([1]), "grad.0": np.ones((1, 3)), "ids.2": np.array([1]), "grad.2": np.ones((1, 3))},
     "step 1 is missing"),
    ({"ids.0": np.array([1])}, "step 0: ids.0 has no grad.0"),
    ({"ids.0": np.array([1]), "grad.0": np.ones((1, 3)), "weights": np.ones(3)}, "unexpected tensor 'weights'"),
    ({"ids.00": np.array([1]), "grad.00": np.ones((1, 3))}, "unexpected tensor"),
    ({}, "no steps"),
])
def test_bad_batches_files(tmp_path, arrays, message):
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(FormatError, match=message):
        read_batches(tmp_path / "b.npz")


def test_damaged_batches_file(tmp_path):
    (tmp_path / "b.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(FormatError, match="not a valid .npz"):
        read_batches(tmp_path / "b.npz")
    (tmp_path / "b.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(FormatError, match="truncated"):
        read_batches(tmp_path / "b.safetensors")
