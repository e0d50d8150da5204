"""``embtool train-step`` through the command line: torch trajectories of 100 steps with one real
process per step, --batches, --json, and (in-process) every error path (one ``Error:`` line,
exit 1, the table's bytes unchanged) or usage error (exit 2).

Tolerances as in test_training.py: 3 steps within 4 ulp, 100 steps within 1e-5 relative per
tensor, plain SGD on a sparse table bit for bit.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from golden.make_train_cli import CASES, SNAPSHOTS, STEPS, case_batches, case_weight, torch_trajectory
from helpers import assert_single_error_line, invoke, make_table, run
from test_optim import compare
from test_training import case_table, check_against, golden_snapshots, live_torch, snapshot

D = 8


def hparam_args(hparams: dict) -> list[str]:
    args = []
    for key, value in hparams.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{key}")
        elif isinstance(value, tuple):
            args += [flag, *map(repr, value)]
        else:
            args += [flag, repr(value)]
    return args


def write_step_inputs(folder: Path, s: int, ids: np.ndarray, grad: np.ndarray):
    """Step ``s``'s -i and --grad arguments (and stdin), in a format that varies with ``s``."""
    kind = s % 10
    if kind == 1:  # JSON both; float32 values printed with repr round-trip exactly
        (folder / "ids.json").write_text(json.dumps(ids.tolist()))
        (folder / "grad.json").write_text(json.dumps(grad.astype(float).tolist()))
        return ["-i", folder / "ids.json", "--grad", folder / "grad.json"], None
    if kind == 2 and ids.ndim == 1:  # whitespace integers and a .safetensors gradient
        from safetensors.numpy import save_file

        (folder / "ids.txt").write_text(" ".join(map(str, ids.tolist())))
        save_file({"g": grad}, str(folder / "grad.safetensors"))
        return ["-i", folder / "ids.txt", "--grad", folder / "grad.safetensors"], None
    np.save(folder / "grad.npy", grad)
    if kind == 3:  # indices on stdin
        return ["-i", "-", "--grad", folder / "grad.npy"], json.dumps(ids.tolist())
    np.save(folder / "ids.npy", ids)
    return ["-i", folder / "ids.npy", "--grad", folder / "grad.npy"], None


def cli_trajectory(folder: Path, i: int) -> dict:
    """Case ``i``'s 100 steps, one `embtool train-step` command per step; snapshots by step.  The
    first step and the last are real processes (the state must live in the file); the others run
    the same command line in-process (``invoke``: the same code from argv on, ~100x cheaper)."""
    folder.mkdir()
    _, name, hparams, opts = CASES[i]
    table = case_table(folder / "t.safetensors", i)
    out = {}
    for s, (ids, grad) in enumerate(case_batches(i, opts), 1):
        if s % 4 == 2:  # vary the ids' shape: flat on some steps
            ids, grad = ids.reshape(-1), grad.reshape(-1, D)
        args, stdin = write_step_inputs(folder, s, ids, grad)
        # the optimizer options are needed on the first step only; later steps repeat some
        options = ["--optimizer", name, *hparam_args(hparams)] if s == 1 or s % 3 == 0 else []
        call = run if s in (1, STEPS) else invoke
        r = call("train-step", table, *args, *options, input=stdin)
        assert r.code == 0, (CASES[i][0], s, r.err)
        assert f"step {s} ({name})" in r.err
        if s in SNAPSHOTS:
            out[s] = snapshot(table)
    return out


def batches_file(path: Path, i: int) -> Path:
    arrays = {}
    for s, (ids, grad) in enumerate(case_batches(i, CASES[i][3])):
        arrays[f"ids.{s}"], arrays[f"grad.{s}"] = ids, grad
    np.savez(path, **arrays)
    return path


@pytest.mark.slow
def test_hundred_steps_one_process_each_every_optimizer(tmp_path):
    """Every case of tests/golden/make_train_cli.py through the CLI, against the committed torch
    trajectory and live torch; then the same 100 steps as one --batches call give the same bits."""
    results = [cli_trajectory(tmp_path / f"case{i}", i) for i in range(len(CASES))]  # invoke: one at a time
    torch = live_torch()
    for i, ours in enumerate(results):
        case, name, hparams, opts = CASES[i]
        check_against(ours, golden_snapshots(i), case)
        if torch is not None:
            theirs = torch_trajectory(torch, name, hparams, case_weight(i), case_batches(i, opts), **opts)
            check_against(ours, theirs, case)
        batches = batches_file(tmp_path / f"case{i}" / "b.npz", i)
        table = case_table(tmp_path / f"case{i}" / "batches.safetensors", i)
        r = invoke("train-step", table, "--batches", batches, "--optimizer", name, *hparam_args(hparams))
        assert r.code == 0, (case, r.err)
        assert "100 steps to step 100" in r.err
        compare([snapshot(table)], [ours[100]], exact=True)


def test_json_summary_and_stderr_line(tmp_path):
    p = make_table(tmp_path / "t.safetensors", np.ones((10, D), np.float32), sparse=True, padding_idx=0,
                   max_norm=1.0)
    (tmp_path / "ids.json").write_text("[[1, 0, 4], [4, 4, 9]]")
    np.save(tmp_path / "g.npy", np.full((2, 3, D), 0.5, np.float32))
    r = invoke("train-step", p, "-i", tmp_path / "ids.json", "--grad", tmp_path / "g.npy", "--json",
            "--optimizer", "sparse-adam", "--lr", "0.1", "--betas", "0.5", "0.75")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert (out["step"], out["steps_applied"], out["rows_touched"], out["optimizer"]) == (1, 1, 3, "sparse-adam")
    assert out["hparams"]["betas"] == [0.5, 0.75] and out["write"] == "rewrite"
    # rows 1, 4, 9 get gradients 0.5, 3 x 0.5 (summed), 0.5 in each of D columns
    assert out["grad_norm"] == pytest.approx(np.sqrt(D * (0.25 + 2.25 + 0.25)))
    # max_norm: the four looked-up rows (norm sqrt(8) > 1) are renormed, padding row 0 included
    assert out["steps"] == [{"step": 1, "rows_touched": 3, "grad_norm": out["grad_norm"], "rows_renormed": 4}]
    assert out["rows_written"] == 4
    assert r.err.strip().splitlines() == [
        f"{p}: step 1 (sparse-adam), 3 rows touched, grad norm {out['grad_norm']:.6g}, "
        "file rewritten (4 rows changed)"]
    w = snapshot(p)["weight"]
    assert np.linalg.norm(w[0]) < 1.0 and np.array_equal(w[2], np.ones(D, np.float32))
    r = invoke("train-step", p, "-i", tmp_path / "ids.json", "--grad", tmp_path / "g.npy")
    assert r.code == 0 and r.out == "" and "rows written in place" in r.err


@pytest.fixture
def files(tmp_path):
    """A trainable dense table, a sparse one, and good step inputs for them."""
    w = np.random.default_rng(0).standard_normal((10, D)).astype(np.float32)
    ns = {
        "dense": make_table(tmp_path / "dense.safetensors", w, padding_idx=1),
        "sparse": make_table(tmp_path / "sparse.safetensors", w, sparse=True),
        "frozen": make_table(tmp_path / "frozen.safetensors", w, frozen=True),
        "sgf_sparse": make_table(tmp_path / "sgf.safetensors", w, sparse=True, scale_grad_by_freq=True),
        "half": make_table(tmp_path / "half.safetensors", w.astype(np.float16)),
        "ids": tmp_path / "ids.json", "grad": tmp_path / "grad.npy", "dir": tmp_path,
    }
    ns["ids"].write_text("[[1, 2], [3, 3]]")
    np.save(ns["grad"], np.ones((2, 2, D), np.float32))
    return ns


def write(path: Path, content) -> Path:
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_text(content)
    return path


ERRORS = {
    "grad shape": (lambda f: ["dense", "-i", f["ids"], "--grad", write(f["dir"] / "g.npy", np.ones((2, 3, D), np.float32))],
                   ["g.npy: gradient has shape [2, 3, 8], expected [2, 2, 8]", "ids.json"]),
    "out of range": (lambda f: ["dense", "-i", write(f["dir"] / "i.json", "[[1, 2], [10, 3]]"), "--grad", f["grad"]],
                     ["i.json: index 10 at position [1, 0] is out of range for a table of 10 rows"]),
    "negative": (lambda f: ["dense", "-i", write(f["dir"] / "i.json", "[[1, 2], [3, -4]]"), "--grad", f["grad"]],
                 ["i.json: index -4 at position [1, 1] is negative"]),
    "non-integer": (lambda f: ["dense", "-i", write(f["dir"] / "i.json", "[[1, 2.5], [3, 4]]"), "--grad", f["grad"]],
                    ["i.json: index 2.5 at position [0, 1] is not an integer"]),
    "non-integer text": (lambda f: ["dense", "-i", write(f["dir"] / "i.txt", "1 2\n3 x4"), "--grad", f["grad"]],
                         ["i.txt: line 2: 'x4' is not an integer index"]),
    "frozen": (lambda f: ["frozen", "-i", f["ids"], "--grad", f["grad"]], ["frozen"]),
    "adam on sparse": (lambda f: ["sparse", "-i", f["ids"], "--grad", f["grad"], "--optimizer", "adam"],
                       ["Adam does not support sparse gradients, please consider SparseAdam instead"]),
    "sparse-adam on dense": (lambda f: ["dense", "-i", f["ids"], "--grad", f["grad"], "--optimizer", "sparse-adam"],
                             ["SparseAdam does not support dense gradients, please consider Adam instead"]),
    "sgd weight decay on sparse": (lambda f: ["sparse", "-i", f["ids"], "--grad", f["grad"], "--weight-decay", "0.1"],
                                   ["add(sparse, dense) is not supported"]),
    "adagrad weight decay on sparse": (
        lambda f: ["sparse", "-i", f["ids"], "--grad", f["grad"], "--optimizer", "adagrad", "--weight-decay", "0.1"],
        ["weight_decay option is not compatible with sparse gradients"]),
    "scale_grad_by_freq sparse": (lambda f: ["sgf_sparse", "-i", f["ids"], "--grad", f["grad"]],
                                  ["scale_grad_by_freq not supported with sparse gradients"]),
    "invalid lr": (lambda f: ["dense", "-i", f["ids"], "--grad", f["grad"], "--lr", "-1"],
                   ["Invalid learning rate: -1.0"]),
    "nesterov": (lambda f: ["dense", "-i", f["ids"], "--grad", f["grad"], "--nesterov"],
                 ["Nesterov momentum requires a momentum and zero dampening"]),
    "option of another optimizer": (lambda f: ["dense", "-i", f["ids"], "--grad", f["grad"], "--optimizer", "adam",
                                               "--momentum", "0.9"], ["adam has no hyper-parameter 'momentum'"]),
    "F16 weight": (lambda f: ["half", "-i", f["ids"], "--grad", f["grad"]], ["F16", "training needs an F32 weight"]),
    "missing ids file": (lambda f: ["dense", "-i", f["dir"] / "nope.json", "--grad", f["grad"]], ["nope.json"]),
    "damaged grad file": (lambda f: ["dense", "-i", f["ids"], "--grad", write(f["dir"] / "g.npy", "[[1, 2")],
                          ["g.npy: invalid JSON"]),
    "non-numeric grad": (lambda f: ["dense", "-i", f["ids"], "--grad", write(f["dir"] / "g.json", '[["a"]]')],
                         ["g.json"]),
    "batches gap": (lambda f: ["dense", "--batches", npz(f["dir"] / "b.npz", {0: (f, 2), 2: (f, 2)})],
                    ["b.npz: step 1 is missing"]),
    "batches bad step": (lambda f: ["dense", "--batches", npz(f["dir"] / "b.npz", {0: (f, 2), 1: (f, 3)})],
                         ["b.npz: step 1: grad.1: gradient has shape [2, 3, 8], expected [2, 2, 8]"]),
    "batches bad ids": (lambda f: ["dense", "--batches", npz(f["dir"] / "b.npz", {0: (f, 2), 1: (f, -1)})],
                        ["b.npz: step 1: ids.1: index 99 at position [0, 0] is out of range"]),
    "batches not a batches file": (lambda f: ["dense", "--batches", f["dense"]],
                                   ["unexpected tensor 'weight'"]),
}


def npz(path: Path, steps: dict) -> Path:
    """A batches file: step s -> grad of width ``w`` (or ids with a bad index when w == -1)."""
    arrays = {}
    for s, (f, width) in steps.items():
        ids = np.array([[1, 2], [3, 3]])
        if width == -1:
            ids[0, 0], width = 99, 2
        arrays[f"ids.{s}"], arrays[f"grad.{s}"] = ids, np.ones((2, width, D), np.float32)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_leave_every_table_unchanged(files, case):
    make_args, needles = ERRORS[case]
    args = make_args(files)
    tables = [files[k] for k in ("dense", "sparse", "frozen", "sgf_sparse", "half")]
    before = [t.read_bytes() for t in tables]
    r = invoke("train-step", files[args[0]], *args[1:])
    assert_single_error_line(r, *map(str, needles))
    assert [t.read_bytes() for t in tables] == before


def test_mismatched_stored_optimizer(files):
    p = files["dense"]
    assert invoke("train-step", p, "-i", files["ids"], "--grad", files["grad"], "--optimizer", "adam",
               "--lr", "0.01").code == 0
    before = p.read_bytes()
    r = invoke("train-step", p, "-i", files["ids"], "--grad", files["grad"], "--lr", "0.02")
    assert_single_error_line(r, "lr=0.02 (stored 0.01)", "--reset-optimizer")
    r = invoke("train-step", p, "-i", files["ids"], "--grad", files["grad"], "--optimizer", "adagrad")
    assert_single_error_line(r, "the optimizer state is adam's (step 1), not adagrad's")
    assert p.read_bytes() == before
    r = invoke("train-step", p, "-i", files["ids"], "--grad", files["grad"], "--optimizer", "adagrad",
            "--reset-optimizer", "--json")
    assert r.code == 0 and json.loads(r.out)["step"] == 1
    assert snapshot(p).keys() == {"weight", "optim.sum", "step"}


@pytest.mark.parametrize("args,needle", [
    (["--batches", "b.npz", "-i", "ids.json"], "either --batches or -i/--grad"),
    (["-i", "ids.json"], "--grad"),
    (["--grad", "grad.npy"], "-i IDS"),
    (["-i", "-", "--grad", "-"], "only one of -i and --grad"),
    (["-i", "ids.json", "--grad", "grad.npy", "--optimizer", "rmsprop"], "rmsprop"),
    (["-i", "ids.json", "--grad", "grad.npy", "--betas", "0.9"], "--betas"),
    (["-i", "ids.json", "--grad", "grad.npy", "--lr", "fast"], "fast"),
])
def test_usage_errors_exit_2(files, args, needle):
    before = files["dense"].read_bytes()
    args = [str(files["dir"] / a) if a.endswith((".npz", ".json", ".npy")) else a for a in args]
    r = invoke("train-step", files["dense"], *args)
    assert r.code == 2 and needle in r.err and "Traceback" not in r.err
    assert files["dense"].read_bytes() == before


def test_train_step_is_listed_in_help():
    r = invoke("--help")
    assert r.code == 0 and "train-step" in r.out
