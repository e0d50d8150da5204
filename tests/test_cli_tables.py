"""init / info / lookup / renorm / freeze / unfreeze through the command line, in-process (the
same error boundary as the entry point; tests/test_cli_process.py runs real processes)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from embtool import ops
from embtool.store import read_header
from embtool.table import Table

from helpers import assert_single_error_line, invoke, make_table


@pytest.fixture
def table(tmp_path) -> Path:
    w = (np.random.default_rng(5).standard_normal((20, 6)) * 2).astype(np.float32)
    return make_table(tmp_path / "t.safetensors", w)


def weight_of(path, tensor=None) -> np.ndarray:
    with Table.open(path, tensor=tensor) as t:
        return np.array(t.weight())


# ---------------------------------------------------------------------------------------- init

def test_init_as_nn_embedding(tmp_path):
    p = tmp_path / "e.safetensors"
    r = invoke("init", p, "-n", 1000, "-d", 32, "--seed", 7, "--padding-idx", -3)
    assert r.code == 0 and r.out == "" and "1000 x 32" in r.err
    with Table.open(p) as t:
        w = t.weight()
        assert t.config.padding_idx == 997  # negative padding_idx normalised as nn.Embedding does
        assert not t.config.frozen and t.dtype == "F32"
    assert np.all(w[997] == 0) and np.count_nonzero(w[996]) == 32
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02  # N(0, 1)
    again = tmp_path / "again.safetensors"
    invoke("init", again, "-n", 1000, "-d", 32, "--seed", 7, "--padding-idx", -3)
    assert np.array_equal(weight_of(again), w)  # --seed is reproducible


@pytest.mark.parametrize("dtype,stored", [("float64", "F64"), ("float16", "F16"), ("bfloat16", "BF16")])
def test_init_dtypes(tmp_path, dtype, stored):
    p = tmp_path / "e.safetensors"
    assert invoke("init", p, "-n", 10, "-d", 4, "--dtype", dtype, "--init", "uniform").code == 0
    with Table.open(p) as t:
        assert t.dtype == stored and np.all(np.abs(t.weight()) <= 1)


def test_init_config_is_stored(tmp_path):
    p = tmp_path / "e.safetensors"
    invoke("init", p, "-n", 10, "-d", 4, "--max-norm", 1.5, "--norm-type", 1, "--sparse",
        "--scale-grad-by-freq", "--frozen", "--init", "zeros")
    with Table.open(p) as t:
        c = t.config
        assert (c.max_norm, c.norm_type, c.sparse, c.scale_grad_by_freq, c.frozen) == (1.5, 1.0, True, True, True)
        assert not t.weight().any()


@pytest.mark.parametrize("pad", [10, -11])
def test_init_padding_out_of_range(tmp_path, pad):
    p = tmp_path / "e.safetensors"
    r = invoke("init", p, "-n", 10, "-d", 4, "--padding-idx", pad)
    assert_single_error_line(r, "padding_idx must be within num_embeddings", str(pad))
    assert not p.exists()


def test_init_refuses_existing_without_force(table):
    before = table.read_bytes()
    r = invoke("init", table, "-n", 3, "-d", 2)
    assert_single_error_line(r, str(table), "already exists", "--force")
    assert table.read_bytes() == before
    assert invoke("init", table, "-n", 3, "-d", 2, "--force").code == 0
    assert weight_of(table).shape == (3, 2)


def test_usage_errors_exit_2(tmp_path):
    assert invoke("init", tmp_path / "x", "-n", -1, "-d", 3).code == 2
    assert invoke("init", tmp_path / "x", "-d", 3).code == 2
    assert invoke("lookup").code == 2
    assert invoke("nonsense").code == 2


# ---------------------------------------------------------------------------------------- info

def test_info_json(table):
    r = invoke("info", table, "--json")
    assert r.code == 0
    facts = json.loads(r.out)
    t = facts["table"]
    assert (t["num_embeddings"], t["embedding_dim"], t["dtype"]) == (20, 6, "F32")
    assert t["frozen"] is False and t["padding_idx"] is None and t["vocab"] is None
    assert facts["tensors"] == [{"name": "weight", "dtype": "F32", "shape": [20, 6], "bytes": 480}]


def test_info_human(table):
    r = invoke("info", table)
    assert r.code == 0 and "20 x 6 F32" in r.out and "frozen     false" in r.out


def test_missing_file(tmp_path):
    r = invoke("info", tmp_path / "nope.safetensors")
    assert_single_error_line(r, "nope.safetensors", "No such file")


# -------------------------------------------------------------------------------------- lookup

def test_lookup_shapes_and_values(table):
    w = weight_of(table)
    r = invoke("lookup", table, "3", "0", "3")
    assert r.code == 0
    assert np.array_equal(np.array(json.loads(r.out), np.float32), w[[3, 0, 3]])
    r = invoke("lookup", table, "[[1, 2, 3], [4, 5, 6]]")
    assert np.array(json.loads(r.out)).shape == (2, 3, 6)
    r = invoke("lookup", table, "[]")
    assert json.loads(r.out) == []


def test_lookup_input_sources(table, tmp_path):
    w = weight_of(table)
    ids = np.array([[1, 2], [3, 19]])
    np.save(tmp_path / "ids.npy", ids)
    (tmp_path / "ids.json").write_text(json.dumps(ids.tolist()))
    (tmp_path / "ids.txt").write_text("1 2\n3\t19\n")
    expect = w[ids]
    for src, shape in (("ids.npy", (2, 2, 6)), ("ids.json", (2, 2, 6)), ("ids.txt", (4, 6))):
        r = invoke("lookup", table, "-i", tmp_path / src, "-f", "npy")
        got = np.load(io.BytesIO(r.stdout_bytes))
        assert got.shape == shape and np.array_equal(got.reshape(expect.shape), expect), src
    r = invoke("lookup", table, "-i", "-", input="[[1,2],[3,19]]")
    assert np.array_equal(np.array(json.loads(r.out), np.float32), expect)
    r = invoke("lookup", table, input="1 2 3 19")  # piped stdin is read implicitly
    assert np.array_equal(np.array(json.loads(r.out), np.float32), expect.reshape(4, 6))


def test_lookup_output_formats(table, tmp_path):
    w = weight_of(table)
    r = invoke("lookup", table, "2", "5", "-f", "jsonl")
    lines = r.out.splitlines()
    assert len(lines) == 2 and np.array_equal(np.array(json.loads(lines[1]), np.float32), w[5])
    r = invoke("lookup", table, "2", "5", "-f", "csv")
    rows = r.out.splitlines()
    assert rows[0] == "id,v0,v1,v2,v3,v4,v5" and rows[2].split(",")[0] == "5"
    assert np.array_equal(np.array(rows[2].split(",")[1:], np.float32), w[5])  # shortest repr round-trips
    r = invoke("lookup", table, "2", "5", "-f", "tsv")
    assert r.out.splitlines()[1].split("\t")[0] == "2"
    r = invoke("lookup", table, "2", "-f", "table")
    assert r.code == 0 and "v5" in r.out
    out = tmp_path / "o.json"
    assert invoke("lookup", table, "2", "-o", out).code == 0
    assert np.array_equal(np.array(json.loads(out.read_text()), np.float32), w[[2]])
    r = invoke("lookup", table, "3", "-o", out)
    assert_single_error_line(r, str(out), "already exists")
    assert invoke("lookup", table, "3", "-o", out, "--force").code == 0
    assert np.array_equal(np.array(json.loads(out.read_text()), np.float32), w[[3]])


def test_lookup_nonfinite_json(tmp_path):
    w = np.array([[np.nan, np.inf, -np.inf, -0.0]], np.float32)
    p = make_table(tmp_path / "n.safetensors", w)
    assert invoke("lookup", p, "0").out.strip() == "[[NaN,Infinity,-Infinity,-0.0]]"


@pytest.mark.parametrize("args,needles", [
    (["20"], ["index 20 at position [0]", "out of range", "20 rows"]),
    (["1", "-1"], ["index -1 at position [1]", "negative"]),
    (["1.5"], ["'1.5' is not an integer"]),
    (["[[1, 2], [3]]"], ["rectangular"]),
    (["[[1, 2], [3, 2.5]]"], ["index 2.5 at position [1, 1]", "not an integer"]),
    (["[true]"], ["must be integers"]),
    (["[1,"], ["invalid JSON"]),
])
def test_lookup_bad_indices(table, args, needles):
    before = table.read_bytes()
    r = invoke("lookup", table, *args)
    assert_single_error_line(r, *needles)
    assert table.read_bytes() == before


def test_lookup_npy_to_terminal_refused_and_ids_file_errors(table, tmp_path):
    (tmp_path / "bad.txt").write_text("1 2\n3 x\n")
    assert_single_error_line(invoke("lookup", table, "-i", tmp_path / "bad.txt"), "line 2", "'x'")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    assert_single_error_line(invoke("lookup", table, "-i", tmp_path / "bad.npy"), "bad.npy", "not a valid .npy")
    np.save(tmp_path / "f.npy", np.array([0.5]))
    assert_single_error_line(invoke("lookup", table, "-i", tmp_path / "f.npy"), "not an integer")


def test_lookup_max_norm_is_f_embedding_and_write_back(tmp_path, torch):
    w = (np.random.default_rng(9).standard_normal((30, 13)) * 3).astype(np.float32)
    p = make_table(tmp_path / "m.safetensors", w, max_norm=2.0, norm_type=3.0)
    ids = [[4, 4, 7], [9, 0, 4]]
    r = invoke("lookup", p, json.dumps(ids), "-f", "npy")
    tw = torch.from_numpy(w.copy())
    ref = torch.nn.functional.embedding(torch.tensor(ids), tw, max_norm=2.0, norm_type=3.0)
    assert np.array_equal(np.load(io.BytesIO(r.stdout_bytes)), ref.numpy())
    assert np.array_equal(weight_of(p), w)  # without --write-back the table is not changed
    assert invoke("lookup", p, json.dumps(ids), "--write-back").code == 0
    assert np.array_equal(weight_of(p), tw.numpy())  # ... with it, exactly torch's mutated weight
    # an override for one call (a foreign file has no max_norm of its own)
    r = invoke("lookup", p, "5", "--max-norm", "0.5", "--norm-type", "inf", "-f", "npy")
    got = np.load(io.BytesIO(r.stdout_bytes))
    ref = torch.nn.functional.embedding(torch.tensor([5]), torch.from_numpy(w.copy()), max_norm=0.5,
                                        norm_type=float("inf"))
    assert np.array_equal(got, ref.numpy())


def test_lookup_padding_idx_override_is_validated(table):
    assert invoke("lookup", table, "1", "--padding-idx", "19").code == 0
    assert_single_error_line(invoke("lookup", table, "1", "--padding-idx", "20"), "padding_idx")


def test_lookup_foreign_file_tensor(tmp_path):
    from safetensors.numpy import save_file

    p = tmp_path / "model.safetensors"
    emb = np.arange(24, dtype=np.float32).reshape(6, 4)
    save_file({"model.embed_tokens.weight": emb, "lm_head.weight": emb[:, :2].copy()}, str(p))
    r = invoke("lookup", p, "1", "--tensor", "model.embed_tokens.weight")
    assert json.loads(r.out) == [emb[1].tolist()]
    assert_single_error_line(invoke("lookup", p, "1"), "2 2-D tensors", "--tensor")


# -------------------------------------------------------------------------------------- renorm

def test_renorm_whole_table_and_ids(tmp_path):
    w = (np.random.default_rng(2).standard_normal((50, 9)) * 2).astype(np.float32)
    p = make_table(tmp_path / "r.safetensors", w)
    r = invoke("renorm", p, "--max-norm", 1.0, "--dry-run", "--json")
    report = json.loads(r.out)
    expect = w.copy()
    changed = ops.embedding_renorm_(expect, np.arange(50), 1.0)
    assert report["rows_changed"] == changed and report["written"] is False
    assert np.array_equal(weight_of(p), w) and "would change" in r.err
    r = invoke("renorm", p, "--max-norm", 1.0, "--json")
    assert json.loads(r.out)["written"] is True
    assert np.array_equal(weight_of(p), expect)
    q = make_table(tmp_path / "q.safetensors", w, max_norm=1.0)
    assert invoke("renorm", q, "3", "7", "7").code == 0
    part = w.copy()
    ops.embedding_renorm_(part, [3, 7], 1.0)
    assert np.array_equal(weight_of(q), part)


def test_renorm_errors(table):
    before = table.read_bytes()
    assert_single_error_line(invoke("renorm", table), "no max_norm")
    assert_single_error_line(invoke("renorm", table, "--max-norm", 1, "99"), "index 99")
    assert table.read_bytes() == before


@pytest.mark.parametrize("dtype", ["F16", "BF16", "F64"])
def test_renorm_and_lookup_other_dtypes(tmp_path, dtype, torch):
    tdt = {"F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}[dtype]
    base = torch.randn(40, 10, generator=torch.Generator().manual_seed(0)) * 3
    from safetensors.torch import save_file

    p = tmp_path / "d.safetensors"
    save_file({"weight": base.to(tdt)}, str(p))
    ids = [1, 5, 5, 30]
    ref_w = base.to(tdt).clone()
    ref = torch.nn.functional.embedding(torch.tensor(ids), ref_w, max_norm=1.0)
    r = invoke("lookup", p, *ids, "--max-norm", 1, "-f", "npy", "--write-back")
    got = np.load(io.BytesIO(r.stdout_bytes))
    tol = {"F16": 1e-3, "BF16": 1e-2, "F64": 1e-12}[dtype]
    np.testing.assert_allclose(got, ref.double().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(weight_of(p), ref_w.double().numpy(), rtol=tol, atol=tol)


# ------------------------------------------------------------------------------ freeze/unfreeze

def test_freeze_unfreeze(table):
    r = invoke("freeze", table)
    assert r.code == 0 and "frozen" in r.err
    assert read_header(table).metadata["embtool.frozen"] == "true"
    assert "unchanged" in invoke("freeze", table).err
    assert invoke("unfreeze", table).code == 0
    assert read_header(table).metadata["embtool.frozen"] == "false"


def test_python_api(table):
    import embtool

    with embtool.open(table) as t:
        rows = embtool.lookup(t, [[0, 1]])
    assert rows.shape == (1, 2, 6)


def test_library_does_not_import_click_or_rich():
    import subprocess
    import sys

    code = ("import sys, embtool, embtool.ops, embtool.table, embtool.store, embtool.inspect, "
            "embtool.render, embtool.inputs; "
            "print(sorted(m for m in ('click', 'rich', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    assert out == "[]"


def test_help_and_small_lookup_do_not_import_numba(table):
    import subprocess
    import sys

    code = ("import sys, runpy; sys.argv = ['embtool', 'lookup', %r, '1', '2']\n"
            "try:\n    runpy.run_module('embtool', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('numba' in sys.modules, file=sys.stderr)") % str(table)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stderr.strip().splitlines()[-1] == "False"


def test_every_command_is_documented_in_readme():
    from embtool.cli import cli

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in cli.commands:
        assert f"embtool {name}" in readme, name
