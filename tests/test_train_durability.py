"""train-step with real processes: concurrent steps on one table lose no update, and SIGKILL at a
random instant leaves the table exactly as before or after the step (weight, state, counter)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embtool.training import Batch, train_step
from golden.make_train import make_batches
from helpers import kill_at_random_instants, make_table
from test_training import snapshot

pytestmark = pytest.mark.slow
TESTS = Path(__file__).parent

WORKERS, STEPS_EACH = 8, 25
V, D, SHAPE = 200, 16, (6, 5)

# A worker process: 25 steps, each through embtool.training.train_step (open, lock, step, write,
# close); prints the global step number each batch got, which fixes the order the lock chose.
WORKER = """
import json, sys
sys.path[:0] = [{tests!r}, {golden!r}]
from make_train import make_batches
from embtool.training import Batch, train_step
worker, path, name, hparams = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
batches = make_batches(9, {V}, {D}, {total}, {shape}, padding_idx=3, hot=60)
for k in range(worker * {each}, (worker + 1) * {each}):
    ids, grad = batches[k]
    s = train_step(path, [Batch(ids, grad, "ids", "grad")], optimizer=name, hparams=hparams)
    print(json.dumps({{"batch": k, "step": s["step"]}}), flush=True)
"""


def state_of(path: Path):
    """Hashable weight + state + step counter (opening recovers an interrupted write)."""
    snap = snapshot(path)
    return tuple(sorted((k, v if k == "step" else v.tobytes()) for k, v in snap.items()))


@pytest.mark.parametrize("name,hparams,opts", [
    ("sparse-adam", dict(lr=0.01), dict(sparse=True, padding_idx=3)),  # in place through the log
    ("adam", dict(lr=0.01, amsgrad=True), dict(padding_idx=3)),  # a rewrite per step
])
def test_concurrent_processes_lose_no_update(tmp_path, name, hparams, opts):
    w0 = np.random.default_rng(4).standard_normal((V, D)).astype(np.float32)
    p = make_table(tmp_path / "t.safetensors", w0, **opts)
    code = WORKER.format(tests=str(TESTS), golden=str(TESTS / "golden"), V=V, D=D, total=WORKERS * STEPS_EACH,
                         shape=SHAPE, each=STEPS_EACH)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w), str(p), name, json.dumps(hparams)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(WORKERS)]
    order = {}
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        for line in out.splitlines():
            rec = json.loads(line)
            order[rec["step"]] = rec["batch"]
    total = WORKERS * STEPS_EACH
    assert sorted(order) == list(range(1, total + 1))  # every step counted once: no lost update
    # the same batches, one after another in the order the lock gave them, in this process
    batches = make_batches(9, V, D, total, SHAPE, padding_idx=3, hot=60)
    q = make_table(tmp_path / "q.safetensors", w0, **opts)
    seq = [Batch(*batches[order[s]], "ids", "grad") for s in range(1, total + 1)]
    for b in seq:
        train_step(q, [b], optimizer=name, hparams=hparams)
    assert state_of(p) == state_of(q)


def start(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "embtool", "train-step", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})


KILL_CASES = {
    # steady-state sparse step: weight and two state tensors patched in place (logged)
    "sparse-adam in place": (dict(sparse=True, padding_idx=0), ["--optimizer", "sparse-adam"], True, {}),
    # every row changes: atomic rewrite of weight and state
    "adam rewrite": (dict(padding_idx=0), ["--optimizer", "adam", "--amsgrad"], True, {}),
    # the first step of a stateful optimizer adds the optim.* tensors (streamed rewrite)
    "adagrad first step": (dict(sparse=True), ["--optimizer", "adagrad"], False, {}),
    # the state in a file of its own: rows of two files in one transaction
    "sparse-adam --state": (dict(sparse=True), ["--optimizer", "sparse-adam", "--state", "{folder}/s.safetensors"],
                            True, {}),
    # every commit also checkpoints: kills land in checkpoints too
    "adagrad, checkpoint after each step": (dict(sparse=True), ["--optimizer", "adagrad"], True,
                                            {"EMBTOOL_CHECKPOINT_BYTES": "0"}),
}


def folder_state(folder: Path):
    """``state_of`` the table, and of its state file if it has one."""
    p = folder / "t.safetensors"
    snap = state_of(p)
    if (folder / "s.safetensors").exists():
        from embtool.store import Store

        with Store(folder / "s.safetensors") as s:
            snap += tuple(sorted((n, s.array(n).tobytes()) for n in s.tensors))
            snap += (("state step", s.metadata["embtool.optim.step"]),)
    return snap


@pytest.mark.parametrize("case", sorted(KILL_CASES))
def test_sigkill_at_random_instants(tmp_path, case):
    opts, options, warm, env = KILL_CASES[case]
    rng = np.random.default_rng(1)
    rows = 100_000
    base, run = tmp_path / "base", tmp_path / "run"
    base.mkdir()
    make_table(base / "t.safetensors", rng.standard_normal((rows, 32)).astype(np.float32), **opts)
    ids, grad = tmp_path / "ids.npy", tmp_path / "grad.npy"
    np.save(ids, rng.integers(0, rows, 40_000))
    np.save(grad, rng.standard_normal((40_000, 32)).astype(np.float32))

    def args(folder):
        return [folder / "t.safetensors", "-i", ids, "--grad", grad, *[str(o).format(folder=folder) for o in options]]

    if warm:  # a first step creates the state: the killed step is a later one
        assert start(args(base)).wait(timeout=300) == 0

    def fresh_copy():
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base, run)

    fresh_copy()
    before = folder_state(run)
    t0 = time.perf_counter()
    assert start(args(run), env).wait(timeout=300) == 0
    duration = time.perf_counter() - t0
    after = folder_state(run)
    assert after != before
    outcomes, killed_running = kill_at_random_instants(
        lambda: start(args(run), env), fresh_copy, lambda: folder_state(run), before, after, duration, seed=case,
        trials=4)  # every write operation is also killed deterministically in test_store_powerloss
    print(case, outcomes, f"{killed_running} killed mid-run, full run {duration:.2f}s")
