"""A simulated disk under the store's I/O layer (``embtool.vfs``), as SQLite's crash tests do it.

``CrashFS(folder, crash_at=k)`` performs the store's writes on the real files (so that every
process-level effect, the page cache, is real) and keeps, beside them, what a disk would hold:
per inode the contents its last fsync covered and the writes since; per folder the names its last
directory sync covered and the renames, creations and removals since.  At its k-th operation it
raises ``Crash`` (the power goes) and fails every later one.  ``power_cut(rng)`` then rebuilds the
folder as the disk could hold it after the restart:

* each write not covered by an fsync is lost, kept, or torn: kept only for some of the 512-byte
  sectors it covers;
* of the namespace operations since the last directory sync, a prefix survives (file systems
  such as ext4 journal their metadata in order).

Inode numbers survive (hard links under ``FOLDER.inodes`` keep every inode alive), as they do on a
real disk, so the store's identity checks see what they would see after a reboot.  A new
``CrashFS`` with another boot id plays the restarted machine.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from embtool import vfs

SECTOR = 512


class Crash(Exception):
    """The simulated power cut (raised inside the store, as the machine would stop there)."""


class CrashFS(vfs.OS):
    def __init__(self, folder, *, crash_at: int | None = None, boot: bytes = b"A" * 16):
        self.folder = Path(folder).resolve()
        self.inodes = self.folder.parent / (self.folder.name + ".inodes")
        self.inodes.mkdir(exist_ok=True)
        self.crash_at = crash_at
        self.count = 0
        self.crashed = False
        self.boot = boot.ljust(16, b"\0")
        self.durable: dict[int, bytes] = {}
        self.pending: dict[int, list] = defaultdict(list)
        self.names: dict[str, int] = {}
        self.dir_ops: list[tuple] = []
        for name in os.listdir(self.folder):
            ino = self._adopt(name)
            self.names[name] = ino
            self.durable[ino] = (self.folder / name).read_bytes()

    # -- bookkeeping ------------------------------------------------------------------------
    def _adopt(self, name: str) -> int:
        ino = os.stat(self.folder / name).st_ino
        link = self.inodes / str(ino)
        if not link.exists():
            os.link(self.folder / name, link)
        return ino

    def _tick(self) -> None:
        if self.crashed:
            raise Crash("the power is off")
        self.count += 1
        if self.crash_at is not None and self.count >= self.crash_at:
            self.crashed = True
            raise Crash(f"power cut at operation {self.count}")

    def _mine(self, path) -> bool:
        return Path(path).resolve().parent == self.folder

    @staticmethod
    def _ino(fd: int) -> int:
        return os.fstat(fd).st_ino

    # -- the operations ---------------------------------------------------------------------
    def open(self, path, flags, mode=0o666):
        creating = bool(flags & os.O_CREAT) and not os.path.exists(path)
        if creating:
            self._tick()
        fd = super().open(path, flags, mode)
        if creating and self._mine(path):
            ino = self._adopt(Path(path).name)
            self.durable.setdefault(ino, b"")
            self.dir_ops.append(("link", Path(path).name, ino))
        return fd

    def pwrite(self, fd, data, offset):
        self._tick()
        parts = data if isinstance(data, list) else [data]
        blob = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
        super().pwrite(fd, blob, offset)
        self.pending[self._ino(fd)].append((offset, blob))

    def scatter(self, fd, base, row_bytes, rows, data):
        self._tick()
        data = bytes(memoryview(data).cast("B"))
        ino = self._ino(fd)
        for i, r in enumerate(rows):
            blob = data[i * row_bytes:(i + 1) * row_bytes]
            super().pwrite(fd, blob, base + int(r) * row_bytes)
            self.pending[ino].append((base + int(r) * row_bytes, blob))

    def truncate(self, fd, size):
        self._tick()
        super().truncate(fd, size)
        self.pending[self._ino(fd)].append((None, size))

    def sync(self, fd):
        self._tick()
        if not vfs.sync_enabled():
            return
        ino = self._ino(fd)
        self.durable[ino] = os.pread(fd, os.fstat(fd).st_size, 0)
        self.pending[ino] = []

    def sync_dir(self, folder):
        self._tick()
        if vfs.sync_enabled() and Path(folder).resolve() == self.folder:
            self.names = {n: os.stat(self.folder / n).st_ino for n in os.listdir(self.folder)}
            self.dir_ops = []

    def rename(self, src, dst):
        self._tick()
        super().rename(src, dst)
        self.dir_ops.append(("rename", Path(src).name, Path(dst).name))

    def unlink(self, path):
        self._tick()
        super().unlink(path)
        self.dir_ops.append(("unlink", Path(path).name))

    def boot_id(self) -> bytes:
        return self.boot

    # -- the restart ------------------------------------------------------------------------
    def power_cut(self, rng) -> dict:
        """Rebuild the folder as the disk may hold it after the cut; returns what was chosen."""
        names = dict(self.names)
        kept_ops = int(rng.integers(0, len(self.dir_ops) + 1))
        for op in self.dir_ops[:kept_ops]:
            if op[0] == "link":
                names[op[1]] = op[2]
            elif op[0] == "rename":
                if op[1] in names:
                    names[op[2]] = names.pop(op[1])
            else:
                names.pop(op[1], None)
        fates = {"lost": 0, "kept": 0, "torn": 0}
        contents = {}
        for ino in set(names.values()):
            content = bytearray(self.durable.get(ino, b""))
            for offset, blob in self.pending.get(ino, []):
                fate = ("lost", "kept", "torn")[int(rng.integers(3))]
                fates[fate] += 1
                if fate == "lost":
                    continue
                if offset is None:  # a truncation
                    del content[blob:]
                    continue
                if len(content) < offset + len(blob):
                    content.extend(b"\0" * (offset + len(blob) - len(content)))
                if fate == "kept":
                    content[offset:offset + len(blob)] = blob
                    continue
                for s in range(offset // SECTOR * SECTOR, offset + len(blob), SECTOR):
                    if rng.integers(2):
                        lo, hi = max(s, offset), min(s + SECTOR, offset + len(blob))
                        content[lo:hi] = blob[lo - offset:hi - offset]
            contents[ino] = bytes(content)
        for name in os.listdir(self.folder):
            os.unlink(self.folder / name)
        for ino, content in contents.items():
            with open(self.inodes / str(ino), "r+b") as f:
                f.truncate(0)
                f.write(content)
        for name, ino in names.items():
            os.link(self.inodes / str(ino), self.folder / name)
        return {"namespace operations kept": kept_ops, "of": len(self.dir_ops), **fates}
