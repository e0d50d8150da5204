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

from embtool.config import Config
from embtool.sharded import shard_table, unshard_table
from embtool.table import create

from helpers import kill_at_random_instants

pytestmark = pytest.mark.slow

ROWS, DIM = 60_000, 32

COMMANDS = {
    # every shard changes, in place (rows through the log) or as new shard files
    "renorm": (["renorm", "{t}", "--max-norm", "3"], {}),
    "renorm (new shard files)": (["renorm", "{t}", "--max-norm", "3"], {"EMBTOOL_REWRITE_BYTES": "0"}),
    "train-step adagrad (rows of every shard)": (["train-step", "{t}", "-i", "{ids}", "--grad", "{grad}",
                                                  "--optimizer", "adagrad"], {}),
    "train-step adam (every shard rewritten)": (["train-step", "{t}", "-i", "{ids}", "--grad", "{grad}",
                                                 "--optimizer", "adam"], {}),
    "freeze": (["freeze", "{t}"], {}),
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
                                               seed=name, trials=5)
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
