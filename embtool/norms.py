"""Row norms for cosine search: computed exactly as gensim does, and kept between queries.

Exactness.  gensim ranks by ``dot(rows, query) / norms`` with ``norms =
np.linalg.norm(rows, axis=1)`` in float32, i.e. numpy's pairwise summation of the squares;
``row_norms`` runs the same numpy operations block by block (a test checks it against
``np.linalg.norm`` for every width).

Keeping them.  Computing the norms costs more than the matrix-vector product of a query, so
``RowNorms`` keeps them, for each open table, in memory while the table is open and in a cache
file that outlives the process, under ``$EMBTOOL_CACHE_DIR/norms`` (default
``$XDG_CACHE_HOME/embtool``, i.e. ``~/.cache/embtool``; ``EMBTOOL_CACHE_DIR=off`` disables it).
The table file itself is left alone, so a model's state_dict file stays loadable with
``strict=True`` and read-only tables benefit too.  A cache entry is used only while it matches:

* the file it was computed from: device, inode, size, modification and change times (as make and
  rsync judge a file unchanged), and the tensor's name, dtype, shape and offset.  Any rewrite
  (a new inode) or in-place write by another program changes these;
* embtool's own writers delete the entries of a table, under the table's exclusive lock and
  before any row changes (``invalidate``, called by ``Table.update`` and ``Table.rewrite``), and
  entries are written only under a shared lock, after reading the rows; so an entry never
  outlives a change made through embtool, even one whose timestamp does not move, and a crash in
  the middle of a write leaves no entry behind.

Like git's "racily clean" rule, an entry is not written when the table was modified within
``RACY_NS`` of the read (a later write within the same timestamp tick would not be seen);
timestamps in whole seconds (coarse file systems) widen that window to two seconds.  A program
that rewrites rows in place through a shared memory map, outside embtool, may change bytes without
changing the modification time (the kernel updates it only at the first write to a clean page):
``EMBTOOL_CACHE_DIR=off`` is for such setups.

The same cache, under the same stamp and rules, remembers one more derived fact: that a table's
vocabulary tensors passed ``embtool.vocab.check_arrays`` (``Checked``, an entry without rows).
That check reads every word, O(words): 60 ms for 400k words, half a second for 3M, on every
command that opens the vocabulary; a table opened again unchanged skips it.

Entries are written atomically (temporary file and rename) and carry a CRC32, so a torn entry
(power loss) is detected and ignored; they are not fsynced, being derived data.  When entries are
written, those whose table is gone or replaced are removed, and the oldest go while the directory
holds more than ``MAX_CACHE_BYTES``.
"""
from __future__ import annotations

import json
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np

MAGIC = b"EMBTNRM1"
#: the cache directory never grows beyond this (the norms are 1/D of a table's size).
MAX_CACHE_BYTES = 1 << 30
#: no entry is written for a table modified this recently (git's racy-clean rule; above the
#: kernel's coarse clock tick of 1-10 ms).
RACY_NS = 50_000_000
#: rows squared at once (the squares stay in the CPU cache for their sum).
BLOCK_ROWS = 2048

f32 = np.float32


# --------------------------------------------------------------------------------------------
# Exact norms


def row_norms(rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.linalg.norm(rows, axis=1)`` of float32 rows, bit for bit: the same float32 squares,
    numpy's pairwise sum along each row and square root, in blocks of ``BLOCK_ROWS`` (one
    scratch block instead of a copy of all the squares, and ``out`` may be given)."""
    n = len(rows)
    out = np.empty(n, f32) if out is None else out
    sq = np.empty((min(n, BLOCK_ROWS), rows.shape[1]), f32)
    with np.errstate(over="ignore", invalid="ignore"):
        for lo in range(0, n, BLOCK_ROWS):
            block = rows[lo:lo + BLOCK_ROWS]
            part = np.multiply(block, block, out=sq[:len(block)])
            np.sqrt(np.add.reduce(part, axis=1), out=out[lo:lo + len(block)])
    return out


# --------------------------------------------------------------------------------------------
# The cache


def cache_dir() -> Path | None:
    """Where norms are cached, or None when ``EMBTOOL_CACHE_DIR=off``."""
    root = os.environ.get("EMBTOOL_CACHE_DIR", "").strip()
    if root.lower() in ("off", "none", "0"):
        return None
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                            "embtool")
    return Path(root) / "norms"


def _stamp(fd: int, tensor: str, info, data_offset: int) -> dict:
    st = os.fstat(fd)
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "tensor": tensor, "dtype": info.dtype,
            "shape": list(info.shape), "offset": data_offset}


def _prefix(st_dev: int, st_ino: int) -> str:
    return f"{st_dev:x}-{st_ino:x}-"


def _entry_name(stamp: dict, kind: str = "norms") -> str:
    tag = zlib.crc32(stamp["tensor"].encode("utf-8", "surrogatepass"))
    return f"{_prefix(stamp['dev'], stamp['ino'])}{tag:08x}.{kind}"


def invalidate(fd: int) -> None:
    """Forget the cached norms of the file open as ``fd`` (embtool's writers call this under
    the exclusive lock, before changing rows)."""
    root = cache_dir()
    if root is None:
        return
    st = os.fstat(fd)
    prefix = _prefix(st.st_dev, st.st_ino)
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(root / name)
            except OSError:  # gone already, or not ours to delete: its stamp still guards it
                pass


def _read_entry(path: Path, header_only: bool = False):
    """(header dict, norms or None) of a cache entry, or None if it is not a valid entry."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 4)
            if len(head) != len(MAGIC) + 4 or not head.startswith(MAGIC):
                return None
            (hlen,) = struct.unpack("<I", head[len(MAGIC):])
            text = f.read(hlen)
            header = json.loads(text)
            if header_only:
                return header, None
            data = f.read()
    except (OSError, ValueError):
        return None
    count = header.get("rows")
    if not isinstance(count, int) or len(data) != 4 * count + 4:
        return None
    crc = zlib.crc32(data[:-4], zlib.crc32(head + text))
    if struct.unpack("<I", data[-4:])[0] != crc:
        return None
    return header, np.frombuffer(data, f32, count)


def _write_entry(root: Path, stamp: dict, path: Path, norms: np.ndarray, kind: str = "norms") -> None:
    import tempfile  # only when writing: a query with cached norms does not pay for it

    header = dict(stamp, path=os.fspath(path), rows=len(norms))
    text = json.dumps(header).encode()
    text += b" " * (-(len(MAGIC) + 4 + len(text)) % 4)  # float data 4-byte aligned
    head = MAGIC + struct.pack("<I", len(text)) + text
    data = np.ascontiguousarray(norms, f32).tobytes()
    crc = zlib.crc32(data, zlib.crc32(head))
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head + data + struct.pack("<I", crc))
        os.replace(tmp, root / _entry_name(stamp, kind))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tidy(root: Path, keep: str) -> None:
    """Remove entries whose table is gone or replaced (and temporary files of writers killed
    long ago), then the least recently used while the directory holds too much."""
    entries = []
    now = time.time()
    for name in os.listdir(root):
        full = root / name
        try:
            info = full.stat()
            if name.endswith(".tmp"):
                if now - info.st_mtime > 3600:
                    full.unlink()
                continue
            if name != keep:
                header = (_read_entry(full, header_only=True) or ({},))[0]
                st = os.stat(header["path"])
                if (st.st_dev, st.st_ino) != (header["dev"], header["ino"]):
                    raise FileNotFoundError
        except (OSError, KeyError, TypeError):
            full.unlink(missing_ok=True)
            continue
        entries.append((name == keep, info.st_atime, info.st_size, full))
    total = sum(e[2] for e in entries)
    for _, _, size, full in sorted(entries):
        if total <= MAX_CACHE_BYTES:
            break
        full.unlink(missing_ok=True)
        total -= size


def _racy(stamp: dict, read_started_ns: int) -> bool:
    window = RACY_NS if stamp["mtime_ns"] % 1_000_000_000 else 2_000_000_000
    return read_started_ns - stamp["mtime_ns"] < window


class RowNorms:
    """The float32 row norms of one tensor of an open, locked safetensors file (see the module
    docstring): ``get()`` gives them if known (memory, then the cache), ``keep(norms)`` records
    norms computed from the rows, ``forget()`` drops them before the rows change."""

    def __init__(self, store, tensor: str, kind: str = "norms"):
        self.store = store
        self.tensor = tensor
        self.kind = kind  # the entry's file suffix: "norms", or a check's name (``Checked``)
        self._norms = None
        self._since = time.time_ns()  # the rows were not read before this instant

    def _stamp(self) -> dict:
        info = self.store.tensors[self.tensor]
        return _stamp(self.store.fd, self.tensor, info, self.store.offset_of(self.tensor))

    def get(self) -> np.ndarray | None:
        if self._norms is None:
            root = cache_dir()
            if root is None or self.store.fd < 0:
                return None
            stamp = self._stamp()
            got = _read_entry(root / _entry_name(stamp, self.kind))
            if got is not None and all(got[0].get(k) == v for k, v in stamp.items()):
                self._norms = got[1]
        return self._norms

    def keep(self, norms: np.ndarray) -> None:
        self._norms = norms
        root = cache_dir()
        if root is None or self.store.fd < 0:
            return
        stamp = self._stamp()
        if _racy(stamp, self._since):
            return
        try:
            _write_entry(root, stamp, Path(self.store.path).resolve(), norms, self.kind)
            _tidy(root, _entry_name(stamp, self.kind))
        except OSError:
            pass  # a cache that cannot be written (read-only home, full disk) is no error

    def forget(self) -> None:
        self._norms = None
        if self.store.fd >= 0:
            invalidate(self.store.fd)


class Checked:
    """That tensor ``tensor`` of an open, locked file (and the tensors read with it) passed the
    check ``kind``, remembered as a cache entry without rows (module docstring): ``known()`` is
    true while the file is unchanged since, ``keep()`` records a check that passed (create the
    mark before reading what is checked: its racy-clean rule starts then)."""

    def __init__(self, store, tensor: str, kind: str):
        self._entry = RowNorms(store, tensor, kind)

    def known(self) -> bool:
        return self._entry.get() is not None

    def keep(self) -> None:
        self._entry.keep(np.empty(0, f32))
