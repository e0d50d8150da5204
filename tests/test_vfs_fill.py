"""``vfs.OS.fill``: filling a new file sends the aligned middle of a large write around the page
cache (O_DIRECT) and leaves exactly the bytes ``pwrite`` would; a layer that replaces ``pwrite``
sees every byte through it."""
from __future__ import annotations

import fcntl
import os

import numpy as np
import pytest

from embtool import vfs

DIRECT = getattr(os, "O_DIRECT", 0)


@pytest.fixture
def small_direct(monkeypatch):
    """Direct writes from 8 KiB on, 4 KiB per bounce, so that a small test crosses every edge."""
    monkeypatch.setattr(vfs, "DIRECT_MIN", 8192)
    monkeypatch.setattr(vfs, "DIRECT_CHUNK", 4096)


def record_writes(monkeypatch):
    """(offset, length, written with O_DIRECT) of every system write."""
    seen = []
    real = vfs._pwrite

    def spy(fd, data, offset):
        size = sum(memoryview(p).nbytes for p in (data if isinstance(data, list) else [data]))
        seen.append((offset, size, bool(fcntl.fcntl(fd, fcntl.F_GETFL) & DIRECT)))
        real(fd, data, offset)

    monkeypatch.setattr(vfs, "_pwrite", spy)
    return seen


@pytest.mark.parametrize("offset, size", [(0, 20000), (100, 20000), (4096, 8192), (5, 12290),
                                          (10, 8000)])
def test_fill_writes_the_same_bytes_as_pwrite(tmp_path, monkeypatch, small_direct, offset, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    seen = record_writes(monkeypatch)
    fd = os.open(tmp_path / "t", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        vfs.OS().pwrite(fd, b"h" * offset, 0)
        vfs.OS().fill(fd, data, offset)
        os.lseek(fd, 0, os.SEEK_SET)
        assert os.read(fd, offset + size + 1) == b"h" * offset + data.tobytes()
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & DIRECT  # the descriptor is as it was
    finally:
        os.close(fd)
    direct = [(o, n) for o, n, d in seen if d]
    if DIRECT and (offset + size) // 4096 * 4096 - -(-offset // 4096) * 4096 >= 8192:
        assert direct and all(o % 4096 == 0 and n % 4096 == 0 for o, n in direct)
    else:
        assert not direct
    assert sum(n for _, n, _ in seen) == offset + size


@pytest.mark.parametrize("sizes", [[0, 5000, 1, 0, 9000, 3], [20000], [4096, 4096, 4096], [7] * 3000,
                                   [3, 0, 12000, 4100, 5]])
@pytest.mark.parametrize("offset", [0, 1024, 4095, 8200])
def test_fill_joins_a_list_of_buffers(tmp_path, monkeypatch, small_direct, sizes, offset):
    """A log frame arrives as a list of buffers: the bounce buffer joins them, across its chunks
    and the unaligned head and tail."""
    rng = np.random.default_rng(sum(sizes) + offset)
    parts = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    seen = record_writes(monkeypatch)
    fd = os.open(tmp_path / "t", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        vfs.OS().pwrite(fd, b"h" * offset, 0)
        vfs.OS().fill(fd, [memoryview(p) for p in parts], offset)
        assert os.pread(fd, offset + sum(sizes) + 1, 0) == b"h" * offset + b"".join(parts)
    finally:
        os.close(fd)
    assert sum(n for _, n, _ in seen) == offset + sum(sizes)
    if DIRECT and (offset + sum(sizes)) // 4096 * 4096 - -(-offset // 4096) * 4096 >= 8192:
        assert any(d for _, _, d in seen)


def test_a_layer_replacing_pwrite_sees_every_byte(tmp_path, small_direct):
    class Counting(vfs.OS):
        written = 0

        def pwrite(self, fd, data, offset):
            Counting.written += memoryview(data).nbytes
            super().pwrite(fd, data, offset)

    fd = os.open(tmp_path / "t", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        Counting().fill(fd, bytes(50000), 3)
    finally:
        os.close(fd)
    assert Counting.written == 50000


def test_a_device_refusing_the_alignment_gets_buffered_writes(tmp_path, monkeypatch, small_direct):
    real = vfs._pwrite

    def refuse_direct(fd, data, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & DIRECT:
            raise OSError(22, "Invalid argument")
        real(fd, data, offset)

    monkeypatch.setattr(vfs, "_pwrite", refuse_direct)
    data = bytes(range(256)) * 100
    fd = os.open(tmp_path / "t", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        vfs.OS().fill(fd, data, 7)
        assert os.pread(fd, len(data) + 8, 0) == bytes(7) + data
    finally:
        os.close(fd)


@pytest.mark.parametrize("offset", [0, 4096, 1000, 5000])
def test_a_page_aligned_source_goes_to_the_disk_without_the_bounce_buffer(tmp_path, monkeypatch,
                                                                          small_direct, offset):
    """Memory aligned as the file offsets are (a table's page-aligned weight written where the
    file's pages start) is written in one direct write from the array itself; the same bytes."""
    from embtool.formats.text import page_aligned

    data = page_aligned((40000 + offset % 4096,), np.uint8)[offset % 4096:]
    data[:] = np.random.default_rng(offset).integers(0, 256, data.size, dtype=np.uint8)
    seen = record_writes(monkeypatch)
    bounces = []
    real_mmap = vfs.mmap.mmap
    monkeypatch.setattr(vfs.mmap, "mmap", lambda *a, **k: bounces.append(a) or real_mmap(*a, **k))
    fd = os.open(tmp_path / "t", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        vfs.OS().fill(fd, data, offset)
        assert os.pread(fd, offset + data.size + 1, 0) == bytes(offset) + data.tobytes()
    finally:
        os.close(fd)
    direct = [(o, n) for o, n, d in seen if d]
    if DIRECT and direct:  # (a file system without O_DIRECT gets plain writes)
        lo = -(-offset // 4096) * 4096
        assert direct == [(lo, (offset + data.size) // 4096 * 4096 - lo)] and not bounces


def _scatter_jobs(tmp_path, spans):
    """A file of 64 KiB and one job of 200 rows of 16 bytes per ``(first row, step)``."""
    p = tmp_path / "f"
    p.write_bytes(bytes(65536))
    fd = os.open(p, os.O_RDWR)
    jobs = []
    for k, (first, step) in enumerate(spans):
        rows = np.arange(first, first + 200 * step, step, dtype=np.int64)
        jobs.append((fd, 0, 16, rows, np.full((200, 16), k + 1, np.uint8).tobytes()))
    return p, fd, jobs


def test_scatter_all_runs_disjoint_jobs_together_and_overlapping_ones_in_order(tmp_path, monkeypatch):
    """Jobs of many rows over disjoint ranges run on several threads at once; jobs that overlap,
    and every job under a layer that replaces ``scatter``, run one by one in order on the calling
    thread (the later one wins)."""
    import threading

    threads, meet = [], threading.Barrier(2, timeout=20)
    real = vfs.OS.scatter

    def scatter(self, *args):
        threads.append(threading.current_thread().name)
        if together and len(threads) <= 2:
            meet.wait()  # the first two jobs must be running at the same time
        real(self, *args)

    monkeypatch.setattr(vfs.OS, "scatter", scatter)
    for spans, together in (([(0, 1), (1000, 2), (2000, 1)], (os.cpu_count() or 1) > 1),
                            ([(0, 2), (1, 2)], False)):
        threads.clear()
        p, fd, jobs = _scatter_jobs(tmp_path, spans)
        try:
            vfs.OS().scatter_all(jobs)
        finally:
            os.close(fd)
        expected = np.zeros((4096, 16), np.uint8)
        for _, _, _, rows, data in jobs:
            expected[rows] = np.frombuffer(data, np.uint8).reshape(-1, 16)
        assert np.array_equal(np.frombuffer(p.read_bytes(), np.uint8).reshape(-1, 16), expected)
        assert len(threads) == len(jobs)
        assert (len(set(threads)) > 1) == together
    together = False

    class Layer(vfs.OS):
        def scatter(self, *a):
            threads.append(threading.current_thread().name)
            real(self, *a)

    threads.clear()
    p, fd, jobs = _scatter_jobs(tmp_path, [(0, 1), (1000, 2)])
    try:
        Layer().scatter_all(jobs)
    finally:
        os.close(fd)
    assert threads == [threading.current_thread().name] * 2
