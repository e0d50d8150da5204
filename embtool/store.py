"""safetensors files on disk: validated headers, zero-copy maps, locking, crash-safe transactions.

Why by hand instead of ``safetensors.safe_open``: its numpy API copies every tensor it returns and
cannot return BF16 at all, while embtool must open a table of any size instantly and read rows
straight from the page cache.  The format is simple (8-byte little-endian header length, a JSON
header, then the raw little-endian data), so this module parses and validates the header itself and
hands out ``numpy`` views of an ``mmap`` of the file.  Files written here are ordinary safetensors
files: ``safetensors.torch.load_file`` reads them (a test checks it).

Writing, in the manner of a database pager (the full notes, with the numbered invariants and the
recovery procedure, are in docs/design.md §4; the log's bytes in ``embtool.wal``):

* Files written together form a **group**: a primary file, its lock (``flock`` on the primary:
  shared to read, exclusive to write) and its write-ahead log ``PRIMARY-wal``.  A file joins a
  primary's group by naming it in its metadata (``embtool.primary``); any other file is its own.
* Every write is a **transaction** of one group (``Transaction``): rows and headers changed in
  place, whole new files (written beforehand to a locked temporary file beside their target),
  removals.  Its commit is one frame appended to the log and synced (one sequential write), then
  the changes applied to the files through the page cache without a sync, then the log's applied
  mark (how far, in which boot of the machine) rewritten.
* A **checkpoint** (by size, or ``embtool checkpoint``) syncs the files the log names and removes
  the log.
* **Recovery** runs under the lock, in whichever process opens a group after a crash: the frames
  not known to be applied (all of them after a restart of the machine) are applied again — they
  hold whole rows and renames, so applying one twice is applying it once — and a torn last frame,
  never applied, is cut off.
* Every write, sync, rename and unlink goes through ``embtool.vfs``, so that tests can simulate a
  power cut at each one.

The JSON header is padded with spaces (which the format allows) so that small metadata changes,
such as flipping ``frozen`` or advancing an optimizer step, are an in-place change of the header
rather than a rewrite of a multi-gigabyte file.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import mmap
import os
import re
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping

if TYPE_CHECKING:
    import numpy as np

from . import dtypes, jsontext, vfs, wal
from .config import PREFIX, Config, pick_tensor
from .errors import EmbtoolError, FormatError

MAX_HEADER = 100 * 1024 * 1024  # the safetensors reference implementation's limit
HEADER_ALIGN = 4096  # the largest tensor starts on a page boundary: aligned, mmap-friendly rows
HEADER_SLACK = 1024  # spare header bytes for in-place metadata updates
COPY_CHUNK = 64 << 20


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offset in the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    header_len: int  # N: the JSON bytes including padding

    @property
    def data_start(self) -> int:
        return 8 + self.header_len


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


#: the most bytes one array may hold (numpy's limit: the largest signed 64-bit size)
MAX_ARRAY_BYTES = 2**63 - 1


def too_large(shape, itemsize: int) -> bool:
    """Whether no array of ``shape`` can exist: numpy counts a zero-length dimension as 1 when it
    checks an array's size, so ``[2**64, 0]`` is refused although it holds no byte."""
    return _numel(max(int(d), 1) for d in shape) * itemsize > MAX_ARRAY_BYTES


def parse_header(raw: bytes, file_size: int, path) -> Header:
    """Validate the header of a safetensors file whose first bytes are ``raw``.

    Everything an untrusted or damaged file can get wrong is a one-line ``FormatError`` naming the
    file and the tensor.
    """
    if file_size < 8 or len(raw) < 8:
        raise FormatError(f"{path}: truncated safetensors file ({file_size} bytes, no header length)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER:
        raise FormatError(f"{path}: header length {n} exceeds the {MAX_HEADER}-byte safetensors limit")
    if 8 + n > file_size:
        raise FormatError(
            f"{path}: header length {n} is beyond the end of the file ({file_size} bytes); "
            "truncated or not a safetensors file")
    obj = jsontext.loads(raw[8:8 + n], f"{path}: safetensors header")
    if not isinstance(obj, dict):
        raise FormatError(f"{path}: safetensors header is not a JSON object")
    meta = obj.pop("__metadata__", None)  # null is no metadata, as for the safetensors library
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError(f"{path}: __metadata__ must map strings to strings, not "
                          f"{_shown_json(meta)}")
    data_len = file_size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, spec in obj.items():
        where = f"{path}: tensor {name[:60]!r}"
        if not isinstance(spec, dict):
            raise FormatError(f"{where}: entry is not an object")
        dtype, shape, offs = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
        if not isinstance(dtype, str) or not dtype:
            shown = repr(dtype) if isinstance(dtype, str) else _shown_json(dtype)
            raise FormatError(f"{where}: dtype {shown} is not a dtype name")
        if not isinstance(shape, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise FormatError(f"{where}: shape {_shown_json(shape)} is not a list of non-negative "
                              "integers")
        if too_large(shape, max(1, (dtypes.bits(dtype) or 8) // 8)):
            raise FormatError(f"{where}: shape {_shown_json(shape)} is too large for an array (with each "
                              f"zero-length dimension counted as 1, more than {MAX_ARRAY_BYTES} "
                              "bytes)")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise FormatError(f"{where}: data_offsets {_shown_json(offs)} is not a pair of integers")
        begin, end = offs
        if not 0 <= begin <= end:
            raise FormatError(f"{where}: data_offsets {offs} are not increasing")
        if end > data_len:
            raise FormatError(
                f"{where}: data_offsets {offs} run past the end of the data ({data_len} bytes); "
                "the file is truncated")
        need = dtypes.nbytes(dtype, shape)  # None: a dtype newer than embtool (listed, not read)
        if need is not None and need != end - begin:
            raise FormatError(
                f"{where}: dtype {dtype} and shape {shape} need {need} bytes "
                f"but data_offsets {offs} hold {end - begin}")
        tensors[name] = TensorInfo(name, dtype, tuple(shape), begin, end)
    spans = sorted((t for t in tensors.values() if t.nbytes), key=lambda t: t.begin)
    for a, b in zip(spans, spans[1:]):
        if b.begin < a.end:
            raise FormatError(f"{path}: tensors {a.name!r} and {b.name!r} overlap in the data section")
    return Header(tensors, dict(meta), n)


def _shown_json(value) -> str:
    """A JSON value shown in a message (cut short)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except RecursionError:
        return "a deeply nested value"
    return text if len(text) <= 60 else text[:57] + "..."


def encode_header(infos: Iterable[TensorInfo], metadata: Mapping[str, str], size: int | None = None) -> bytes:
    """The 8-byte length plus JSON header, padded with spaces.

    With ``size`` the JSON is padded to exactly that many bytes (an in-place update) and
    ``None`` is returned if it does not fit; otherwise it is padded with at least
    ``HEADER_SLACK`` spare bytes so that the largest tensor starts on a page boundary (the data
    section does when that is the first tensor, or when the tensors before it would not stay
    8-byte aligned).  A table's rows then start page-aligned in the file as in a map of it, and
    a page-aligned array of them is written to a new file straight from memory
    (``vfs.OS.fill``).
    """
    infos = list(infos)
    obj: dict = {}
    if metadata:
        obj["__metadata__"] = dict(metadata)
    for t in infos:
        obj[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.begin, t.end]}
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if size is None:
        largest = max(infos, key=lambda t: t.nbytes, default=None)
        base = largest.begin if largest is not None and largest.begin % 8 == 0 else 0
        total = 8 + len(text) + HEADER_SLACK + base
        size = -(-total // HEADER_ALIGN) * HEADER_ALIGN - 8 - base
    elif len(text) > size:
        return None
    return struct.pack("<Q", size) + text + b" " * (size - len(text))


def _np():
    import numpy

    return numpy


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------------------------
# Sizes: checked before any whole-file or log write


#: the largest file offset a 64-bit file system can address
MAX_FILE_BYTES = 2**63 - 1


def check_space(path, nbytes: int, what: str = "writing it") -> None:
    """An error naming ``nbytes`` unless a file of that many bytes can be written beside ``path``:
    it must fit a 64-bit file, and the free space of the file system (``statvfs``, as an
    unprivileged user sees it) where that is known."""
    path = Path(path)
    if nbytes > MAX_FILE_BYTES:
        raise EmbtoolError(f"{path}: {what} needs {nbytes:,} bytes, more than a file can hold")
    try:
        sv = os.statvfs(path.parent)
    except OSError:
        return  # not known here: the write itself will tell
    free = sv.f_bavail * sv.f_frsize
    if sv.f_blocks and nbytes > free:
        raise EmbtoolError(f"{path}: {what} needs {nbytes:,} bytes ({_human(nbytes)}) but its file "
                           f"system has {free:,} bytes ({_human(free)}) free")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Temporary files: locked by their writer, named after its boot and process


_TEMP = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<boot>[0-9a-f]{8})-(?P<pid>\d+)\.)?[A-Za-z0-9_]+\.tmp(?:\.[^./]*)?$")
#: an unlocked temporary file of an older embtool (no owner in its name) is abandoned after this
LEGACY_TEMP_AGE = 3600


def create_temp(target: Path, suffix: str = "") -> tuple[int, Path]:
    """A new temporary file beside ``target``: ``.NAME.<boot>-<pid>.<random>.tmp`` + ``suffix``,
    locked (flock) by this process for as long as the returned descriptor is open.

    That is how a later writer proves it abandoned (``clean_temps``): nobody holds its lock, and
    the process named in it is gone or ran before the last boot."""
    owner = f"{_boot_tag()}-{os.getpid()}"
    fs = vfs.current()
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{owner}.{os.urandom(4).hex()}.tmp{suffix}")
        try:
            fd = fs.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd, tmp
    raise EmbtoolError(f"{target}: could not create a temporary file beside it")  # pragma: no cover


def _boot_tag() -> str:
    """8 hex digits of the machine's boot id (zeros where it is not known)."""
    return vfs.current().boot_id()[:4].hex() or "00000000"


def _discard(path: Path) -> None:
    try:
        vfs.current().unlink(path)
    except FileNotFoundError:
        pass


def clean_temps(target: Path) -> list[Path]:
    """Remove the temporary files that killed writers left in ``target``'s folder (see
    ``create_temp``: every embtool temporary file there whose writer is provably gone, whichever
    file it was for); returns them."""
    folder = target.parent
    try:
        names = [n for n in os.listdir(folder) if n.startswith(".") and ".tmp" in n]
    except OSError:
        return []
    removed = []
    for name in names:
        m = _TEMP.match(name)
        if m is None or (m["boot"] is None and m["name"] != target.name):
            continue  # an older embtool's temporary file names no owner: only the target's own
        path = folder / name
        if _abandoned(path, m["boot"], m["pid"]):
            try:
                vfs.current().unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def _abandoned(path: Path, boot: str | None, pid: str | None) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | vfs.CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # its writer holds it
        if boot is None:
            return time.time() - os.fstat(fd).st_mtime > LEGACY_TEMP_AGE
        if boot != _boot_tag():
            return True  # written before the machine last started
        # Same boot, lock free: its writer died, or has not locked it yet (the instant between
        # creating and locking it), in which case it is alive.
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Locks: flock on the group's primary file, and a check against deadlocking this thread


_held: dict[tuple[int, int], dict[int, list]] = {}  # (dev, ino) -> {thread: [exclusive, count]}
_held_lock = threading.Lock()


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _claim(key, path, exclusive: bool) -> None:
    me = threading.get_ident()
    with _held_lock:
        mine = _held.get(key, {}).get(me)
        if mine is not None and (mine[0] or exclusive):
            held = "writing" if mine[0] else "reading"
            raise EmbtoolError(
                f"{path}: already open for {held} in this thread; close it before opening it "
                f"{'for writing' if exclusive else 'again'} (the second open would wait forever)")
        if mine is None:
            _held.setdefault(key, {})[me] = [exclusive, 1]
        else:
            mine[1] += 1


def _release(key) -> None:
    me = threading.get_ident()
    with _held_lock:
        owners = _held.get(key, {})
        mine = owners.get(me)
        if mine is not None:
            mine[1] -= 1
            if mine[1] <= 0:
                del owners[me]
        if not owners:
            _held.pop(key, None)


def lock_file(path: Path, exclusive: bool) -> tuple[int, tuple[int, int]]:
    """Open ``path`` and flock it (shared or exclusive): ``(fd, (dev, ino))``.

    After a replacement the path names a new file; a process that waited for the lock on the old
    one notices that the inode changed and starts again on the new one.  A second lock that this
    thread could never get (it holds the file already) is an error instead of a hang."""
    while True:
        fd = os.open(path, os.O_RDONLY | vfs.CLOEXEC)
        try:
            key = _identity(fd)
            _claim(key, path, exclusive)
        except BaseException:
            os.close(fd)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                cur = os.stat(path)
            except FileNotFoundError:
                cur = None
            if cur is not None and (cur.st_dev, cur.st_ino) == key:
                return fd, key
        except BaseException:
            _release(key)
            os.close(fd)
            raise
        _release(key)
        os.close(fd)
        if cur is None:
            raise FileNotFoundError(2, "No such file or directory", str(path))


def _unlock(fd: int, key) -> None:
    _release(key)
    os.close(fd)


# --------------------------------------------------------------------------------------------
# Groups: files written together under one lock and one log


def checkpoint_bytes() -> int:
    """The log size above which the next commit checkpoints first (``EMBTOOL_CHECKPOINT_BYTES``;
    0: every commit finds the previous one checkpointed)."""
    return int(os.environ.get("EMBTOOL_CHECKPOINT_BYTES", CHECKPOINT_BYTES))


#: default auto-checkpoint size of the log: about 50 sparse steps of 10k rows x 128 (SGD)
CHECKPOINT_BYTES = 256 << 20
PRIMARY_KEY = "embtool.primary"


class Closing:
    """``with x:`` closes ``x`` at the end: groups, stores and the tables over them."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Group(Closing):
    """Files that are written together: one lock (flock on the ``primary`` file) and one log
    (``PRIMARY-wal``).  A file joins its primary's group by naming it in its metadata
    (``embtool.primary``, a path relative to its folder); any other file is its own group.

    Opening takes the lock (shared to read, exclusive to write) and then, holding it, brings the
    files to their last committed state (``recover``).  ``open(path)`` maps a member under this
    lock; ``transaction()`` writes; ``checkpoint()`` makes the files durable and drops the log."""

    def __init__(self, primary, write: bool = False):
        self.primary = Path(primary)
        self.folder = self.primary.parent
        self.write = write
        self.log_path = wal.log_path(self.primary)
        self._lock = None  # (fd, key)
        self._log = None  # (fd, salt, end) while this group appends to the log
        self._acquire()
        if write:
            clean_temps(self.primary)

    # -- the lock and recovery ------------------------------------------------------------
    def _acquire(self) -> None:
        for _ in range(100):
            self._lock = lock_file(self.primary, self.write)
            try:
                if not self._needs_recovery():
                    return
                if self.write:
                    self._recover()
                    return
            except BaseException:
                self._unlock()
                raise
            # A reader found a crashed writer's work: recover under the exclusive lock (a reader
            # must not see the files before that), then take the shared lock again and re-check.
            self._unlock()
            self._lock = lock_file(self.primary, True)
            try:
                self._recover()
            except PermissionError:
                raise EmbtoolError(
                    f"{self.primary}: an interrupted write must be finished first and this process "
                    "may not write the files; open it once with write access (e.g. `embtool "
                    "checkpoint`)") from None
            finally:
                self._unlock()
        raise EmbtoolError(f"{self.primary}: writers keep crashing while it is being opened")

    def _unlock(self) -> None:
        if self._lock is not None:
            _unlock(*self._lock)
            self._lock = None

    def _needs_recovery(self) -> bool:
        if journal_path(self.primary).exists():
            return True
        try:
            fd = os.open(self.log_path, os.O_RDONLY | vfs.CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            return not wal.up_to_date(wal.read_state(fd), vfs.current().boot_id())
        finally:
            os.close(fd)

    def _recover(self) -> None:
        """Finish the committed transactions that are not (known to be) applied; drop a torn one.

        The applied mark says how far the log was applied in this boot of the machine; after a
        restart, or when it is torn, every frame since the last checkpoint is applied again (the
        records are whole rows and renames: applying one twice is applying it once)."""
        fs = vfs.current()
        self._recover_legacy_journal()
        try:
            fd = fs.open(self.log_path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            state = wal.read_state(fd)
            if state.salt is None:  # torn while being created: nothing was ever committed
                fs.unlink(self.log_path)
                return
            boot = fs.boot_id()
            end = self._replay(fd, state, boot)
            if state.size != end:
                fs.truncate(fd, end)  # a torn frame: never committed, never applied
            fs.pwrite(fd, wal.encode_mark(state.salt, end, boot), wal.MARK_AT)
        finally:
            os.close(fd)

    def _replay(self, fd: int, state, boot: bytes) -> int:
        # The records are views into the map; it closes when the last of them goes (also when
        # an exception holds them for a while), so it is not closed explicitly.
        buf = memoryview(mmap.mmap(fd, 0, access=mmap.ACCESS_READ))
        frames = wal.scan(buf, state.salt)
        end = frames[-1][0] + frames[-1][1] if frames else wal.FRAMES_AT
        same_boot = boot != b"" and state.boot == boot.ljust(16, b"\0")
        start = state.applied_end if same_boot and wal.FRAMES_AT <= state.applied_end <= end else wal.FRAMES_AT
        todo = [off for off, _ in frames if off >= start]
        if todo:
            vfs.current().sync(fd)  # what is replayed is durable before anyone reads it
            self._apply([r for off in todo for r in wal.decode(buf, off)])
        return end

    def _recover_legacy_journal(self) -> None:
        """The redo journal of embtool 0.1 (``NAME-journal``): replay it if complete, else drop."""
        jpath = journal_path(self.primary)
        if not jpath.exists():
            return
        fs = vfs.current()
        fd = fs.open(self.primary, os.O_RDWR)
        try:
            for p in _read_legacy_journal(jpath, fd) or []:
                fs.scatter(fd, p.base, p.row_bytes, p.rows, p.data)
            fs.sync(fd)
        finally:
            os.close(fd)
        fs.unlink(jpath)
        fs.sync_dir(self.folder)

    def _apply(self, records: list, fds: Mapping[str, int] | None = None,
               temps: Mapping[str, tuple[int, tuple]] | None = None) -> None:
        """Carry out ``records`` on the files (through the page cache: nothing is synced).

        Rows of a file that a later record of the same list replaces or removes are skipped
        (they were about the old file), and so are rows of a file whose size is not the one
        logged: it was replaced outside embtool and the rows are not about it."""
        fs = vfs.current()
        last = {r.member: i for i, r in enumerate(records) if not isinstance(r, wal.Rows)}
        jobs: list = []  # rows not yet written: written together (``scatter_all``) before a rename
        opened: list[int] = []
        try:
            for i, r in enumerate(records):
                path = self.folder / r.member
                if isinstance(r, wal.Rows):
                    if i < last.get(r.member, -1):
                        continue
                    fd = (fds or {}).get(r.member)
                    if fd is None:
                        try:
                            fd = fs.open(path, os.O_RDWR)
                        except FileNotFoundError:
                            continue
                        opened.append(fd)
                    if os.fstat(fd).st_size != r.size or not len(r.rows):
                        continue
                    lo, hi = vfs.bounds(r.rows)
                    if lo < 0 or r.base + (hi + 1) * r.row_bytes > r.size:
                        raise FormatError(f"{self.log_path}: a logged write falls outside {path}")
                    jobs.append((fd, r.base, r.row_bytes, r.rows, r.data))
                    continue
                fs.scatter_all(jobs)
                jobs = []
                self._apply_file_record(r, path, temps)
            fs.scatter_all(jobs)
        finally:
            for fd in opened:
                os.close(fd)

    def _apply_file_record(self, r, path: Path, temps) -> None:
        """A rename (``wal.Replace``) or a removal (``wal.Remove``) of ``_apply``."""
        fs = vfs.current()
        if isinstance(r, wal.Replace):
            temp = self.folder / r.temp
            if not temp.exists():
                return  # renamed before
            held = mine = None
            if path == self.primary:
                # Lock the new file before it takes the name (nobody may use it before we are
                # done: the old file's lock does not cover it), and let the old lock go only
                # after the rename (a waiter that gets it must find the name moved on).
                held = (temps or {}).get(r.temp)
                if held is None:
                    mine = os.open(temp, os.O_RDONLY | vfs.CLOEXEC)
                    fcntl.flock(mine, fcntl.LOCK_EX)
                    held = (mine, _identity(mine))
            try:
                fs.rename(temp, path)
            except BaseException:
                if mine is not None:
                    os.close(mine)  # a failed replay must not keep the new file locked
                raise
            if held is not None:
                self._take_lock(held)
        else:
            try:
                if os.stat(path).st_size == r.size:
                    fs.unlink(path)
            except FileNotFoundError:
                pass

    def _take_lock(self, held) -> None:
        fd, key = held
        with _held_lock:  # only an exclusive holder replaces the primary
            _held.setdefault(key, {})[threading.get_ident()] = [True, 1]
        old, self._lock = self._lock, (fd, key)
        if old is not None and old[0] != fd:
            _unlock(*old)

    # -- members ----------------------------------------------------------------------------
    def member_name(self, path) -> str:
        return os.path.relpath(Path(path), self.folder)

    def open(self, path) -> "Store":
        """Map ``path`` under this group's lock (it must name this group's primary, or be it)."""
        return Store(path, self.write, group=self)

    # -- writing ----------------------------------------------------------------------------
    def transaction(self) -> "Transaction":
        self._need_write()
        return Transaction(self)

    def _need_write(self) -> None:
        if not self.write or self._lock is None:
            raise EmbtoolError(f"{self.primary}: internal error: not open for writing")

    def _append(self, records: list) -> int:
        """Write one frame and sync it (the commit); returns the end of the log."""
        fs = vfs.current()
        check_space(self.log_path, wal.frame_length(records) + wal.FRAMES_AT, "logging the transaction")
        if self._log is None:
            self._log = self._open_log()
        fd, salt, end = self._log
        parts, length = wal.encode_frame(salt, records)
        fs.fill(fd, parts, end)  # past the log's end: nobody has read it (a large frame skips the cache)
        fs.sync(fd)
        self._log = (fd, salt, end + length)
        return end + length

    def _open_log(self):
        fs = vfs.current()
        try:
            fd = fs.open(self.log_path, os.O_RDWR)
        except FileNotFoundError:
            pass
        else:
            state = wal.read_state(fd)  # recovered when the lock was taken: valid and applied
            return fd, state.salt, state.size
        salt = os.urandom(8)
        fd = fs.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, os.stat(self.primary).st_mode & 0o666)  # who may write the table may log
            fs.pwrite(fd, wal.encode_header(salt), 0)
            fs.sync(fd)
            fs.sync_dir(self.folder)
        except BaseException:
            os.close(fd)
            raise
        return fd, salt, wal.FRAMES_AT

    def _mark_applied(self, end: int) -> None:
        fd, salt, _ = self._log
        vfs.current().pwrite(fd, wal.encode_mark(salt, end, vfs.current().boot_id()), wal.MARK_AT)

    def _close_log(self) -> None:
        if self._log is not None:
            os.close(self._log[0])
            self._log = None

    def log_size(self) -> int:
        try:
            return os.stat(self.log_path).st_size
        except FileNotFoundError:
            return 0

    def checkpoint(self) -> dict:
        """Make the files durable (fsync each file the log names, and their folders) and remove
        the log.  Returns ``{"log_bytes": ..., "transactions": ...}`` of the log it removed."""
        self._need_write()
        fs = vfs.current()
        self._close_log()
        try:
            fd = os.open(self.log_path, os.O_RDONLY | vfs.CLOEXEC)
        except FileNotFoundError:
            return {"log_bytes": 0, "transactions": 0}
        try:
            state = wal.read_state(fd)
            members, frames = {self.member_name(self.primary)}, []
            if state.salt is not None and state.size > wal.FRAMES_AT:
                buf = memoryview(mmap.mmap(fd, 0, access=mmap.ACCESS_READ))  # closes when unused
                frames = wal.scan(buf, state.salt)
                members.update(r.member for off, _ in frames for r in wal.decode(buf, off))
            folders = {self.folder}
            for name in sorted(members):
                path = self.folder / name
                try:
                    mfd = os.open(path, os.O_RDONLY | vfs.CLOEXEC)
                except FileNotFoundError:
                    continue
                try:
                    fs.sync(mfd)
                finally:
                    os.close(mfd)
                folders.add(path.parent)
            for folder in sorted(folders):
                fs.sync_dir(folder)
            # Not synced: a removal lost to a power cut brings back a log whose every frame is
            # already in the files, and replaying it changes nothing.
            fs.unlink(self.log_path)
        finally:
            os.close(fd)
        return {"log_bytes": state.size, "transactions": len(frames)}

    # -- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        self._close_log()
        self._unlock()


def checkpoint(path) -> dict:
    """``embtool checkpoint``: make a table (its group) durable and remove its log."""
    with Store(path, write=True) as s:
        return s.group.checkpoint()


# --------------------------------------------------------------------------------------------
# Transactions


@dataclass
class RowPatch:
    """``rows`` (int64) of a tensor whose first row starts at file offset ``base``, each
    ``row_bytes`` long, get ``data`` (the new rows back to back).  A plain byte range is a
    RowPatch of one row at row 0."""
    base: int
    row_bytes: int
    rows: object  # numpy int64 array or a sequence of ints
    data: object  # bytes-like, len(rows) * row_bytes

    @classmethod
    def span(cls, offset: int, data) -> "RowPatch":
        return cls(int(offset), len(data), [0], data)


class Transaction:
    """Changes to the files of one group that become visible and durable all together, or not
    at all (``with group.transaction() as tx: ...``; an exception inside discards them).

    * ``write_rows(store, tensor, rows, values)`` / ``patch(store, patches)``: rows or byte
      ranges of a mapped file, in place;
    * ``set_metadata(store, metadata)``: the header's metadata in place (False when the padded
      header has no room: replace the file instead);
    * ``replace(path, tensors, metadata)``: a whole new file (created, or replacing one);
    * ``adopt(path, temp)``: the same with a file written beforehand (``write_beside``, e.g. by a
      task of a sharded table in another process);
    * ``write_bytes(path, offset, data)``: bytes of a member that is not mapped here (a sharded
      table's index), in place;
    * ``remove(path)``.

    Stores given to ``patch``/``write_rows``/``set_metadata``/``update`` follow the commit (a
    replaced file is mapped again); another ``Store`` open on a replaced file keeps the old one.

    At the end: every new file is synced, one frame holding every change is appended to the log
    and synced (the commit), the changes are applied to the files through the page cache, and
    the mapped stores see them (``reload``).  A commit that finds the log grown past
    ``checkpoint_bytes()`` checkpoints it first."""

    def __init__(self, group: Group):
        self.group = group
        self.records: list = []
        self._temps: dict[str, tuple[int, tuple, Path]] = {}  # temp name -> (fd, key, target)
        self._stores: dict[str, Store] = {}
        self._replaced: set[str] = set()
        self._headers: set[str] = set()  # members whose header a patch changes

    # -- staging ----------------------------------------------------------------------------
    def _member(self, store: Store) -> str:
        if store.group is not self.group:
            raise EmbtoolError(f"{store.path}: internal error: not a file of this transaction's group")
        name = self.group.member_name(store.path)
        self._stores[name] = store
        return name

    def patch(self, store: Store, patches) -> None:
        """``patches``: ``RowPatch`` objects, or ``(offset, bytes)`` pairs, of ``store``'s file."""
        name = self._member(store)
        for p in patches:
            p = p if isinstance(p, RowPatch) else RowPatch.span(*p)
            if not len(p.rows) or not p.row_bytes:
                continue
            lo, hi = vfs.bounds(p.rows)
            if lo < 0 or p.base + (hi + 1) * p.row_bytes > store.size or \
                    len(memoryview(p.data).cast("B")) != len(p.rows) * p.row_bytes:
                raise EmbtoolError(f"{store.path}: internal error: patch outside the file")
            if p.base + lo * p.row_bytes < store.header.data_start:
                self._headers.add(name)
            self.records.append(wal.Rows(name, store.size, p.base, p.row_bytes, p.rows, p.data))

    def write_rows(self, store: Store, tensor: str, rows, values) -> None:
        """Rows ``rows`` of 2-D tensor ``tensor`` become ``values`` (already in its dtype)."""
        self.patch(store, store.patch_rows(tensor, rows, values))

    def set_metadata(self, store: Store, metadata: Mapping[str, str]) -> bool:
        """The file's metadata becomes ``metadata``, in place; False (nothing staged) when the
        padded header has no room for it."""
        patch = store.header_patch(metadata)
        if patch is None:
            return False
        self.patch(store, [patch])
        return True

    def update(self, store: Store, rows: Mapping[str, tuple[object, object]] | None = None,
               metadata: Mapping[str, str] | None = None) -> None:
        """Rows of some 2-D tensors (``{tensor: (row ids, values as stored)}``) and/or the whole
        metadata of ``store``'s file: in place, or, when the new metadata does not fit the
        header, as a replacement of the file."""
        rows = dict(rows or {})
        if metadata is not None and not self.set_metadata(store, metadata):
            tensors = store.raw_tensors()
            for name, (ids, values) in rows.items():
                arr = _np().array(store.array(name))
                arr[_np().asarray(ids)] = values
                tensors[name] = as_stored(arr, store.tensors[name].dtype)
            self.replace(store.path, tensors, metadata)
            return
        for name, (ids, values) in rows.items():
            self.write_rows(store, name, ids, values)

    def replace(self, path, tensors: Mapping[str, object], metadata: Mapping[str, str], *,
                progress: Callable[[int], None] | None = None) -> None:
        """Write a complete file for ``path`` now (a temporary file beside it); it takes the name
        at the commit."""
        path = Path(path)
        self.group.member_name(path)
        infos = _tensor_layout(tensors)
        header = encode_header(infos, metadata)
        clean_temps(path)
        fd, tmp = _write_temp(path, infos, header, tensors, progress)
        self._temps[tmp.name] = (fd, _identity(fd), path)
        self.records.append(wal.Replace(self.group.member_name(path), self.group.member_name(tmp)))
        self._replaced.add(self.group.member_name(path))

    def adopt(self, path, temp, fd: int | None = None) -> None:
        """``replace`` with ``temp``, a complete file written beside ``path`` beforehand
        (``write_beside``, or ``create_temp``: then ``fd`` is its locked descriptor, which the
        transaction takes over).  It is locked from now on, so that no writer takes it for
        abandoned (invariant 15), and synced at the commit as ``replace``'s files are."""
        path, temp = Path(path), Path(temp)
        if temp.parent != path.parent or not _TEMP.match(temp.name):
            raise EmbtoolError(f"{temp}: internal error: not a temporary file beside {path}")
        if fd is None:
            try:
                fd = os.open(temp, os.O_RDONLY | vfs.CLOEXEC)
            except FileNotFoundError:
                raise EmbtoolError(f"{path}: its new file {temp.name} is gone (removed as abandoned?); "
                                   "nothing was written") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise EmbtoolError(f"{path}: its new file {temp.name} is still being written by "
                                   "another process") from None
        self._temps[temp.name] = (fd, _identity(fd), path)
        self.records.append(wal.Replace(self.group.member_name(path), self.group.member_name(temp)))
        self._replaced.add(self.group.member_name(path))

    def write_bytes(self, path, offset: int, data: bytes) -> None:
        """``data`` at ``offset`` of ``path``, a member that is not mapped here (a sharded table's
        index, written in place like a padded header: its size stays)."""
        path = Path(path)
        size = os.stat(path).st_size
        if offset < 0 or offset + len(data) > size:
            raise EmbtoolError(f"{path}: internal error: patch outside the file")
        if data:
            self.records.append(wal.Rows(self.group.member_name(path), size, int(offset), len(data), [0], data))

    def remove(self, path) -> None:
        path = Path(path)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return
        self.records.append(wal.Remove(self.group.member_name(path), size))
        self._replaced.add(self.group.member_name(path))

    # -- the end ----------------------------------------------------------------------------
    def commit(self) -> None:
        g, fs = self.group, vfs.current()
        g._need_write()
        records, self.records = self.records, []
        if not records:
            self.abort()
            return
        committed = False
        try:
            for fd, _, _ in self._temps.values():
                fs.sync(fd)
            for folder in sorted({t.parent for _, _, t in self._temps.values()}):
                fs.sync_dir(folder)
            fds = {name: s.fd for name, s in self._stores.items() if s.fd >= 0}
            temps = {name: (fd, key) for name, (fd, key, _) in self._temps.items()}
            if g.log_size() > checkpoint_bytes():
                # Before this frame, not after: the pages the log's transactions dirtied have
                # had the time since to be written back, so the sync is cheap, and the log stays
                # below the limit plus one transaction.
                g.checkpoint()
            if len(records) == 1 and isinstance(records[0], wal.Replace) and g._log is None \
                    and not g.log_path.exists():
                # One new file and no log: its rename is atomic by itself.
                committed = True
                g._apply(records, fds, temps)
                fs.sync_dir(g.folder / Path(records[0].member).parent)
            else:
                end = g._append(records)
                committed = True
                g._apply(records, fds, temps)
                g._mark_applied(end)
        except BaseException:
            if not committed:
                self.abort()  # nothing happened: the new files go
            raise
        finally:
            self._close_temps()
        self._after(records)

    def _after(self, records) -> None:
        g = self.group
        for name, store in self._stores.items():
            if store.fd < 0:
                continue
            if name not in self._replaced:
                if name in self._headers:
                    store.reload()  # its header changed (rows are seen through the map as they are)
            elif (g.folder / name).exists():
                store._reopen()  # the new file at its path (under the same lock)
            else:
                store._detach()  # removed
        if g._log is not None and g.member_name(g.primary) in self._replaced:
            g.checkpoint()  # cheap: the new file is synced already, and the log was mostly about the old

    def abort(self) -> None:
        """Discard the staged changes (and the new files written for them)."""
        self.records = []
        try:
            for name in list(self._temps):
                _discard(self.group.folder / name)
        finally:
            self._close_temps()

    def _close_temps(self) -> None:
        lock_fd = self.group._lock[0] if self.group._lock else -1
        temps, self._temps = self._temps, {}
        for fd, _, _ in temps.values():
            if fd != lock_fd:  # a temporary file that became the primary holds the group's lock
                os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()


# --------------------------------------------------------------------------------------------
# Open files


class Store(Closing):
    """An open, locked, memory-mapped safetensors file.

    ``Store(path)`` locks the file's group (its own, or the primary its metadata names) shared,
    ``Store(path, write=True)`` exclusive, and recovers the group first if a writer crashed."""

    def __init__(self, path, write: bool = False, *, group: Group | None = None):
        self.path = Path(path)
        self.write = write
        self.fd = -1
        self.group = group
        self._own_group = group is None
        self._member_lock = None
        if group is not None:
            if write and not os.path.samefile(self.path, group.primary):
                # A member's own lock, besides the group's: a reader that opens the member
                # directly holds it while it looks for the member's primary (Store.__init__).
                self._member_lock = lock_file(self.path, True)
                clean_temps(self.path)
            try:
                self._open()
            except BaseException:
                self.close()
                raise
            return
        target = self.path
        for _ in range(8):
            self.group = Group(target, write)
            try:
                self._open()
                want = self._primary_named() or self.path
                if os.path.samefile(want, target):
                    return
            except BaseException:
                self.close()
                raise
            self.close()
            target = want
        raise EmbtoolError(f"{self.path}: its group's primary file keeps changing; try again")

    def _primary_named(self) -> Path | None:
        name = self.metadata.get(PRIMARY_KEY)
        if not name:
            return None
        primary = Path(os.path.normpath(self.path.parent / name))
        return primary if primary.is_file() else None

    def _open(self) -> None:
        self.fd = os.open(self.path, (os.O_RDWR if self.write else os.O_RDONLY) | vfs.CLOEXEC)
        try:
            self._load()
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise

    def _load(self) -> None:
        st = os.fstat(self.fd)
        size = self.size = st.st_size
        if size < 8:
            raise FormatError(f"{self.path}: truncated safetensors file ({size} bytes, no header length)")
        # The map's own dup() of the descriptor holds no lock: the lock is the group's.
        self.mm = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
        (n,) = struct.unpack("<Q", self.mm[:8])
        self.header = parse_header(self.mm[:8 + min(n, size - 8, MAX_HEADER)], size, self.path)

    # -- reading ------------------------------------------------------------------------------
    @property
    def tensors(self) -> dict[str, TensorInfo]:
        return self.header.tensors

    @property
    def metadata(self) -> dict[str, str]:
        return self.header.metadata

    def array(self, name: str) -> np.ndarray:
        """A read-only zero-copy view of tensor ``name`` (BF16 comes back as its uint16 bits)."""
        import numpy as np

        info = self.header.tensors[name]
        raw = dtypes.raw_numpy(info.dtype)
        if raw is None:
            raise FormatError(f"{self.path}: tensor {name!r} has dtype {info.dtype}, which embtool "
                              "lists but cannot read")
        dt = np.dtype(raw)
        count = _numel(info.shape)
        if count == 0:
            return np.zeros(info.shape, dt)
        arr = np.frombuffer(self.mm, dtype=dt, count=count, offset=self.header.data_start + info.begin)
        return arr.reshape(info.shape)

    def offset_of(self, name: str) -> int:
        """Absolute file offset of tensor ``name``'s first byte."""
        return self.header.data_start + self.header.tensors[name].begin

    def read_rows(self, name: str, rows) -> np.ndarray:
        """Rows ``rows`` (int64, ascending, distinct, in range) of the 2-D tensor ``name``, read
        with ``pread`` into a new array, one system call per run of consecutive rows.

        For a few rows scattered over a large tensor: a fault of the map would map the 16 pages
        around each row (the kernel's fault-around) and the page tables over the whole span, all
        of which are torn down again when the map goes, and that grows with the file (10k rows of
        a 2 GB tensor: 70 ms of faults and 40 ms of unmapping, against 20 ms of reads)."""
        import numpy as np

        arr = self.array(name)
        if self.fd < 0:  # mapped without its descriptor (a shard a task maps): the map it is
            return np.take(arr, np.asarray(rows, np.int64), axis=0)
        out = np.empty((len(rows), arr.shape[1]), arr.dtype)
        row_bytes = out.strides[0]
        if out.size == 0:
            return out
        rows = np.asarray(rows, np.int64)
        starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1).tolist()
        into = memoryview(out).cast("B")
        base = self.offset_of(name)
        for s, e in zip(starts, starts[1:] + [len(rows)]):
            want = (e - s) * row_bytes
            if os.preadv(self.fd, [into[s * row_bytes:e * row_bytes]], base + int(rows[s]) * row_bytes) != want:
                raise FormatError(f"{self.path}: truncated while reading tensor {name!r}")
        return out

    # -- writing ------------------------------------------------------------------------------
    def transaction(self) -> Transaction:
        """A transaction of this file's group (see ``Transaction``)."""
        self._need_write()
        return self.group.transaction()

    def patch(self, patches: list) -> None:
        """Write rows / byte ranges in place as one transaction (``RowPatch`` objects, or
        ``(offset, bytes)`` pairs)."""
        with self.transaction() as tx:
            tx.patch(self, patches)

    def patch_rows(self, name: str, rows, values) -> list:
        """The patch setting rows ``rows`` of 2-D tensor ``name`` to ``values`` (same dtype)."""
        import numpy as np

        info = self.header.tensors[name]
        row_bytes = (info.nbytes // info.shape[0]) if info.shape and info.shape[0] else 0
        rows = np.ascontiguousarray(rows, np.int64)
        values = np.ascontiguousarray(values)
        return [RowPatch(self.offset_of(name), row_bytes, rows, values.reshape(-1).view(np.uint8))]

    def header_patch(self, metadata: Mapping[str, str]):
        """A patch replacing the metadata in place, or None if the header has no room for it."""
        self._need_write()
        raw = encode_header(self.header.tensors.values(), metadata, size=self.header.header_len)
        return None if raw is None else RowPatch.span(0, raw)

    def raw_tensors(self) -> dict[str, object]:
        """Every tensor as stored (for a rewrite that keeps them): arrays, and the dtypes numpy
        has no type for as ``ChunkedTensor``s of their bits."""
        return {name: as_stored(self.array(name), info.dtype) for name, info in self.tensors.items()}

    def rewrite(self, tensors: Mapping[str, object], metadata: Mapping[str, str], *,
                progress: Callable[[int], None] | None = None) -> None:
        """Replace the whole file atomically, then close: the path names a new file, and any
        further work must open it again."""
        try:
            with self.transaction() as tx:
                tx.replace(self.path, tensors, metadata, progress=progress)
        finally:
            self.close()

    def reload(self) -> None:
        """Re-read the header after an in-place change of it."""
        self._load()

    def _reopen(self) -> None:
        """Map the file that now has this path (after a replacement under the group's lock)."""
        os.close(self.fd)
        if self._member_lock is not None:
            old, self._member_lock = self._member_lock, lock_file(self.path, True)
            _unlock(*old)
        self._open()

    def _detach(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _need_write(self) -> None:
        if not self.write:
            raise EmbtoolError(f"{self.path}: internal error: store opened read-only")

    def close(self) -> None:
        # Views handed out keep the mapping alive; closing the group releases the lock.
        self._detach()
        if self._member_lock is not None:
            _unlock(*self._member_lock)
            self._member_lock = None
        if self._own_group and self.group is not None:
            self.group.close()
            self.group = None


# --------------------------------------------------------------------------------------------
# Writing whole files


@dataclass
class ChunkedTensor:
    """A tensor produced piece by piece (e.g. a generated or parsed table larger than memory)."""
    dtype: str
    shape: tuple[int, ...]
    chunks: Callable[[], Iterator[np.ndarray]]  # yields arrays whose bytes concatenate to it


def as_stored(arr: np.ndarray, dtype: str):
    """An array of raw bits to be written as ``dtype``: itself when numpy has that type, else a
    ``ChunkedTensor`` (BF16 bits are uint16 in numpy, the F8 types uint8)."""
    if dtypes.FROM_NUMPY.get(arr.dtype.name) == dtype:
        return arr
    return ChunkedTensor(dtype, arr.shape, lambda: _tensor_chunks(arr))


def _tensor_layout(tensors: Mapping[str, object]) -> list[TensorInfo]:
    """Offsets for the tensors: widest dtype first (so every tensor is aligned), ``weight`` first
    among equals, no gaps (safetensors requires the data section to be covered exactly)."""
    import numpy as np

    specs = []
    for name, t in tensors.items():
        if isinstance(t, ChunkedTensor):
            dtype, shape = t.dtype, tuple(t.shape)
        else:
            arr = np.asarray(t)
            dtype = dtypes.FROM_NUMPY.get(arr.dtype.name)
            if dtype is None:
                raise EmbtoolError(f"internal error: cannot store dtype {arr.dtype} ({name})")
            shape = arr.shape
        specs.append((name, dtype, shape))
    for name, dtype, shape in specs:
        if dtypes.bits(dtype) is None:
            raise FormatError(f"cannot write tensor {name!r}: embtool does not know the size of "
                              f"dtype {dtype}")
    specs.sort(key=lambda s: (-dtypes.bits(s[1]), s[0] != "weight", s[0]))
    infos, pos = [], 0
    for name, dtype, shape in specs:
        n = dtypes.nbytes(dtype, shape)
        infos.append(TensorInfo(name, dtype, tuple(shape), pos, pos + n))
        pos += n
    return infos


def _tensor_chunks(t) -> Iterator[np.ndarray]:
    import numpy as np

    if isinstance(t, ChunkedTensor):
        yield from t.chunks()
        return
    arr = np.asarray(t)
    if arr.ndim == 0 or arr.size == 0:
        yield np.ascontiguousarray(arr).reshape(-1)
        return
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    step = max(1, COPY_CHUNK // max(1, flat.strides[0] if flat.strides[0] > 0 else arr.itemsize))
    for i in range(0, flat.shape[0], step):
        yield np.ascontiguousarray(flat[i:i + step])


def _write_temp(path: Path, infos: list[TensorInfo], header: bytes, tensors: Mapping[str, object],
                progress: Callable[[int], None] | None) -> tuple[int, Path]:
    """A complete (not yet synced) temporary file for ``path``, with the mode ``path`` has (or
    that a new file gets): ``(locked descriptor, temporary path)``."""
    check_space(path, len(header) + sum(i.nbytes for i in infos))
    fs = vfs.current()
    fd, tmp = create_temp(path)
    try:
        fs.pwrite(fd, header, 0)
        pos = len(header)
        for info in infos:
            written = 0
            for chunk in _tensor_chunks(tensors[info.name]):
                chunk = _np().ascontiguousarray(chunk)
                if chunk.dtype.byteorder == ">":
                    chunk = chunk.astype(chunk.dtype.newbyteorder("<"))
                if chunk.nbytes:  # rows of width 0 hold no bytes (and no buffer to cast)
                    fs.fill(fd, chunk, pos)
                pos += chunk.nbytes
                written += chunk.nbytes
                if progress:
                    progress(chunk.nbytes)
            if written != info.nbytes:
                raise EmbtoolError(f"internal error: tensor {info.name!r} produced {written} bytes, "
                                   f"expected {info.nbytes}")
        os.fchmod(fd, _target_mode(path))
    except BaseException:
        os.close(fd)
        _discard(tmp)
        raise
    return fd, tmp


def write_file(path, tensors: Mapping[str, object], metadata: Mapping[str, str], *,
               progress: Callable[[int], None] | None = None) -> None:
    """Write a complete safetensors file atomically: a temporary file beside it, synced, renamed
    over it.  An existing file is replaced under its group's exclusive lock, as a transaction
    (so that its log, if any, stays consistent).

    ``tensors`` maps names to arrays (numpy, little-endian) or ``ChunkedTensor``s; BF16 data is
    given as a ``ChunkedTensor`` of uint16 bits.  The size is checked before anything is written.
    """
    path = Path(path)
    if path.exists():
        with Group(path, write=True) as g:
            with g.transaction() as tx:
                tx.replace(path, tensors, metadata, progress=progress)
        return
    fs = vfs.current()
    infos = _tensor_layout(tensors)
    header = encode_header(infos, metadata)
    clean_temps(path)
    fd, tmp = _write_temp(path, infos, header, tensors, progress)
    try:
        fs.sync(fd)
        log = wal.log_path(path)
        if log.exists():
            fs.unlink(log)  # the log of a file removed since: it is about no file now
        fs.rename(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    finally:
        os.close(fd)
    fs.sync_dir(path.parent)


def write_beside(path, tensors: Mapping[str, object], metadata: Mapping[str, str]) -> Path:
    """A complete, synced file for ``path`` under a temporary name beside it, for a transaction of
    ``path``'s group to ``adopt`` (perhaps in another process: a task of a sharded table writes
    its shard's new file so).  Its lock is released on return; it stays safe from ``clean_temps``
    while this process lives, and the transaction locks it again."""
    path = Path(path)
    infos = _tensor_layout(tensors)
    fd, tmp = _write_temp(path, infos, encode_header(infos, metadata), tensors, None)
    try:
        vfs.current().sync(fd)
    except BaseException:
        _discard(tmp)
        raise
    finally:
        os.close(fd)
    return tmp


def _target_mode(path: Path) -> int:
    """Permissions for a file replacing ``path``: those of the file replaced, else 0666 minus the
    umask as for any new file (mkstemp's temporary files are 0600)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def replace_atomically(path, write: Callable[[str], None]) -> None:
    """Make an output file (not a table) appear whole or not at all: ``write(tmp)`` writes a
    temporary file in the same folder (keeping the last suffix, so ``.gz`` still compresses), which
    is then renamed over ``path``; on any failure the temporary file is removed."""
    replace_all_atomically([(path, write)])


def replace_all_atomically(outputs: Iterable[tuple[object, Callable[[str], None]]]) -> None:
    """The outputs of one command, all written or none: each ``write(tmp)`` fills a temporary file
    beside its path (``create_temp``: locked while it is written, so a later writer can prove it
    abandoned), and only when every one is complete are they renamed into place.  A failure (a
    missing folder, a full disk, bad data) removes every temporary file and leaves every path as it
    was; errors name the output path, never a temporary name.  (Only a kill in the microseconds
    between two renames can leave some renamed and the others not.)"""
    fs = vfs.current()
    temps: list[tuple[int, Path, Path]] = []
    try:
        for path, write in outputs:
            path = Path(path)
            if path.is_dir():
                raise EmbtoolError(f"{path}: is a directory")
            if not path.parent.is_dir():
                raise EmbtoolError(f"{path}: no such folder {str(path.parent)!r}")
            clean_temps(path)
            try:
                fd, tmp = create_temp(path, "".join(path.suffixes[-1:]))
            except OSError as exc:
                raise EmbtoolError(f"{path}: cannot create a file in {str(path.parent)!r} "
                                   f"({exc.strerror})") from None
            temps.append((fd, tmp, path))
            write(str(tmp))
            os.chmod(tmp, _target_mode(path))  # write() may have made a new file of mode 0600
        for _, tmp, path in temps:
            fs.rename(tmp, path)
    except BaseException:
        for _, tmp, _ in temps:
            _discard(tmp)
        raise
    finally:
        for fd, _, _ in temps:
            os.close(fd)


def read_header(path) -> Header:
    """The validated header of a file, without mapping or locking it (for ``info`` of any file)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) == 8:
            (n,) = struct.unpack("<Q", raw)
            raw += f.read(min(n, MAX_HEADER))
    return parse_header(raw, size, path)


# --------------------------------------------------------------------------------------------
# Metadata


def set_frozen(path, frozen: bool, tensor: str | None = None) -> bool:
    """Set a table's frozen flag (requires_grad = not frozen); returns whether it changed.

    An in-place change of the padded header (O(1), one logged transaction); a file without room
    in its header (one not written by embtool) is rewritten once, atomically."""
    with Store(path, write=True) as s:
        name = pick_tensor(s.header, tensor, path, write=True)
        cfg = Config.from_metadata(s.metadata, s.tensors[name].shape[0], path)
        if cfg.frozen == frozen and PREFIX + "format_version" in s.metadata:
            return False
        meta = {**s.metadata, **dataclasses.replace(cfg, frozen=frozen).to_metadata()}
        with s.transaction() as tx:
            if not tx.set_metadata(s, meta):
                tx.replace(s.path, s.raw_tensors(), meta)
    return True


# --------------------------------------------------------------------------------------------
# embtool 0.1's redo journal, still recovered


JOURNAL_MAGIC = b"EMBTJNL2"


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + "-journal")


def _read_legacy_journal(jpath: Path, fd: int):
    """The patches of a complete journal for the file open as ``fd``, or None if torn/foreign.
    Format: magic, u64 dev, u64 ino, u64 count, then per patch u64 base, u64 row length, u64 n,
    n i64 rows, the rows; a BLAKE2b-256 of all that at the end."""
    import hashlib

    try:
        blob = jpath.read_bytes()
    except FileNotFoundError:
        return None
    head = len(JOURNAL_MAGIC) + 24
    if len(blob) < head + 32 or not blob.startswith(JOURNAL_MAGIC):
        return None
    body, digest = memoryview(blob)[:-32], blob[-32:]
    if hashlib.blake2b(body, digest_size=32).digest() != digest:
        return None
    dev, ino, count = struct.unpack_from("<QQQ", body, len(JOURNAL_MAGIC))
    if (dev, ino) != _identity(fd):
        return None  # the table was replaced since: the journal is not about this file
    patches, pos = [], head
    for _ in range(count):
        base, row_bytes, n = struct.unpack_from("<QQQ", body, pos)
        pos += 24
        patches.append(RowPatch(base, row_bytes, _np().frombuffer(body, "<i8", count=n, offset=pos),
                                body[pos + 8 * n:pos + 8 * n + n * row_bytes]))
        pos += 8 * n + n * row_bytes
    return patches
