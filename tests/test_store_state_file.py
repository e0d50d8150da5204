"""``train-step --state FILE``: the optimizer state in a file of its own, written with the table in
one transaction, so that the table stays a state_dict that PyTorch loads with ``strict=True``."""
from __future__ import annotations

import json

import numpy as np
import pytest

from embtool import store as st
from embtool.table import Table
from embtool.training import Batch, train_step

from helpers import assert_single_error_line, invoke, make_table

N, D = 60, 8


def batches(seed, steps=3, k=20):
    rng = np.random.default_rng(seed)
    return [Batch(rng.integers(0, N, k), rng.standard_normal((k, D)).astype(np.float32), "ids", "grad")
            for _ in range(steps)]


def table(path, **opts):
    return make_table(path, np.random.default_rng(1).standard_normal((N, D)).astype(np.float32), **opts)


def contents(path):
    with st.Store(path) as s:
        return {n: np.array(s.array(n)) for n in s.tensors}, dict(s.metadata)


@pytest.mark.parametrize("name,opts", [("sparse-adam", dict(sparse=True)), ("adam", {}),
                                       ("adagrad", dict(sparse=True))])
def test_the_same_numbers_as_state_in_the_table(tmp_path, name, opts):
    inside, outside = table(tmp_path / "in.safetensors", **opts), table(tmp_path / "out.safetensors", **opts)
    state = tmp_path / "out.optim.safetensors"
    for i, b in enumerate(batches(2)):
        train_step(inside, [b], optimizer=name)
        train_step(outside, [b], optimizer=name, state=state if i == 0 else None)  # then found by itself
    a, a_meta = contents(inside)
    b, b_meta = contents(outside)
    s, s_meta = contents(state)
    assert sorted(b) == ["weight"] and np.array_equal(a["weight"], b["weight"])
    assert {n: v.tobytes() for n, v in s.items()} == {n: v.tobytes() for n, v in a.items() if n != "weight"}
    assert b_meta["embtool.optim.state_file"] == state.name and "embtool.optim.step" not in b_meta
    assert s_meta["embtool.optim.step"] == a_meta["embtool.optim.step"] == "3"
    assert s_meta[st.PRIMARY_KEY] == outside.name


def test_the_table_stays_a_strict_state_dict(tmp_path, torch):
    from safetensors.torch import load_file

    p, state = table(tmp_path / "model.safetensors"), tmp_path / "optim.safetensors"
    train_step(p, batches(3), optimizer="adam", state=state)
    emb = torch.nn.Embedding(N, D)
    emb.load_state_dict(load_file(p), strict=True)
    assert sorted(load_file(state)) == ["optim.exp_avg", "optim.exp_avg_sq"]
    q = table(tmp_path / "inside.safetensors")
    train_step(q, batches(3), optimizer="adam")
    with pytest.raises(RuntimeError, match="Unexpected key"):  # what --state is for
        emb.load_state_dict(load_file(q), strict=True)


def test_info_says_where_the_state_lives(tmp_path):
    p = table(tmp_path / "t.safetensors", sparse=True)
    r = invoke("train-step", p, "--batches", _batches_file(tmp_path), "--optimizer", "adagrad",
               "--state", tmp_path / "t.optim.safetensors", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["state_file"] == str(tmp_path / "t.optim.safetensors")
    facts = json.loads(invoke("info", p, "--json").out)["table"]["optimizer"]
    assert facts["state_file"] == str(tmp_path / "t.optim.safetensors")
    assert facts["name"] == "adagrad" and facts["step"] == 1 and facts["state"] == ["optim.sum"]
    assert "optim.sum in " in invoke("info", p).out


def _batches_file(folder):
    from safetensors.numpy import save_file

    b = batches(4, steps=1)[0]
    save_file({"ids.0": b.ids, "grad.0": b.grad}, str(folder / "b.safetensors"))
    return folder / "b.safetensors"


def test_moving_the_state_needs_a_reset(tmp_path):
    p = table(tmp_path / "t.safetensors", sparse=True)
    bf = _batches_file(tmp_path)
    a, b = tmp_path / "sa.safetensors", tmp_path / "sb.safetensors"
    assert invoke("train-step", p, "--batches", bf, "--optimizer", "adagrad").code == 0
    before = p.read_bytes()
    r = invoke("train-step", p, "--batches", bf, "--state", a)
    assert_single_error_line(r, str(p), "optimizer state is inside the table", "--reset-optimizer")
    assert p.read_bytes() == before and not a.exists()
    assert invoke("train-step", p, "--batches", bf, "--state", a, "--reset-optimizer").code == 0
    assert sorted(contents(p)[0]) == ["weight"] and a.exists()
    r = invoke("train-step", p, "--batches", bf, "--state", b)
    assert_single_error_line(r, str(p), f"lives in {a}, not {b}")
    assert invoke("train-step", p, "--batches", bf, "--state", b, "--reset-optimizer").code == 0
    assert b.exists() and not a.exists()  # moved, in the same transaction
    assert contents(p)[1]["embtool.optim.state_file"] == b.name


def test_a_file_that_is_not_the_tables_state_is_never_touched(tmp_path):
    p = table(tmp_path / "t.safetensors", sparse=True)
    other = table(tmp_path / "other.safetensors")
    before = other.read_bytes()
    r = invoke("train-step", p, "--batches", _batches_file(tmp_path), "--state", other)
    assert_single_error_line(r, str(other), "is not the optimizer state of")
    assert other.read_bytes() == before


def test_a_missing_state_file_is_an_error(tmp_path):
    p = table(tmp_path / "t.safetensors", sparse=True)
    bf = _batches_file(tmp_path)
    state = tmp_path / "s.safetensors"
    assert invoke("train-step", p, "--batches", bf, "--optimizer", "adagrad", "--state", state).code == 0
    state.unlink()
    r = invoke("train-step", p, "--batches", bf)
    assert_single_error_line(r, str(p), f"optimizer state file {state} is missing")
    assert invoke("train-step", p, "--batches", bf, "--reset-optimizer").code == 0
    assert state.exists()


def test_the_state_file_is_locked_with_its_table(tmp_path):
    p = table(tmp_path / "t.safetensors", sparse=True)
    state = tmp_path / "s.safetensors"
    train_step(p, batches(5, steps=1), optimizer="adagrad", state=state)
    with Table.open(p, write=True):
        with pytest.raises(Exception, match="already open for writing in this thread"):
            st.Store(state)
