"""The store's I/O layer: every write, sync, truncation, rename and unlink of a table file, of its
log and of a temporary file goes through one object, ``current()``.

Tests replace it (``using(fs)``) by one that counts the operations, stops at a chosen one as a
power cut would, and then rebuilds the files as a disk could hold them: what an fsync covered,
plus any part of the rest (SQLite's VFS and its crash tests).  Reads do not go through it: they
use ``os.pread`` and ``mmap`` on the files and see what the writes left in the page cache, which is
what every process of a running system sees.
"""
from __future__ import annotations

import contextlib
import errno
import mmap
import os
import sys
from pathlib import Path

#: above this many rows a scatter goes through one writable map instead of one pwrite per row
MAP_ROWS = 64
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: ``fill`` sends writes of at least this many bytes around the page cache (O_DIRECT)
DIRECT_MIN = 8 << 20
#: what O_DIRECT needs aligned (file offsets, lengths, memory): a page covers every device
DIRECT_ALIGN = 4096
#: bytes copied per direct write (the aligned bounce buffer)
DIRECT_CHUNK = 4 << 20


def sync_enabled() -> bool:
    """``EMBTOOL_SYNC=off`` skips every fsync/fdatasync (as SQLite's ``synchronous=OFF``): a write
    stays atomic against a killed process (the page cache survives it), but a power cut or an OS
    crash may then lose committed transactions or leave a torn table.  The default, ``full``,
    survives those too."""
    return os.environ.get("EMBTOOL_SYNC", "full").strip().lower() != "off"


class OS:
    """The real thing: system calls on the files."""

    def open(self, path, flags: int, mode: int = 0o666) -> int:
        return os.open(path, flags | CLOEXEC, mode)

    def pwrite(self, fd: int, data, offset: int) -> None:
        """Write ``data`` (bytes-like, or a list of them written back to back) at ``offset``."""
        _pwrite(fd, data, offset)

    def fill(self, fd: int, data, offset: int) -> None:
        """``pwrite`` into a region that no other descriptor or map uses yet: a temporary file
        being filled, or the end of the log, where a frame is appended under the group's lock.
        Where the system allows it, the page-aligned middle of a large write goes straight to the
        disk (O_DIRECT through an aligned bounce buffer) instead of through the page cache: on
        this kind of machine (a VM whose guest memory is backed lazily) taking fresh page-cache
        pages costs 3-6x the disk's time, and the fsync that follows has nothing left to write.
        Nobody maps such a region or has read it, so no cached page can go stale.
        Layers that replace ``pwrite`` (the tests' simulated disk) see every byte through it."""
        if type(self).pwrite is not OS.pwrite or not _fill_direct(fd, data, offset):
            self.pwrite(fd, data, offset)

    def scatter(self, fd: int, base: int, row_bytes: int, rows, data) -> None:
        """Write row ``rows[i]`` (of ``row_bytes`` bytes, the first at file offset ``base``) from
        ``data[i * row_bytes:]``.  Many rows go through one writable shared map (a numpy scatter)
        instead of a system call per row."""
        if len(rows) <= MAP_ROWS:
            data = memoryview(data).cast("B")
            for i, r in enumerate(rows):
                _pwrite(fd, data[i * row_bytes:(i + 1) * row_bytes], base + int(r) * row_bytes)
            return
        import numpy as np

        rows = np.asarray(rows, np.int64)
        first, last = bounds(rows)
        start = base + first * row_bytes
        lo = start // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY  # map only the span
        wm = mmap.mmap(fd, base + (last + 1) * row_bytes - lo, offset=lo, access=mmap.ACCESS_WRITE)
        try:
            region = np.frombuffer(wm, np.uint8)[start - lo:].reshape(-1, row_bytes)
            region[rows - first] = np.frombuffer(data, np.uint8).reshape(-1, row_bytes)
            del region
            if not sys.platform.startswith("linux"):
                # Linux's fdatasync writes back pages dirtied through a shared map; elsewhere msync
                wm.flush()
        finally:
            wm.close()

    def scatter_all(self, jobs: list) -> None:
        """``scatter(*job)`` for each job of the list.  On the real system, jobs of many rows that
        write disjoint parts of the files run at the same time, one thread per core: the numpy
        scatter releases the GIL, and two maps take their page faults in parallel (a sparse
        step's weight and state, 10k rows each: 70 ms one after the other, 45-50 ms together).
        Otherwise, and for a layer that replaces ``scatter`` (the tests' simulated disk, which
        numbers every write), they run one by one, in order."""
        big = [job for job in jobs if len(job[3]) > MAP_ROWS]
        if type(self).scatter is not OS.scatter or len(big) < 2 or not _disjoint(big):
            for job in jobs:
                self.scatter(*job)
            return
        for job in jobs:
            if len(job[3]) <= MAP_ROWS:
                self.scatter(*job)
        import threading

        pending, errors, take = iter(big), [], threading.Lock()

        def work():
            while not errors:
                with take:
                    job = next(pending, None)
                if job is None:
                    return
                try:
                    self.scatter(*job)
                except BaseException as e:  # noqa: BLE001 - re-raised by the calling thread
                    errors.append(e)

        helpers = [threading.Thread(target=work, name="embtool-scatter")
                   for _ in range(min(len(big), os.cpu_count() or 1) - 1)]
        for t in helpers:
            t.start()
        work()
        for t in helpers:
            t.join()
        if errors:
            raise errors[0]

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def sync(self, fd: int) -> None:
        # fdatasync: the data and the size, not the timestamps (half the cost of fsync here)
        if sync_enabled():
            getattr(os, "fdatasync", os.fsync)(fd)

    def sync_dir(self, folder) -> None:
        """Make the names in ``folder`` durable (a created, renamed or removed file)."""
        if not sync_enabled():
            return
        fd = os.open(folder, os.O_RDONLY | CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src, dst) -> None:
        os.replace(src, dst)

    def unlink(self, path) -> None:
        os.unlink(path)

    def boot_id(self) -> bytes:
        """16 bytes that change at every boot of the machine (b"" where unknown): page-cache
        contents written before a crash of the OS are lost, and the log must then be replayed
        from its start."""
        return _BOOT_ID


def bounds(rows) -> tuple[int, int]:
    """The smallest and largest of a sequence of row numbers (numpy only for many of them)."""
    if len(rows) > MAP_ROWS:
        import numpy as np

        a = np.asarray(rows)
        return int(a.min()), int(a.max())
    return min(rows), max(rows)


def _disjoint(jobs: list) -> bool:
    """Whether the scatters ``jobs`` write byte ranges of the files that do not overlap (else
    their order matters)."""
    spans = []
    for fd, base, row_bytes, rows, _ in jobs:
        st = os.fstat(fd)
        lo, hi = bounds(rows)
        spans.append(((st.st_dev, st.st_ino), base + lo * row_bytes, base + (hi + 1) * row_bytes))
    spans.sort()
    return all(a[0] != b[0] or a[2] <= b[1] for a, b in zip(spans, spans[1:]))


def _pwrite(fd: int, data, offset: int) -> None:
    parts = data if isinstance(data, list) else [data]
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        # one system call for a whole frame; a short write continues where it stopped
        n = os.pwritev(fd, views[:1024], offset) if len(views) > 1 else os.pwrite(fd, views[0], offset)
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


def _fill_direct(fd: int, data, offset: int) -> bool:
    """``_pwrite(fd, data, offset)`` with the aligned middle written with O_DIRECT; False (nothing
    written) where that is not possible: a small or non-contiguous write, no O_DIRECT on this
    system or file system.  ``data`` may be a list of buffers written back to back (a log frame).

    The middle goes straight from ``data`` when it is one buffer whose memory is aligned as the
    file offsets are (a page-aligned array written where the file's pages start, as a table's
    largest tensor is: ``store.encode_header``), else through the bounce buffer, which also joins
    a list: copying 120 MB into it 4 MB at a time, each write waiting for the disk, took twice as
    long as one write from the array."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return False
    views = [memoryview(p) for p in (data if isinstance(data, list) else [data])]
    if not all(v.contiguous for v in views):
        return False
    views = [v.cast("B") for v in views]
    total = sum(len(v) for v in views)
    lo = -(-offset // DIRECT_ALIGN) * DIRECT_ALIGN
    hi = (offset + total) // DIRECT_ALIGN * DIRECT_ALIGN
    if hi - lo < DIRECT_MIN:
        return False
    import fcntl

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | direct)
    except OSError:  # the file system has no O_DIRECT (tmpfs)
        return False
    if len(views) == 1 and _address(views[0]) % DIRECT_ALIGN == offset % DIRECT_ALIGN:
        try:
            _pwrite(fd, views[0][lo - offset:hi - offset], lo)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            return False  # an alignment the device refuses: nothing written
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    else:
        bounce = mmap.mmap(-1, DIRECT_CHUNK)  # page-aligned memory
        aligned = memoryview(bounce)
        try:
            pos = lo
            while pos < hi:
                n = min(DIRECT_CHUNK, hi - pos)
                at = 0
                for piece in _pieces(views, pos - offset, pos - offset + n):
                    aligned[at:at + len(piece)] = piece
                    at += len(piece)
                try:
                    _pwrite(fd, aligned[:n], pos)
                except OSError as e:
                    if e.errno != errno.EINVAL or pos != lo:
                        raise
                    return False  # an alignment the device refuses: nothing written yet
                pos += n
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            aligned.release()
            bounce.close()
    for a, b in ((offset, lo), (hi, offset + total)):
        if b > a:
            _pwrite(fd, _pieces(views, a - offset, b - offset), a)
    return True


def _pieces(views: list, start: int, stop: int) -> list:
    """The bytes ``start:stop`` of the buffers ``views`` taken back to back, as slices of them."""
    out, pos = [], 0
    for v in views:
        end = pos + len(v)
        if end > start and pos < stop:
            out.append(v[max(start, pos) - pos:min(stop, end) - pos])
        pos = end
        if pos >= stop:
            break
    return out


def _address(view: memoryview) -> int:
    """The memory address of a contiguous buffer's first byte (read-only buffers too)."""
    import numpy as np

    return np.frombuffer(view, np.uint8).__array_interface__["data"][0]


def _read_boot_id() -> bytes:
    try:
        text = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return bytes.fromhex(text.replace("-", ""))[:16]
    except (OSError, ValueError):
        return b""


_BOOT_ID = _read_boot_id()
_current: OS = OS()


def current() -> OS:
    return _current


@contextlib.contextmanager
def using(fs: OS):
    """Route the store's writes through ``fs`` for the duration (tests)."""
    global _current
    saved, _current = _current, fs
    try:
        yield fs
    finally:
        _current = saved
