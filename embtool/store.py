"""safetensors files on disk: validated headers, zero-copy maps, locking, crash-safe writes.

Why by hand instead of ``safetensors.safe_open``: its numpy API copies every tensor it returns and
cannot return BF16 at all, while embtool must open a table of any size instantly and read rows
straight from the page cache.  The format is simple (8-byte little-endian header length, a JSON
header, then the raw little-endian data), so this module parses and validates the header itself and
hands out ``numpy`` views of an ``mmap`` of the file.  Files written here are ordinary safetensors
files: ``safetensors.torch.load_file`` reads them (a test checks it).

Writes come in two kinds, both crash-safe (SIGKILL at any instant leaves the old or the new state):

* ``write_file`` writes a whole new file to a temporary file in the same folder, fsyncs it and
  renames it over the target (then fsyncs the folder).
* ``Store.patch`` changes byte ranges in place, O(k) for k rows: the new bytes are first written to
  a redo journal ``<table>-journal`` with a checksum and fsynced, then applied and fsynced, then the
  journal is removed.  Whoever opens the table next finds a complete journal (replays it: the new
  state) or a torn one (drops it: the table was never touched, the old state).

The JSON header is padded with spaces (which the format allows) so that small metadata changes,
such as flipping ``frozen`` or advancing an optimizer step, are an in-place patch of the header
rather than a rewrite of a multi-gigabyte file.

Concurrency: a writer holds ``flock(LOCK_EX)`` on the table file, a reader ``LOCK_SH`` for as long
as it reads, so readers never see a half-written row and writers are serialised (no lost update).
Because a rewrite replaces the file (new inode), a process that obtained the lock re-checks that
the path still names the file it locked, and retries otherwise.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping

if TYPE_CHECKING:
    import numpy as np

from . import dtypes
from .errors import EmbtoolError, FormatError

MAX_HEADER = 100 * 1024 * 1024  # the safetensors reference implementation's limit
HEADER_ALIGN = 4096  # data starts on a page boundary: aligned, mmap-friendly rows
HEADER_SLACK = 1024  # spare header bytes for in-place metadata updates
JOURNAL_MAGIC = b"EMBTJNL2"
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
    text = raw[8:8 + n]
    try:
        obj = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{path}: safetensors header is not a JSON object")
    meta = obj.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise FormatError(f"{path}: __metadata__ must map strings to strings")
    data_len = file_size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, spec in obj.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(spec, dict):
            raise FormatError(f"{where}: entry is not an object")
        dtype, shape, offs = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
        if not isinstance(dtype, str) or not dtype:
            raise FormatError(f"{where}: dtype {dtype!r} is not a dtype name")
        if not isinstance(shape, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise FormatError(f"{where}: shape {shape!r} is not a list of non-negative integers")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise FormatError(f"{where}: data_offsets {offs!r} is not a pair of integers")
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


def encode_header(infos: Iterable[TensorInfo], metadata: Mapping[str, str], size: int | None = None) -> bytes:
    """The 8-byte length plus JSON header, padded with spaces.

    With ``size`` the JSON is padded to exactly that many bytes (an in-place update) and
    ``None`` is returned if it does not fit; otherwise it is padded so that the data starts on a
    page boundary with at least ``HEADER_SLACK`` spare bytes.
    """
    obj: dict = {}
    if metadata:
        obj["__metadata__"] = dict(metadata)
    for t in infos:
        obj[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.begin, t.end]}
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if size is None:
        total = 8 + len(text) + HEADER_SLACK
        size = -(-total // HEADER_ALIGN) * HEADER_ALIGN - 8
    elif len(text) > size:
        return None
    return struct.pack("<Q", size) + text + b" " * (size - len(text))


def _fsync_dir(path: Path) -> None:
    if not _sync_enabled():
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Locking and journal recovery


def _open_locked(path: Path, write: bool) -> int:
    """Open ``path`` and lock it (shared for reading, exclusive for writing).

    After a rewrite the path names a new file; a process that waited for the lock on the old
    one notices that the inode changed and starts again on the new one.
    """
    flags = (os.O_RDWR if write else os.O_RDONLY) | getattr(os, "O_CLOEXEC", 0)
    while True:
        fd = os.open(path, flags)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            st = os.fstat(fd)
            try:
                cur = os.stat(path)
            except FileNotFoundError:
                cur = None
            if cur is not None and (cur.st_ino, cur.st_dev) == (st.st_ino, st.st_dev):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if cur is None:
            raise FileNotFoundError(2, "No such file or directory", str(path))


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + "-journal")


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


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

    def encode(self) -> list:
        n = len(self.rows)
        rows = self.rows.tobytes() if hasattr(self.rows, "tobytes") else struct.pack(f"<{n}q", *self.rows)
        return [struct.pack("<QQQ", self.base, self.row_bytes, n), rows, memoryview(self.data).cast("B")]


#: above this many rows a patch is applied through a writable map instead of one pwrite per row
MAP_ROWS = 64


def _read_journal(jpath: Path, fd: int):
    """The patches of a complete journal for the file open as ``fd``, or None if torn/foreign."""
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
        rows = list(struct.unpack_from(f"<{n}q", body, pos)) if n <= MAP_ROWS else \
            _np().frombuffer(body, "<i8", count=n, offset=pos)
        pos += 8 * n
        patches.append(RowPatch(base, row_bytes, rows, body[pos:pos + n * row_bytes]))
        pos += n * row_bytes
    return patches


def _apply(fd: int, patches) -> None:
    """Write the patches and make them durable.  Large row sets go through one writable shared
    map (numpy scatter) instead of a system call per row."""
    big = [p for p in patches if len(p.rows) > MAP_ROWS]
    if big:
        np = _np()
        wm = mmap.mmap(fd, os.fstat(fd).st_size, access=mmap.ACCESS_WRITE)
        try:
            whole = np.frombuffer(wm, np.uint8)
            for p in big:
                rows = np.asarray(p.rows, np.int64)
                region = whole[p.base:p.base + (int(rows.max()) + 1) * p.row_bytes]
                region.reshape(-1, p.row_bytes)[rows] = \
                    np.frombuffer(p.data, np.uint8).reshape(-1, p.row_bytes)
            del whole, region
            if not sys.platform.startswith("linux"):
                # Linux's fdatasync below writes back pages dirtied through a shared map; msync
                # of the whole map would scan every page of the file (O(table size)).
                wm.flush()
        finally:
            wm.close()
    for p in patches:
        if len(p.rows) > MAP_ROWS:
            continue
        data = memoryview(p.data).cast("B")
        for i, r in enumerate(p.rows):
            off = p.base + int(r) * p.row_bytes
            view = data[i * p.row_bytes:(i + 1) * p.row_bytes]
            while view:
                written = os.pwrite(fd, view, off)
                view, off = view[written:], off + written
    _datasync(fd)


def _sync_enabled() -> bool:
    """``EMBTOOL_SYNC=off`` skips fsync/fdatasync (as SQLite's ``synchronous=OFF``): every write
    stays atomic against a killed process (the page cache survives it), but a power loss or OS
    crash may then leave a torn table.  The default, ``full``, survives those too."""
    return os.environ.get("EMBTOOL_SYNC", "full").strip().lower() != "off"


def _datasync(fd: int) -> None:
    # fdatasync: the data and the size, not the timestamps (half the cost of fsync here)
    if _sync_enabled():
        getattr(os, "fdatasync", os.fsync)(fd)


def recover(path: Path, fd: int) -> bool:
    """Finish or discard an interrupted in-place write (caller holds the exclusive lock)."""
    jpath = journal_path(path)
    if not jpath.exists():
        return False
    patches = _read_journal(jpath, fd)
    if patches is not None:
        _apply(fd, patches)
    jpath.unlink(missing_ok=True)
    _fsync_dir(path)
    return patches is not None


# --------------------------------------------------------------------------------------------
# Open files


class Store:
    """An open, locked, memory-mapped safetensors file."""

    def __init__(self, path, write: bool = False):
        self.path = Path(path)
        self.write = write
        if not write and journal_path(self.path).exists():
            # An interrupted write: finish or discard it before reading (needs write access).
            try:
                fd = _open_locked(self.path, write=True)
            except PermissionError:
                raise EmbtoolError(
                    f"{self.path}: an interrupted write left {journal_path(self.path).name}; "
                    "open the table once with write access to recover it") from None
            try:
                recover(self.path, fd)
            finally:
                os.close(fd)
        self.fd = _open_locked(self.path, write)
        try:
            if write:
                recover(self.path, self.fd)
            self._load()
        except BaseException:
            os.close(self.fd)
            raise

    def _load(self) -> None:
        size = os.fstat(self.fd).st_size
        self.size = size
        if size < 8:
            raise FormatError(f"{self.path}: truncated safetensors file ({size} bytes, no header length)")
        # Map through a second, unlocked descriptor: CPython's mmap keeps a dup() of the
        # descriptor it maps, and a dup shares the flock, which would then outlive close().
        # Holding our lock, no embtool writer can have replaced the file, but check anyway.
        map_fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            if _identity(map_fd) != _identity(self.fd):
                raise EmbtoolError(f"{self.path}: the file was replaced while being opened; try again")
            self.mm = mmap.mmap(map_fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(map_fd)
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

    # -- writing in place ---------------------------------------------------------------------
    def patch(self, patches: list) -> None:
        """Write rows / byte ranges in place, crash-safe through a redo journal (module doc).

        ``patches``: ``RowPatch`` objects, or ``(offset, bytes)`` pairs."""
        self._need_write()
        patches = [p if isinstance(p, RowPatch) else RowPatch.span(*p) for p in patches]
        patches = [p for p in patches if len(p.rows) and p.row_bytes]
        if not patches:
            return
        for p in patches:
            hi = max(p.rows) if len(p.rows) <= MAP_ROWS else int(_np().asarray(p.rows).max())
            lo = min(p.rows) if len(p.rows) <= MAP_ROWS else int(_np().asarray(p.rows).min())
            if lo < 0 or p.base + (hi + 1) * p.row_bytes > self.size or \
                    len(memoryview(p.data).cast("B")) != len(p.rows) * p.row_bytes:
                raise EmbtoolError(f"{self.path}: internal error: patch outside the file")
        dev, ino = _identity(self.fd)
        parts = [JOURNAL_MAGIC, struct.pack("<QQQ", dev, ino, len(patches))]
        for p in patches:
            parts += p.encode()
        body = b"".join(parts)
        jpath = journal_path(self.path)
        jfd = os.open(jpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for chunk in (body, hashlib.blake2b(body, digest_size=32).digest()):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(jfd, view):]
            _datasync(jfd)
        finally:
            os.close(jfd)
        _fsync_dir(self.path)
        _apply(self.fd, patches)
        jpath.unlink()
        _fsync_dir(self.path)

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

    def rewrite(self, tensors: Mapping[str, object], metadata: Mapping[str, str], *,
                progress: Callable[[int], None] | None = None) -> None:
        """Replace the whole file atomically (this store already holds the exclusive lock), then
        close: the path now names a new file, and any further work must open it again."""
        self._need_write()
        try:
            write_file(self.path, tensors, metadata, replace_locked=False, progress=progress)
        finally:
            self.close()

    def reload(self) -> None:
        """Re-read the header after an in-place header patch."""
        self._load()

    def _need_write(self) -> None:
        if not self.write:
            raise EmbtoolError(f"{self.path}: internal error: store opened read-only")

    def close(self) -> None:
        # Views handed out keep the mapping alive; closing the descriptor releases the lock.
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------------
# Writing whole files


@dataclass
class ChunkedTensor:
    """A tensor produced piece by piece (e.g. a generated or parsed table larger than memory)."""
    dtype: str
    shape: tuple[int, ...]
    chunks: Callable[[], Iterator[np.ndarray]]  # yields arrays whose bytes concatenate to it


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


def _np():
    import numpy

    return numpy


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


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


def write_file(path, tensors: Mapping[str, object], metadata: Mapping[str, str], *,
               replace_locked: bool = True, progress: Callable[[int], None] | None = None) -> None:
    """Write a complete safetensors file atomically (temporary file, fsync, rename, fsync folder).

    ``tensors`` maps names to arrays (numpy, little-endian) or ``ChunkedTensor``s; BF16 data is
    given as a ``ChunkedTensor`` of uint16 bits.  When the target exists and ``replace_locked``,
    the exclusive lock on it is held during the write so concurrent writers are serialised.
    """
    path = Path(path)
    infos = _tensor_layout(tensors)
    header = encode_header(infos, metadata)
    lock_fd = -1
    if replace_locked and path.exists():
        lock_fd = _open_locked(path, write=True)
        recover(path, lock_fd)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            _write_all(fd, header)
            for info in infos:
                written = 0
                for chunk in _tensor_chunks(tensors[info.name]):
                    chunk = _np().ascontiguousarray(chunk)
                    if chunk.dtype.byteorder == ">":
                        chunk = chunk.astype(chunk.dtype.newbyteorder("<"))
                    _write_all(fd, chunk)
                    written += chunk.nbytes
                    if progress:
                        progress(chunk.nbytes)
                if written != info.nbytes:
                    raise EmbtoolError(
                        f"internal error: tensor {info.name!r} produced {written} bytes, "
                        f"expected {info.nbytes}")
            _datasync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.chmod(tmp, _target_mode(path))
        os.replace(tmp, path)
        _fsync_dir(path)
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes[-1:]),
                               dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _target_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
