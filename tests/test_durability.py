"""SIGKILL at random instants of real writing processes: the table must always open and be either
the state before the command or the state after it, bit for bit."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from embtool import wal
from embtool.table import Table

from helpers import kill_at_random_instants, make_table

pytestmark = pytest.mark.slow

#: The renorm cases compute on numpy: what is killed is the store's writing, and a process that
#: does not import Numba is done 0.4-0.6 s sooner (lookup --write-back keeps the default backend,
#: so kills also land while Numba loads or compiles its kernels).
NUMPY = {"EMBTOOL_BACKEND": "numpy"}
COMMANDS = {
    "renorm (in place, logged)": (["renorm", "{p}", "--max-norm", "1.0"], NUMPY),
    "renorm (rewrite)": (["renorm", "{p}", "--max-norm", "1.0"], {**NUMPY, "EMBTOOL_REWRITE_BYTES": "0"}),
    # without fsync a write is still atomic against a killed process
    "renorm (in place, EMBTOOL_SYNC=off)": (["renorm", "{p}", "--max-norm", "1.0"],
                                            {**NUMPY, "EMBTOOL_SYNC": "off"}),
    "lookup --write-back": (["lookup", "{p}", "-i", "{ids}", "--max-norm", "1.0", "--write-back",
                             "-f", "npy", "-o", os.devnull, "--force"], {}),
    "freeze": (["freeze", "{p}"], {}),
}


def snapshot(path):
    """Everything a command may change: weight bits and metadata (opening recovers an interrupted write)."""
    from safetensors import safe_open

    with Table.open(path) as t:
        w = np.array(t.raw)
        meta = dict(t.metadata)
    with safe_open(path, "numpy") as f:  # still a valid safetensors file for the reference reader
        assert f.get_tensor("weight").shape == w.shape
    return w.tobytes(), meta


def start(args, env):
    return subprocess.Popen([sys.executable, "-m", "embtool", *args], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_sigkill_at_random_instants(tmp_path, name):
    template, extra_env = COMMANDS[name]
    rng = np.random.default_rng(0)
    base = make_table(tmp_path / "base.safetensors",
                      (rng.standard_normal((120_000, 32)) * 2).astype(np.float32))
    ids = tmp_path / "ids.npy"
    np.save(ids, rng.integers(0, 120_000, 200_000))
    p = tmp_path / "t.safetensors"
    args = [a.format(p=p, ids=ids) for a in template]

    shutil.copyfile(base, p)
    before = snapshot(p)
    t0 = time.perf_counter()
    assert start(args, extra_env).wait(timeout=120) == 0
    duration = time.perf_counter() - t0
    after = snapshot(p)
    assert after != before

    def prepare():
        shutil.copyfile(base, p)
        wal.log_path(p).unlink(missing_ok=True)  # the log is about the file copied over

    outcomes, killed_running = kill_at_random_instants(
        lambda: start(args, extra_env), prepare, lambda: snapshot(p), before, after, duration, seed=name,
        trials=4)  # every write point is killed deterministically in test_store_processes/_powerloss
    print(name, outcomes, f"{killed_running} killed mid-run, full run {duration:.2f}s")
