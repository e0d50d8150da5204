"""SIGKILL at random instants of real writing processes: the table must always open and be either
the state before the command or the state after it, bit for bit."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from embtool import store as st
from embtool.table import Table

from helpers import make_table

pytestmark = pytest.mark.slow

COMMANDS = {
    "renorm (journal)": (["renorm", "{p}", "--max-norm", "1.0"], {}),
    "renorm (rewrite)": (["renorm", "{p}", "--max-norm", "1.0"], {"EMBTOOL_REWRITE_BYTES": "0"}),
    "lookup --write-back": (["lookup", "{p}", "-i", "{ids}", "--max-norm", "1.0", "--write-back",
                             "-f", "npy", "-o", os.devnull, "--force"], {}),
    "freeze": (["freeze", "{p}"], {}),
}


def snapshot(path):
    """Everything a command may change: weight bits and metadata (opening recovers a journal)."""
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

    outcomes = {"before": 0, "after": 0}
    killed_running = 0
    random.seed(name)
    for _ in range(16):
        shutil.copyfile(base, p)
        for leftover in (st.journal_path(p),):
            leftover.unlink(missing_ok=True)
        proc = start(args, extra_env)
        time.sleep(random.uniform(0.05, duration * 1.1))
        proc.send_signal(signal.SIGKILL)
        if proc.wait(timeout=60) == -signal.SIGKILL:
            killed_running += 1
        state = snapshot(p)
        assert state in (before, after), "the table is neither the old nor the new state"
        outcomes["before" if state == before else "after"] += 1
    assert killed_running > 0  # the kills did land while the command was running
    print(name, outcomes, f"{killed_running} killed mid-run, full run {duration:.2f}s")
