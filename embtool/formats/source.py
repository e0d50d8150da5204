"""Opening a vector source and reading it in blocks of whole lines.

A source is a path or ``"-"`` (stdin).  Compression is recognised by its magic bytes (gzip, bzip2,
xz), so a compressed file is read correctly whatever its name, and a plain file named ``.gz`` is
read as plain text; zstd is recognised and refused.  Nothing is seeked, so stdin and compressed
streams work like files; the first block is used for format detection.
"""
from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import mmap
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embtool.errors import FormatError

#: bytes per block read (the parser's working buffer; peak memory is the table plus this).
BLOCK_SIZE = 32 << 20
#: the first block of a stream (stdin, compressed data), doubled per block up to BLOCK_SIZE.
FIRST_BLOCK = 1 << 20
#: spare bytes after the data so kernels may read a fixed window past a token's end.
PAD = 64
#: plain files from this size on are read through a map (``MappedReader``) instead of copied.
MAP_FROM = 4 << 20

_COMPRESSION = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))
_OPENERS = {"gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), "bz2": bz2.BZ2File,
            "xz": lzma.LZMAFile}
_ZSTD = b"\x28\xb5\x2f\xfd"


class Prefixed(io.RawIOBase):
    """A raw stream that first returns ``prefix``, then the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream):
        self._prefix = memoryview(prefix)
        self._stream = stream

    def readable(self):
        return True

    def readinto(self, b):
        if self._prefix:
            k = min(len(b), len(self._prefix))
            b[:k] = self._prefix[:k]
            self._prefix = self._prefix[k:]
            return k
        return self._stream.readinto(b)


class _Decompressed(io.RawIOBase):
    """A decompressing stream whose failures are one ``FormatError`` naming the file: damaged
    data (a flipped bit: CRC, checksum or stream errors) or data that ends early (a truncated
    file).  Each library reports these differently (zlib.error, gzip.BadGzipFile, OSError,
    lzma.LZMAError, EOFError), so they are translated here, in one place."""

    def __init__(self, stream, name: str, kind: str):
        self._stream = stream
        self._name = name
        self._kind = kind

    def readable(self):
        return True

    def readinto(self, b):
        try:
            return self._stream.readinto(b)
        except EOFError:
            raise FormatError(f"{self._name}: the {self._kind} data ends early (truncated "
                              "file)") from None
        except OSError as e:
            if e.errno is not None:  # the disk, not the data
                raise FormatError(f"{self._name}: cannot read ({e.strerror})") from None
            raise FormatError(f"{self._name}: damaged {self._kind} data ({e})") from None
        except (zlib.error, lzma.LZMAError, ValueError) as e:
            raise FormatError(f"{self._name}: damaged {self._kind} data ({e})") from None

    def close(self):
        self._stream.close()
        super().close()


def text_encoding(encoding: str) -> codecs.CodecInfo:
    """The codec of an ``--encoding`` name: an unknown name, or a codec that does not decode
    bytes to text (rot13, hex, base64, zip...), is a ConfigError."""
    from embtool.errors import ConfigError

    try:
        info = codecs.lookup(encoding)
    except (LookupError, ValueError):  # ValueError: a name with a NUL character
        raise ConfigError(f"unknown encoding {encoding!r}") from None
    try:  # bytes.decode refuses non-text codecs (b"" would skip the check)
        b"0".decode(info.name)
    except UnicodeError:
        pass
    except LookupError:
        raise ConfigError(f"{encoding!r} is not a text encoding (it does not decode bytes to "
                          "text)") from None
    return info


@dataclass
class Source:
    name: str                 #: used in messages ("<stdin>" for -)
    stream: object            #: decompressed binary stream (readinto)
    compression: str | None   #: "gzip", "bz2", "xz" or None
    size: int | None          #: bytes of the file on disk (None for stdin)
    _raw: object = None
    _pos: int = 0

    @property
    def plain_file(self) -> bool:
        """A regular uncompressed file: ``size`` is the size of the data."""
        return self.size is not None and self.compression is None

    def consumed(self) -> int:
        """Bytes of the underlying file (compressed bytes for compressed files) read so far."""
        if self.compression is None or self._raw is None:
            return self._pos
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return self._pos

    def close(self):
        for f in (self.stream, self._raw):
            if f is not None and f is not sys.stdin.buffer:
                try:
                    f.close()
                except Exception:  # pragma: no cover - closing is best effort
                    pass


def open_source(source) -> Source:
    """Open a path or ``"-"`` and undo compression (see module doc)."""
    if isinstance(source, (str, os.PathLike)) and str(source) == "-":
        name, raw, size = "<stdin>", sys.stdin.buffer, None
    else:
        path = Path(source)
        name = str(path)
        try:
            raw = open(path, "rb")
        except FileNotFoundError:
            raise FormatError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise FormatError(f"{name}: is a directory") from None
        except OSError as e:
            raise FormatError(f"{name}: cannot open ({e.strerror})") from None
        size = os.fstat(raw.fileno()).st_size
    head = read_fully(raw, 6)
    if head.startswith(_ZSTD):
        raise FormatError(f"{name}: zstd compression is not supported; decompress it first "
                          "(zstd -d) or pipe it to -")
    kind = next((k for magic, k in _COMPRESSION if head.startswith(magic)), None)
    prefixed = io.BufferedReader(Prefixed(head, raw), 1 << 20)
    stream = (io.BufferedReader(_Decompressed(_OPENERS[kind](prefixed), name, kind), 1 << 20)
              if kind else prefixed)
    return Source(name, stream, kind, size, raw)


def read_fully(stream, n: int) -> bytes:
    parts = []
    while n > 0:
        b = stream.read(n)
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


class BlockReader:
    """Reads a source in blocks that end at a line break (or at the end of the data).

    ``next()`` returns ``(array, n)``: ``array`` is a uint8 view of the reusable buffer (with
    ``PAD`` spare bytes after ``n``) whose first ``n`` bytes are whole lines, or ``None`` at the
    end.  A line longer than the buffer grows it.
    """

    def __init__(self, src: Source, block_size: int | None = None):
        self.max_block = block_size or BLOCK_SIZE
        # Allocating (and zeroing) a 32 MB buffer costs more than parsing a small file: a plain
        # file gets a buffer of its size; a stream starts at FIRST_BLOCK and doubles as it goes.
        if src.plain_file:
            block_size = min(self.max_block, max(src.size + 1, 1 << 16))
        else:
            block_size = min(self.max_block, FIRST_BLOCK)
        self.src = src
        self.buf = bytearray(block_size + PAD)
        self.cap = block_size
        self.filled = 0
        self.taken = 0
        self.eof = False
        self.offset = 0  #: byte offset in the data of the current block's first byte

    def _fill(self):
        view = memoryview(self.buf)
        while self.filled < self.cap and not self.eof:
            try:
                k = self.src.stream.readinto(view[self.filled:self.cap])
            except OSError as e:  # decompression errors are FormatErrors already
                raise FormatError(f"{self.src.name}: cannot read ({e.strerror or e})") from None
            if not k:
                self.eof = True
            else:
                self.filled += k
                self.src._pos += k
        view.release()

    def next(self):
        if self.taken:
            rest = self.filled - self.taken
            self.buf[:rest] = self.buf[self.taken:self.filled]
            self.offset += self.taken
            self.filled, self.taken = rest, 0
            if not self.eof and self.cap < self.max_block:  # a stream that filled a block
                self._grow(min(2 * self.cap, self.max_block))
        while True:
            self._fill()
            if self.filled == 0:
                return None
            n = self.filled if self.eof else self.buf.rfind(b"\n", 0, self.filled) + 1
            if n > 0:
                break
            self._grow(2 * self.cap)
        self.taken = n
        return np.frombuffer(self.buf, np.uint8), n

    def _grow(self, cap: int):
        grown = bytearray(cap + PAD)
        grown[:self.filled] = self.buf[:self.filled]
        self.buf, self.cap = grown, cap

    def find(self, byte: bytes, start: int, end: int) -> int:
        return self.buf.find(byte, start, end)

    def count(self, byte: bytes, start: int, end: int) -> int:
        return self.buf.count(byte, start, end)

    # -- raw mode (binary records): all buffered bytes, not whole lines ------------------------
    def raw(self):
        """``(array, filled)``: every byte read so far that is still buffered."""
        return np.frombuffer(self.buf, np.uint8), self.filled

    def refill(self, keep: int):
        """Drop ``buf[:keep]``, read more; ``(array, filled)``.  Grows the buffer when more than
        half of it is kept (a record longer than half a block)."""
        rest = self.filled - keep
        self.buf[:rest] = self.buf[keep:self.filled]
        self.offset += keep
        self.filled, self.taken = rest, 0
        if rest > self.cap // 2 or (not self.eof and self.cap < self.max_block):
            self._grow(2 * self.cap)
        self._fill()
        return np.frombuffer(self.buf, np.uint8), self.filled


class MappedReader:
    """``BlockReader.next`` and ``find`` for a plain file, without copying it: each block is a
    window of a read-only map of the file, ending at a line break as BlockReader's blocks do.

    Copying 275 MB into a buffer costs more than twice mapping it (the buffer's pages are new
    memory).  The pages of a block leave the process (not the page cache) when the next block is
    taken, so the file never adds more than a block to the resident memory.  The blocks stop
    ``PAD`` bytes short of the end of the map (reading past a mapped file's last page faults); the
    last lines are copied into a padded buffer.  As with any map, a file truncated by another
    process while it is read kills the reader (SIGBUS)."""

    def __init__(self, src: Source, block_size: int | None = None):
        self.max_block = block_size or BLOCK_SIZE
        self.src = src
        self.size = src.size
        self.map = mmap.mmap(src._raw.fileno(), self.size, access=mmap.ACCESS_READ)
        self.offset = 0  #: byte offset in the file of the current block's first byte
        self.pos = 0  #: byte offset of the next block

    def next(self):
        self._release(self.offset, self.pos)
        start = self.offset = self.pos
        if start >= self.size:
            return None
        end = min(start + self.max_block, self.size - PAD)
        k = self.map.rfind(b"\n", start, end) if end > start else -1
        if k >= 0:
            end = k + 1
        elif start + self.max_block < self.size:  # a line longer than a block
            k = self.map.find(b"\n", start + self.max_block)
            end = self.size if k < 0 else k + 1
        else:
            end = self.size
        n = end - start
        self.pos = self.src._pos = end
        if end + PAD <= self.size:
            return np.frombuffer(self.map, np.uint8, n + PAD, start), n
        arr = np.zeros(n + PAD, np.uint8)  # the last lines
        arr[:n] = np.frombuffer(self.map, np.uint8, n, start)
        return arr, n

    def _release(self, start: int, end: int):
        """Drop the map's whole pages in ``[start, end)`` from this process."""
        lo = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        hi = end // mmap.PAGESIZE * mmap.PAGESIZE
        if hi > lo and hasattr(self.map, "madvise"):
            self.map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def find(self, byte: bytes, start: int, end: int) -> int:
        k = self.map.find(byte, self.offset + start, self.offset + end)
        return k - self.offset if k >= 0 else -1

    def count(self, byte: bytes, start: int, end: int) -> int:
        """How often ``byte`` occurs in ``[start, end)`` of the current block."""
        step = 1 << 20
        return sum(self.map[self.offset + a:self.offset + min(a + step, end)].count(byte)
                   for a in range(start, end, step))
