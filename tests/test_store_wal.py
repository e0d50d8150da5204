"""The store's transactions, log, locks, temporary files and size checks, in one process."""
from __future__ import annotations

import hashlib
import os
import struct
import threading
import time

import numpy as np
import pytest

from embtool import store as st
from embtool import vfs, wal
from embtool.errors import EmbtoolError
from embtool.table import Table

from helpers import assert_single_error_line, invoke, make_table


def weight(p):
    with Table.open(p) as t:
        return np.array(t.weight())


@pytest.fixture
def table(tmp_path):
    return make_table(tmp_path / "t.safetensors", np.arange(400, dtype=np.float32).reshape(100, 4))


# --------------------------------------------------------------------------------------------
# the log


def test_a_transaction_is_one_frame_applied_at_once(table):
    with Table.open(table, write=True) as t:
        t.update({"weight": (np.array([3, 70]), np.full((2, 4), -1, np.float32))}, {"test.k": "v"})
        assert t.metadata["test.k"] == "v" and t.weight()[70, 0] == -1  # the map sees it
    log = wal.log_path(table)
    with open(log, "rb") as f:
        state = wal.read_state(f.fileno())
        frames = wal.scan(memoryview(f.read()), state.salt)
    assert len(frames) == 1 and wal.up_to_date(state, vfs.current().boot_id())
    assert weight(table)[3, 0] == -1


def test_checkpoint_removes_the_log_and_keeps_the_state(table):
    with Table.open(table, write=True) as t:
        for k in range(3):
            t.update({"weight": (np.array([k]), np.full((1, 4), k + 0.5, np.float32))})
    before = weight(table)
    r = invoke("checkpoint", table)
    assert r.code == 0 and "3 logged transactions" in r.err
    assert not wal.log_path(table).exists()
    assert np.array_equal(weight(table), before)
    assert invoke("checkpoint", table).err.strip().endswith("no log to checkpoint")


def test_the_log_is_checkpointed_by_size(table, monkeypatch):
    monkeypatch.setenv("EMBTOOL_CHECKPOINT_BYTES", "3000")
    log = wal.log_path(table)
    with Table.open(table, write=True) as t:
        t.update({"weight": (np.arange(10), np.zeros((10, 4), np.float32))})
        small = log.stat().st_size
        t.update({"weight": (np.arange(10, 100), np.zeros((90, 4), np.float32))})  # past 3000 bytes
        big = log.stat().st_size
        t.update({"weight": (np.array([1]), np.ones((1, 4), np.float32))})  # checkpoints first
        assert small < 3000 < big and log.stat().st_size < small
    with open(log, "rb") as f:
        state = wal.read_state(f.fileno())
        assert len(wal.scan(memoryview(f.read()), state.salt)) == 1  # a new log, of one frame
    assert (weight(table)[1] == 1).all() and not weight(table)[2:].any()


def test_a_replay_after_a_restart_applies_every_frame_since_the_checkpoint(table):
    with Table.open(table, write=True) as t:
        t.update({"weight": (np.array([1]), np.full((1, 4), 9, np.float32))})
        t.update({"weight": (np.array([2]), np.full((1, 4), 8, np.float32))})
    with open(wal.log_path(table), "r+b") as f:  # as if the machine had restarted since
        f.seek(wal.MARK_AT)
        f.write(wal.encode_mark(wal.read_state(f.fileno()).salt, wal.FRAMES_AT, b"other boot"))
    # and as if the page cache had lost the applied rows
    with open(table, "r+b") as f:
        base = st.read_header(table).data_start
        f.seek(base + 16)
        f.write(np.arange(4, 12, dtype=np.float32).tobytes())
    w = weight(table)
    assert (w[1] == 9).all() and (w[2] == 8).all()


def test_large_frames_written_around_the_cache_replay(tmp_path, monkeypatch):
    """Frames from ``DIRECT_MIN`` bytes go to the disk with O_DIRECT, each starting where the
    last one ended (not page-aligned): the log they make scans and replays as one written
    through the cache would."""
    monkeypatch.setattr(vfs, "DIRECT_MIN", 8192)
    monkeypatch.setattr(vfs, "DIRECT_CHUNK", 4096)
    rng = np.random.default_rng(3)
    table = make_table(tmp_path / "t.safetensors", rng.standard_normal((3000, 16), dtype=np.float32))
    expected = np.zeros((3000, 16), np.float32)  # the rows no frame names are zeroed below
    with Table.open(table, write=True) as t:
        for k in range(4):
            rows = np.unique(rng.integers(0, 3000, 400 + 97 * k))
            values = rng.standard_normal((rows.size, 16), dtype=np.float32)
            t.update({"weight": (rows, values)}, {"test.k": str(k)})
            expected[rows] = values
    with open(wal.log_path(table), "r+b") as f:
        state = wal.read_state(f.fileno())
        assert len(wal.scan(memoryview(f.read()), state.salt)) == 4
        f.seek(wal.MARK_AT)  # as if the machine had restarted: every frame is replayed
        f.write(wal.encode_mark(state.salt, wal.FRAMES_AT, b"other boot"))
    with open(table, "r+b") as f:  # over rows the page cache would have lost
        f.seek(st.read_header(table).data_start)
        f.write(bytes(3000 * 16 * 4))
    assert np.array_equal(weight(table), expected)


def test_a_copied_folder_replays(tmp_path, table):
    import shutil

    with Table.open(table, write=True) as t:
        t.update({"weight": (np.array([5]), np.full((1, 4), 7, np.float32))})
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(table, copy / table.name)
    shutil.copy(wal.log_path(table), copy / wal.log_path(table).name)
    with open(copy / wal.log_path(table).name, "r+b") as f:  # copied right after a crash
        f.seek(wal.MARK_AT)
        f.write(b"\0" * 64)
    with open(copy / table.name, "r+b") as f:
        f.seek(st.read_header(table).data_start + 5 * 16)
        f.write(b"\0" * 16)
    assert (weight(copy / table.name)[5] == 7).all()


def test_a_log_of_another_format_version_is_refused(table):
    with Table.open(table, write=True) as t:
        t.update({"weight": (np.array([5]), np.full((1, 4), 7, np.float32))})
    log = wal.log_path(table)
    raw = bytearray(log.read_bytes())
    head = struct.pack("<8sII8s", wal.MAGIC, 2, wal.FRAMES_AT, bytes(raw[16:24]))
    raw[:32] = head + struct.pack("<I", __import__("zlib").crc32(head))
    log.write_bytes(bytes(raw))
    with open(log, "rb") as f, pytest.raises(EmbtoolError, match="log format 2 is not supported"):
        wal.read_state(f.fileno())


def test_embtool_0_1_journal_is_recovered(table):
    """A complete redo journal of the previous version is applied; a torn one dropped."""
    fd = os.open(table, os.O_RDONLY)
    dev, ino = st._identity(fd)
    os.close(fd)
    base = st.read_header(table).data_start
    rows = np.array([4, 9], np.int64)
    data = np.full((2, 4), -3, np.float32)
    body = st.JOURNAL_MAGIC + struct.pack("<QQQ", dev, ino, 1) + struct.pack("<QQQ", base, 16, 2) + \
        rows.tobytes() + data.tobytes()
    journal = st.journal_path(table)
    journal.write_bytes(body[:-3] + hashlib.blake2b(body, digest_size=32).digest())  # torn
    before = weight(table)
    assert np.array_equal(weight(table), before) and not journal.exists()
    journal.write_bytes(body + hashlib.blake2b(body, digest_size=32).digest())
    assert (weight(table)[[4, 9]] == -3).all() and not journal.exists()


# --------------------------------------------------------------------------------------------
# transactions over several files


def _member(group, path, value):
    """A new file of ``group``: it names the group's primary in its metadata."""
    primary = os.path.relpath(group.primary, path.parent)
    with group.transaction() as tx:
        tx.replace(path, {"rows": np.full((50, 2), value, np.float32)}, {st.PRIMARY_KEY: primary})


def test_a_transaction_over_two_files_is_all_or_nothing(table, tmp_path):
    other = tmp_path / "m.safetensors"
    with st.Store(table, write=True) as s:
        _member(s.group, other, 1.0)
        m = s.group.open(other)
        with pytest.raises(RuntimeError):
            with s.transaction() as tx:
                tx.write_rows(s, "weight", [0], np.full((1, 4), 5, np.float32))
                tx.write_rows(m, "rows", [0], np.full((1, 2), 5, np.float32))
                raise RuntimeError("changed my mind")
        assert s.array("weight")[0, 1] == 1 and m.array("rows")[0, 0] == 1  # neither
        with s.transaction() as tx:
            tx.write_rows(s, "weight", [0], np.full((1, 4), 5, np.float32))
            tx.write_rows(m, "rows", [0], np.full((1, 2), 5, np.float32))
        assert s.array("weight")[0, 1] == 5 and m.array("rows")[0, 0] == 5  # both
        m.close()
    with open(wal.log_path(table), "rb") as f:
        state = wal.read_state(f.fileno())
        buf = memoryview(f.read())
        records = [r for off, _ in wal.scan(buf, state.salt) for r in wal.decode(buf, off)]
    assert [(type(r).__name__, r.member) for r in records][-2:] == [("Rows", "t.safetensors"),
                                                                    ("Rows", "m.safetensors")]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_member_is_opened_under_its_primarys_lock(table, tmp_path):
    other = tmp_path / "m.safetensors"
    with st.Store(table, write=True) as s:
        _member(s.group, other, 2.0)
        with pytest.raises(EmbtoolError, match="already open for writing in this thread"):
            st.Store(other)
    with st.Store(other) as m:
        assert m.group.primary == table
        with pytest.raises(EmbtoolError, match="already open for reading in this thread"):
            st.Store(table, write=True)


def test_a_member_reader_finishes_its_primarys_interrupted_write(table, tmp_path):
    other = tmp_path / "m.safetensors"
    with st.Store(table, write=True) as s:
        _member(s.group, other, 2.0)
        with s.group.open(other) as m, s.transaction() as tx:
            tx.write_rows(m, "rows", [7], np.full((1, 2), 9, np.float32))
    with open(wal.log_path(table), "r+b") as f:  # "killed" before the rows reached the file
        f.seek(wal.MARK_AT)
        f.write(b"\0" * 64)
    with open(other, "r+b") as f:
        f.seek(st.read_header(other).data_start + 7 * 8)
        f.write(np.full(2, 2, np.float32).tobytes())
    with st.Store(other) as m:
        assert (m.array("rows")[7] == 9).all()


def test_replace_and_remove_in_one_transaction(table, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    with st.Store(table, write=True) as s:
        _member(s.group, a, 1.0)
        with s.transaction() as tx:
            tx.remove(a)
            tx.replace(b, {"x": np.ones(3, np.float32)}, {})
            tx.write_rows(s, "weight", [1], np.zeros((1, 4), np.float32))
    assert not a.exists() and st.read_header(b).tensors["x"].shape == (3,)
    assert not weight(table)[1].any()


def test_replacing_the_primary_keeps_it_locked_and_drops_the_log(table):
    with Table.open(table, write=True) as t:
        t.update({"weight": (np.array([1]), np.zeros((1, 4), np.float32))})
        ino = os.stat(table).st_ino
        t.rewrite({"weight": np.full((100, 4), 3, np.float32)})  # closes the table
    assert os.stat(table).st_ino != ino and not wal.log_path(table).exists()
    assert (weight(table) == 3).all()


# --------------------------------------------------------------------------------------------
# locks


def test_a_second_open_that_would_wait_forever_is_an_error(table):
    with Table.open(table):
        with Table.open(table):  # two readers: fine
            pass
        r = invoke("freeze", table)  # the same thread, for writing
        assert_single_error_line(r, str(table), "already open for reading in this thread")
    with Table.open(table, write=True):
        for write in (False, True):
            with pytest.raises(EmbtoolError, match="already open for writing in this thread"):
                Table.open(table, write=write)
    with Table.open(table, write=True):  # the refused opens left no lock behind
        pass


def test_another_thread_waits_for_the_lock(table):
    done = threading.Event()

    def writer():
        with Table.open(table, write=True) as t:
            t.update(metadata={"test.by": "thread"})
        done.set()

    with Table.open(table):
        th = threading.Thread(target=writer)
        th.start()
        assert not done.wait(0.3)  # blocked while this thread reads
    th.join(10)
    assert done.is_set() and st.read_header(table).metadata["test.by"] == "thread"


# --------------------------------------------------------------------------------------------
# temporary files


def _temp_name(target, boot, pid, legacy=False):
    if legacy:
        return target.with_name(f".{target.name}.ab12cd34.tmp")
    return target.with_name(f".{target.name}.{boot}-{pid}.0badf00d.tmp")


def test_abandoned_temporary_files_are_removed_by_the_next_writer(table, tmp_path):
    boot = vfs.current().boot_id()[:4].hex() or "00000000"
    dead = _temp_name(table, boot, 2**22 + 12345)  # no such process
    old_boot = _temp_name(tmp_path / "other.txt", "00000001", os.getpid())
    legacy_old = _temp_name(table, None, None, legacy=True)
    for p in (dead, old_boot, legacy_old):
        p.write_bytes(b"partial")
    os.utime(legacy_old, (time.time() - 2 * st.LEGACY_TEMP_AGE,) * 2)
    alive_fd, alive = st.create_temp(table)  # this process writes it, and holds its lock
    young = table.with_name(f".{table.name}.aaaa1111.tmp")
    young.write_bytes(b"maybe still written by an older embtool")
    try:
        assert invoke("freeze", table).code == 0
        left = sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name)
        assert left == sorted([alive.name, young.name])
    finally:
        os.close(alive_fd)


def test_a_failed_whole_file_write_leaves_nothing_behind(table, tmp_path):
    class Boom(Exception):
        pass

    def chunks():
        yield np.zeros((10, 4), np.float32)
        raise Boom()

    with pytest.raises(Boom):
        st.write_file(tmp_path / "new.safetensors", {"w": st.ChunkedTensor("F32", (100, 4), chunks)}, {})
    with Table.open(table, write=True) as t, pytest.raises(Boom):
        t.rewrite({"weight": st.ChunkedTensor("F32", (100, 4), chunks)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]


# --------------------------------------------------------------------------------------------
# sizes


def test_a_file_too_large_for_any_disk_is_refused_before_writing(tmp_path):
    def never():
        raise AssertionError("no byte may be produced")
        yield

    target = tmp_path / "huge.safetensors"
    header = len(st.encode_header([st.TensorInfo("weight", "F32", (2**63, 4), 0, 2**67)], {}))
    with pytest.raises(EmbtoolError, match=f"writing it needs {2**67 + header:,} bytes, more than a file"):
        st.write_file(target, {"weight": st.ChunkedTensor("F32", (2**63, 4), never)}, {})
    assert list(tmp_path.iterdir()) == []


def _disk_with_free_blocks(monkeypatch, blocks):
    real = os.statvfs

    class Full:
        def __init__(self, path):
            s = real(path)
            self.f_frsize, self.f_blocks, self.f_bavail = s.f_frsize, s.f_blocks, blocks

    monkeypatch.setattr(os, "statvfs", Full)


def test_free_space_is_checked_before_writing(tmp_path, monkeypatch):
    free = 10 * os.statvfs(tmp_path).f_frsize
    _disk_with_free_blocks(monkeypatch, 10)
    r = invoke("init", tmp_path / "t.safetensors", "-n", "1000", "-d", "64")
    assert_single_error_line(r, "t.safetensors", "needs 260,096 bytes (254.0 KiB)", f"has {free:,} bytes")
    assert list(tmp_path.iterdir()) == []


def test_the_log_checks_free_space_too(table, monkeypatch):
    before = table.read_bytes()
    _disk_with_free_blocks(monkeypatch, 0)
    with Table.open(table, write=True) as t, pytest.raises(EmbtoolError, match="logging the transaction needs"):
        t.update({"weight": (np.array([1]), np.zeros((1, 4), np.float32))})
    monkeypatch.undo()
    assert table.read_bytes() == before


def test_freeze_unfreeze_and_checkpoint_never_import_numpy(table):
    """Small commands stay small: header changes, their log and its checkpoint are numpy-free."""
    import subprocess
    import sys

    code = ("import sys\nfrom embtool.cli import run\n"
            f"for args in (['freeze', {str(table)!r}], ['unfreeze', {str(table)!r}], ['checkpoint', {str(table)!r}]):\n"
            "    assert run(args) == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'numba')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
