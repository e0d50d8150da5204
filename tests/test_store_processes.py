"""The store with real processes: a reader waiting for the lock while a writer dies half-way, kills
at every write of a checkpoint and of a replay, readers beside a writer of two files, and the
temporary files of killed writers."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embtool import store as st
from embtool import wal
from embtool.table import Table

from helpers import make_table

pytestmark = pytest.mark.slow


def python(code, *args, **kw):
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], **kw)


def wait_for(predicate, what, timeout=60.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def blocked_on_a_lock(pid: int) -> bool:
    """Whether process ``pid`` waits for a file lock (``/proc/locks`` lists it after ``->``)."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:  # not Linux: give the reader time to reach its lock
        time.sleep(1.0)
        return True
    return any("->" in line and f" {pid} " in line for line in text.splitlines())


# The writer commits a transaction of 100 rows, then applies half of them and dies; it waits for
# the word of the test before applying, so that the reader is already queued for the lock.
HALF_THEN_DIE = r"""
import os, signal, sys, time
from pathlib import Path
import numpy as np
from embtool import vfs
from embtool.table import Table
path, ready, go = sys.argv[1:4]

class HalfThenDie(vfs.OS):
    def scatter(self, fd, base, row_bytes, rows, data):
        Path(ready).touch()
        while not os.path.exists(go):
            time.sleep(0.005)
        half = len(rows) // 2
        super().scatter(fd, base, row_bytes, rows[:half], memoryview(data).cast("B")[:half * row_bytes])
        os.kill(os.getpid(), signal.SIGKILL)

with vfs.using(HalfThenDie()), Table.open(path, write=True) as t:
    t.update({"weight": (np.arange(100), np.full((100, 8), -1, np.float32))})
"""

COUNT_NEW_ROWS = r"""
import sys
import numpy as np
from embtool.table import Table
with Table.open(sys.argv[1]) as t:
    print(int((np.asarray(t.weight()[:100]) == -1).all(axis=1).sum()))
"""


def test_a_reader_queued_for_the_lock_never_sees_a_half_applied_write(tmp_path):
    p = make_table(tmp_path / "t.safetensors", np.zeros((1000, 8), np.float32))
    ready, go = tmp_path / "ready", tmp_path / "go"
    writer = python(HALF_THEN_DIE, p, ready, go)
    wait_for(ready.exists, "the writer to hold the lock")
    reader = python(COUNT_NEW_ROWS, p, stdout=subprocess.PIPE, text=True)
    wait_for(lambda: blocked_on_a_lock(reader.pid), "the reader to queue for the lock")
    go.touch()
    assert writer.wait(60) == -signal.SIGKILL
    out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0
    assert out.strip() == "100"  # the committed transaction, whole; 50 was the torn read


# ``embtool ARGS`` in a process that SIGKILLs itself at its n-th write operation.
DIE_AT = r"""
import os, signal, sys
from embtool import vfs
n, count = int(sys.argv[1]), [0]

def dying(name):
    real = getattr(vfs.OS, name)
    def op(self, *args):
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *args)
    return op

class DieAt(vfs.OS):
    pass

for name in ("pwrite", "scatter", "truncate", "sync", "sync_dir", "rename", "unlink"):
    setattr(DieAt, name, dying(name))
vfs._current = DieAt()
from embtool.cli import run
sys.exit(run(sys.argv[2:]))
"""


def state(folder: Path):
    with Table.open(folder / "t.safetensors") as t:
        return t.raw.tobytes(), dict(t.metadata)


def kill_at_every_write(template: Path, folder: Path, args, expect):
    """Run ``embtool ARGS`` on copies of ``template``, killed at its 1st, 2nd, ... write, until
    it completes; each time the table must read as ``expect``.  Returns the number of kills."""
    for n in range(1, 100):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(template, folder)
        code = python(DIE_AT, n, *[str(a).format(folder=folder) for a in args],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).wait(60)
        assert state(folder) == expect, f"killed at write {n} of {args}"
        if code == 0:
            return n - 1
        assert code == -signal.SIGKILL
    raise AssertionError("the command never completed")


@pytest.fixture
def logged(tmp_path):
    """A folder with a table and a log of three transactions; the state they make."""
    folder = tmp_path / "logged"
    folder.mkdir()
    p = make_table(folder / "t.safetensors", np.zeros((300, 8), np.float32))
    before = p.read_bytes()
    with Table.open(p, write=True) as t:
        for k in range(3):
            t.update({"weight": (np.arange(k, 300, 3), np.full((100, 8), k + 1, np.float32))},
                     {"test.k": str(k)})
    return folder, state(folder), before


def test_kills_at_every_write_of_a_checkpoint(logged, tmp_path):
    folder, expect, _ = logged
    kills = kill_at_every_write(folder, tmp_path / "run", ["checkpoint", "{folder}/t.safetensors"], expect)
    assert kills >= 3 and not wal.log_path(tmp_path / "run" / "t.safetensors").exists()


def test_kills_at_every_write_of_a_replay(logged, tmp_path):
    folder, expect, before = logged
    # As after a restart that lost the page cache: the table as it was before the transactions,
    # its log complete, and the mark of what was applied from another boot.
    (folder / "t.safetensors").write_bytes(before)
    log = wal.log_path(folder / "t.safetensors")
    with open(log, "r+b") as f:
        f.seek(wal.MARK_AT)
        f.write(b"\0" * 64)
    kills = kill_at_every_write(folder, tmp_path / "run", ["info", "{folder}/t.safetensors"], expect)
    assert kills >= 2


WRITE_BOTH = r"""
import sys
import numpy as np
from embtool import store as st
p, m = sys.argv[1:3]
for k in range(1, 21):
    with st.Store(p, write=True) as s, s.group.open(m) as ms, s.transaction() as tx:
        tx.write_rows(s, "weight", np.arange(200), np.full((200, 8), k, np.float32))
        tx.write_rows(ms, "rows", np.arange(200), np.full((200, 2), k, np.float32))
"""

READ_BOTH = r"""
import os, sys
import numpy as np
from embtool import store as st
p, m, stop = sys.argv[1:4]
checks = mixed = 0
while not os.path.exists(stop) or checks < 5:
    with st.Store(p) as s, st.Store(m) as ms:
        a, b = np.unique(s.array("weight")[:200]), np.unique(ms.array("rows")[:200])
    checks += 1
    mixed += a.size != 1 or b.size != 1 or a[0] != b[0]
print(checks, mixed)
"""


def test_readers_beside_a_writer_of_two_files_never_see_a_mix(tmp_path):
    p = make_table(tmp_path / "t.safetensors", np.zeros((1000, 8), np.float32))
    m = tmp_path / "m.safetensors"
    with st.Store(p, write=True) as s, s.transaction() as tx:
        tx.replace(m, {"rows": np.zeros((1000, 2), np.float32)}, {st.PRIMARY_KEY: p.name})
    stop = tmp_path / "stop"
    readers = [python(READ_BOTH, p, m, stop, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    assert python(WRITE_BOTH, p, m).wait(120) == 0
    stop.touch()
    for r in readers:
        out, _ = r.communicate(timeout=120)
        checks, mixed = map(int, out.split())
        assert checks >= 5 and mixed == 0
    with st.Store(m) as ms:
        assert (ms.array("rows")[:200] == 20).all()


HOLD_A_TEMP = r"""
import os, signal, sys, time
from pathlib import Path
from embtool import store as st
fd, tmp = st.create_temp(Path(sys.argv[1]))
os.write(fd, b"half a table")
print(tmp.name, flush=True)
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(120)
"""


def test_the_next_writer_removes_the_temporary_files_of_killed_writers_only(tmp_path):
    p = make_table(tmp_path / "t.safetensors", np.zeros((10, 4), np.float32))
    dead = python(HOLD_A_TEMP, p, "die", stdout=subprocess.PIPE, text=True)
    dead_name = dead.stdout.readline().strip()
    assert dead.wait(60) == -signal.SIGKILL
    alive = python(HOLD_A_TEMP, p, "live", stdout=subprocess.PIPE, text=True)
    try:
        alive_name = alive.stdout.readline().strip()
        assert (tmp_path / dead_name).exists() and (tmp_path / alive_name).exists()
        assert subprocess.run([sys.executable, "-m", "embtool", "freeze", p]).returncode == 0
        assert not (tmp_path / dead_name).exists()
        assert (tmp_path / alive_name).exists()  # its writer is still at work
    finally:
        alive.kill()
        alive.wait()
    st.set_frozen(p, False)  # and once it is dead, it goes too
    assert not (tmp_path / alive_name).exists()
