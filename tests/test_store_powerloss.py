"""Power cuts and kills at every write of a sequence of transactions, on a simulated disk
(tests/crashfs.py): after the restart the files open as the state before or after the
transaction that was running, never anything else, and a crash during the recovery changes
nothing of that.

The sequence covers every kind of write: rows logged in place (a first log, then appends), a
metadata change in the header, a new state file written with its table (two files, one
transaction), rows of both files, a checkpoint, a replacement of the table while the log still
holds rows of the old file, a scatter of many rows, and a commit that checkpoints the log first.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from embtool import store as st
from embtool import vfs
from embtool.table import Table
from embtool.training import Batch, train_step

from crashfs import Crash, CrashFS
from helpers import make_table

N, D = 80, 4  # more rows than vfs.MAP_ROWS, so that one step scatters through a map
T, S = "t.safetensors", "s.safetensors"


def _batch(seed, k=12):
    rng = np.random.default_rng(seed)
    return [Batch(rng.integers(0, N, k), rng.standard_normal((k, D)).astype(np.float32), "ids", "grad")]


def _update(folder):
    with Table.open(folder / T, write=True) as t:
        t.update({"weight": (np.arange(0, N, 3), np.full((len(range(0, N, 3)), D), 7, np.float32))},
                 {"test.note": "updated"})


def _rewrite(folder):
    with Table.open(folder / T, write=True) as t:
        t.rewrite({"weight": np.full((N, D), 0.5, np.float32)})


def _checkpoint_first(folder):
    """A step that finds the log over the size limit: it checkpoints, then logs."""
    os.environ["EMBTOOL_CHECKPOINT_BYTES"] = "1"
    try:
        train_step(folder / T, _batch(6))
    finally:
        del os.environ["EMBTOOL_CHECKPOINT_BYTES"]


def _many_rows(folder):
    with Table.open(folder / T, write=True) as t:
        t.update({"weight": (np.arange(N), np.arange(N * D, dtype=np.float32).reshape(N, D))})


STEPS = [
    ("sgd step, in the table (creates the log)", lambda f: train_step(f / T, _batch(1), optimizer="sgd")),
    ("rows and metadata", _update),
    ("freeze (header only)", lambda f: st.set_frozen(f / T, True)),
    ("unfreeze", lambda f: st.set_frozen(f / T, False)),
    ("adagrad with a new state file (two files)",
     lambda f: train_step(f / T, _batch(2), optimizer="adagrad", reset_optimizer=True, state=f / S)),
    ("adagrad step, rows of both files", lambda f: train_step(f / T, _batch(3))),
    ("checkpoint", lambda f: st.checkpoint(f / T)),
    ("adagrad step after the checkpoint", lambda f: train_step(f / T, _batch(4))),
    ("the table replaced while the log holds rows", _rewrite),
    ("adagrad step on the new file", lambda f: train_step(f / T, _batch(5))),
    ("many rows (a mapped scatter)", _many_rows),
    ("a step that checkpoints the log first", _checkpoint_first),
]


def snapshot(folder):
    """Everything the steps change (opening recovers an interrupted write)."""
    with Table.open(folder / T) as t:
        out = {"weight": t.raw.tobytes(), "meta": dict(t.metadata)}
        out.update({n: t.store.array(n).tobytes() for n in t.optimizer_tensors()})
        named = t.metadata.get("embtool.optim.state_file")
    if named:
        with st.Store(folder / named) as s:
            out["state"] = {n: s.array(n).tobytes() for n in s.tensors}
            out["state meta"] = dict(s.metadata)
    return out


def run(folder, fs) -> int:
    """The steps through ``fs``: how many completed before it crashed."""
    with vfs.using(fs):
        for i, (_, step) in enumerate(STEPS):
            try:
                step(folder)
            except Crash:
                return i
    return len(STEPS)


def recovered(folder, boot=b"B" * 16, crash_at=None):
    """Open the files after a restart (on a disk whose syncs cost nothing): their state."""
    with vfs.using(CrashFS(folder, boot=boot, crash_at=crash_at)):
        return snapshot(folder)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The starting folder, the state after each step, and the number of write operations."""
    base = tmp_path_factory.mktemp("powerloss") / "start"
    base.mkdir()
    make_table(base / T, np.random.default_rng(0).standard_normal((N, D)).astype(np.float32), sparse=True)
    ref = tmp_path_factory.mktemp("powerloss") / "ref"
    shutil.copytree(base, ref)
    states = [recovered(ref, b"A" * 16)]
    fs = CrashFS(ref)
    with vfs.using(fs):
        for _, step in STEPS:
            step(ref)
            states.append(snapshot(ref))
    changed = [states[i] != states[i + 1] for i in range(len(STEPS))]
    assert changed == [name != "checkpoint" for name, _ in STEPS]
    return base, states, fs.count


def fresh(base, tmp_path, name="run"):
    folder = tmp_path / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(folder.parent / (folder.name + ".inodes"), ignore_errors=True)
    shutil.copytree(base, folder)
    return folder


def allowed(states, i):
    """After a crash inside step i: the state before it or after it."""
    return states[i], states[i + 1]


def test_power_cut_at_every_write(world, tmp_path):
    base, states, total = world
    outcomes = {"before": 0, "after": 0}
    for k in range(1, total + 1):
        for seed in range(2):
            folder = fresh(base, tmp_path)
            fs = CrashFS(folder, crash_at=k)
            i = run(folder, fs)
            assert i < len(STEPS)
            fs.power_cut(np.random.default_rng([k, seed]))
            got = recovered(folder)
            before, after = allowed(states, i)
            assert got in (before, after), f"power cut at write {k} during {STEPS[i][0]!r}"
            outcomes["before" if got == before else "after"] += 1
            # the next writer removes what the crashed one left behind
            with vfs.using(CrashFS(folder, boot=b"B" * 16)), st.Store(folder / T, write=True) as s:
                if (folder / S).exists():
                    s.group.open(folder / S).close()
            assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert outcomes["before"] and outcomes["after"]
    print(f"{total} crash points x 2 disks: {outcomes}")


@pytest.mark.parametrize("sync", ["full", "off"])
def test_kill_at_every_write(world, tmp_path, monkeypatch, sync):
    """A killed process: the page cache keeps every write it made (with EMBTOOL_SYNC=off too)."""
    monkeypatch.setenv("EMBTOOL_SYNC", sync)
    base, states, total = world
    for k in range(1, total + 1, 1 if sync == "full" else 2):
        folder = fresh(base, tmp_path)
        i = run(folder, CrashFS(folder, crash_at=k))
        got = recovered(folder, boot=b"A" * 16)  # the same boot: the marker of what is applied holds
        assert got in allowed(states, i), f"kill at write {k} during {STEPS[i][0]!r}"


def test_power_cut_during_recovery(world, tmp_path):
    """A second cut while the first one is being recovered: the result of the recovery that
    finally completes is the same as if the first had."""
    base, states, total = world
    checked = 0
    for k in range(2, total + 1, 4):
        folder = fresh(base, tmp_path)
        fs = CrashFS(folder, crash_at=k)
        run(folder, fs)
        fs.power_cut(np.random.default_rng(k))
        image = fresh(folder, tmp_path, "image")
        expect = recovered(fresh(image, tmp_path, "clean"))
        for m in range(1, 40):
            again = fresh(image, tmp_path, "again")
            fs2 = CrashFS(again, boot=b"B" * 16, crash_at=m)
            try:
                with vfs.using(fs2):
                    snapshot(again)
            except Crash:
                fs2.power_cut(np.random.default_rng([k, m]))
                assert recovered(again, boot=b"C" * 16) == expect, f"cut {k}, then {m} into the recovery"
                checked += 1
                continue
            break  # the recovery needs fewer than m writes
    assert checked
