"""Sharded tables under SIGKILL and concurrency, with real processes: a write that changes several
shards leaves every shard as before or every shard as after; concurrent writers lose no update;
a reader never sees shards from before and after the same write."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embtool import vfs
from embtool.config import Config
from embtool.sharded import shard_table, unshard_table
from embtool.table import create

from crashfs import Crash, CrashFS
from helpers import kill_at_random_instants

pytestmark = pytest.mark.slow

ROWS, DIM = 60_000, 32

COMMANDS = {
    # every shard changes, in place (rows through the log) or as new shard files written by tasks
    # (freeze, the index alone, and the other writes are killed at every write operation below)
    "renorm (new shard files)": (["renorm", "{t}", "--max-norm", "3"], {"EMBTOOL_REWRITE_BYTES": "0"}),
    "train-step adagrad (rows of every shard)": (["train-step", "{t}", "-i", "{ids}", "--grad", "{grad}",
                                                  "--optimizer", "adagrad"], {}),
    "train-step adam (every shard rewritten)": (["train-step", "{t}", "-i", "{ids}", "--grad", "{grad}",
                                                 "--optimizer", "adam"], {}),
}


def start(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "embtool", *map(str, args)], env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A pristine sharded table (4 shards, 60k x 32, unfrozen, a padding row) and a batch whose
    ids fall in every shard."""
    d = tmp_path_factory.mktemp("base")
    rng = np.random.default_rng(0)
    create(d / "t.safetensors", {"weight": (rng.standard_normal((ROWS, DIM)) * 1.5).astype(np.float32)},
           Config(padding_idx=5))
    shard_table(d / "t.safetensors", d / "t.index.json", shards=4)
    np.save(d / "ids.npy", rng.integers(0, ROWS, 40_000))
    np.save(d / "grad.npy", rng.standard_normal((40_000, DIM), dtype=np.float32))
    return d


def restore(base: Path, folder: Path) -> Path:
    """``folder`` holds a fresh copy of the pristine sharded table (and nothing else)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for f in base.iterdir():
        if f.name.startswith("t.index") or f.name.startswith("t-"):
            shutil.copy(f, folder / f.name)
    return folder / "t.index.json"


def state(index: Path, scratch: Path) -> bytes:
    """The whole table as one file's bytes (opening it finishes or drops an interrupted write)."""
    out = scratch / "state.safetensors"
    unshard_table(index, out, force=True)
    return out.read_bytes()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_sigkill_leaves_every_shard_before_or_every_shard_after(base, tmp_path, name):
    template, env = COMMANDS[name]
    folder = tmp_path / "t"
    index = restore(base, folder)
    args = [a.format(t=index, ids=base / "ids.npy", grad=base / "grad.npy") for a in template]
    before = state(index, tmp_path)
    t0 = time.perf_counter()
    proc = start(args, env)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    duration = time.perf_counter() - t0
    after = state(index, tmp_path)
    assert after != before

    outcomes, killed = kill_at_random_instants(lambda: start(args, env), lambda: restore(base, folder),
                                               lambda: state(index, tmp_path), before, after, duration,
                                               seed=name, trials=4)
    print(name, outcomes, f"{killed} killed mid-run, full run {duration:.2f}s")
    assert start(["unfreeze", index]).wait(timeout=60) == 0  # the next writer ...
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert not leftovers  # ... removed what the killed writers left


def train_one_file(path: Path, ids, grad, **kw) -> None:
    from embtool.training import Batch, train_step

    train_step(path, [Batch(np.load(ids), np.load(grad), "ids", "grad")], **kw)


def test_concurrent_writers_lose_no_update(base, tmp_path):
    """Three processes, two sparse steps each, every step touching every shard, each process its
    own rows: the result is every step applied (the one file after the same steps, in any order)."""
    index = restore(base, tmp_path / "t")
    one = tmp_path / "one.safetensors"
    shutil.copy(base / "t.safetensors", one)
    rng = np.random.default_rng(3)
    rows = rng.permutation(ROWS)[:3 * 2 * 50].reshape(3, 2, 50)  # disjoint: the order cannot matter
    procs = []
    for w in range(3):
        chain = []
        for s in range(2):
            ids, grad = tmp_path / f"ids{w}{s}.npy", tmp_path / f"grad{w}{s}.npy"
            np.save(ids, rows[w, s])
            np.save(grad, rng.standard_normal((50, DIM), dtype=np.float32))
            train_one_file(one, ids, grad, optimizer="sgd", hparams={"lr": 0.5})
            chain.append(f"'{sys.executable}' -m embtool train-step '{index}' -i '{ids}' --grad '{grad}' "
                         "--optimizer sgd --lr 0.5")
        procs.append(subprocess.Popen(["bash", "-c", " && ".join(chain)], stderr=subprocess.PIPE))
    for p in procs:
        assert p.wait(timeout=180) == 0, p.stderr.read()
    assert state(index, tmp_path) == one.read_bytes()


def test_readers_never_see_a_mix(base, tmp_path):
    """A writer applies the same sparse step (ids in every shard) again and again while readers
    look the same rows up: every answer is the table after some number of whole steps."""
    from embtool.ops import lookup
    from embtool.table import Table

    index = restore(base, tmp_path / "t")
    one = tmp_path / "one.safetensors"
    shutil.copy(base / "t.safetensors", one)
    ids = np.arange(0, ROWS, ROWS // 64)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "grad.npy", np.ones((ids.size, DIM), np.float32))
    steps = 4
    valid = set()
    for k in range(steps + 1):  # the rows after 0..steps steps, on one file
        with Table.open(one) as t:
            valid.add(lookup(t, ids).tobytes())
        train_one_file(one, tmp_path / "ids.npy", tmp_path / "grad.npy", hparams={"lr": 0.25})
    step = f"'{sys.executable}' -m embtool train-step '{index}' -i '{tmp_path / 'ids.npy'}' " \
           f"--grad '{tmp_path / 'grad.npy'}' --lr 0.25"
    writer = subprocess.Popen(["bash", "-c", " && ".join([step] * steps)])
    seen = set()
    while writer.poll() is None:
        out = subprocess.run([sys.executable, "-m", "embtool", "lookup", index, "-i", tmp_path / "ids.npy",
                              "-f", "npy"], capture_output=True, check=True).stdout
        rows = np.load(__import__("io").BytesIO(out))
        assert rows.tobytes() in valid, "a reader saw shards from before and after the same write"
        seen.add(rows.tobytes())
    assert writer.wait() == 0
    assert len(seen) >= 2  # the readers did overlap the writes


# -- kills and power cuts at every write of a sequence of sharded writes (tests/crashfs.py) -----

N, D = 64, 4  # 4 shards of 16 rows, more rows than vfs.MAP_ROWS in all: the renorms scatter


def _steps():
    """A sequence of every kind of sharded write, each one transaction over several files."""
    from embtool.ops import lookup, renorm
    from embtool.sharded import ShardedTable
    from embtool.shardindex import checkpoint, set_frozen
    from embtool.shardtrain import train_step
    from embtool.training import Batch

    def batch(seed, k=24):
        rng = np.random.default_rng(seed)  # rows in every shard
        return [Batch(rng.integers(0, N, k), rng.standard_normal((k, D)).astype(np.float32), "ids", "grad")]

    def writer(fn):
        def run(index):
            with ShardedTable.open(index, write=True) as t:
                fn(t)
        return run

    def with_env(name, value, fn):
        def run(index):
            os.environ[name] = value
            try:
                fn(index)
            finally:
                del os.environ[name]
        return run

    return [
        ("adagrad, first step: every shard replaced (state added), the index in place (creates the log)",
         lambda i: train_step(i, batch(1), optimizer="adagrad")),
        ("adagrad: rows and state rows of every shard, the step count in the index",
         lambda i: train_step(i, batch(2))),
        ("renorm: rows of every shard in place", writer(lambda t: renorm(t, max_norm=1.5))),
        ("renorm: every shard a new file", with_env("EMBTOOL_REWRITE_BYTES", "0",
                                                    writer(lambda t: renorm(t, max_norm=1.0)))),
        ("freeze: the index alone", lambda i: set_frozen(i, True)),
        ("unfreeze", lambda i: set_frozen(i, False)),
        ("lookup --write-back: rows of two shards", writer(
            lambda t: lookup(t, np.array([3, 40, 41]), max_norm=0.5, write_back=True))),
        ("checkpoint", checkpoint),
        ("metadata outgrowing the index's padding: the index replaced, with rows",
         writer(lambda t: t.update({t.tensor: (np.array([0, 63]), np.full((2, D), 9, np.float32))},
                                   {"test.note": "x" * 5000}))),
        ("adam with a reset: every shard replaced, with the log checkpointed first",
         with_env("EMBTOOL_CHECKPOINT_BYTES", "1",
                  lambda i: train_step(i, batch(3), optimizer="adam", reset_optimizer=True))),
    ]


STEPS = _steps()


def snapshot(index: Path) -> dict:
    """Everything of the sharded table (opening it recovers an interrupted write)."""
    from embtool.sharded import ShardedTable

    with ShardedTable.open(index) as t:
        out = {"index": dict(t.metadata), "shards": [(s.file, s.lo, s.hi) for s in t.index.shards]}
        for name in [t.tensor, *t.optimizer_tensors()]:
            out[name] = np.asarray(t.stored_rows(name)[:]).tobytes()
    return out


@pytest.fixture(scope="module")
def crash_world(tmp_path_factory):
    """The starting folder, the state after each step, and the number of write operations."""
    from embtool.sharded import create_sharded

    base = tmp_path_factory.mktemp("crash") / "start"
    base.mkdir()
    weight = np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)
    create_sharded(base / "t.index.json", {"weight": weight}, Config(), shards=4)
    ref = tmp_path_factory.mktemp("crash") / "ref"
    shutil.copytree(base, ref)
    with vfs.using(CrashFS(ref)):
        states = [snapshot(ref / "t.index.json")]
    fs = CrashFS(ref)
    with vfs.using(fs):
        for _, step in STEPS:
            step(ref / "t.index.json")
            states.append(snapshot(ref / "t.index.json"))
    changed = [states[i] != states[i + 1] for i in range(len(STEPS))]
    assert changed == [name != "checkpoint" for name, _ in STEPS]
    return base, states, fs.count


@pytest.fixture
def one_thread(monkeypatch):
    """Tasks one after the other, so that the k-th write is the same one in every run."""
    from embtool import execute

    real = execute.InProcess
    monkeypatch.setattr(execute, "InProcess", lambda threads=None: real(1))


def crash_run(folder: Path, fs) -> int:
    """The steps through ``fs``: how many completed before it crashed."""
    with vfs.using(fs):
        for i, (_, step) in enumerate(STEPS):
            try:
                step(folder / "t.index.json")
            except Crash:
                return i
    return len(STEPS)


def copy_of(base: Path, tmp_path: Path, name="run") -> Path:
    folder = tmp_path / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(folder.parent / (folder.name + ".inodes"), ignore_errors=True)
    shutil.copytree(base, folder)
    return folder


def test_kill_or_power_cut_at_every_write(crash_world, tmp_path, one_thread):
    """At every write operation of the sequence, a kill (the page cache keeps every write) and a
    power cut (writes not covered by an fsync lost, kept or torn at 512-byte sectors; a prefix of
    the folder's renames): the next opener finds every shard before the write or every shard
    after it, never a mix; the next writer removes what the crashed one left."""
    base, states, total = crash_world
    outcomes = {"before": 0, "after": 0}
    for k in range(1, total + 1):
        for cut in (False, True) if k % 3 == 1 else (False,):  # power cuts at every third write
            folder = copy_of(base, tmp_path)
            fs = CrashFS(folder, crash_at=k)
            i = crash_run(folder, fs)
            assert i < len(STEPS)
            if cut:
                fs.power_cut(np.random.default_rng(k))
            with vfs.using(CrashFS(folder, boot=b"B" * 16 if cut else b"A" * 16)):
                got = snapshot(folder / "t.index.json")
                assert got in (states[i], states[i + 1]), \
                    f"{'power cut' if cut else 'kill'} at write {k} during {STEPS[i][0]!r}"
                outcomes["before" if got == states[i] else "after"] += 1
                from embtool.sharded import ShardedTable

                ShardedTable.open(folder / "t.index.json", write=True).close()  # the next writer
            assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert outcomes["before"] and outcomes["after"]
    print(f"{total} crash points, killed and cut: {outcomes}")
