"""The write-ahead log of a group of files: its format, and reading it back.

``NAME-wal`` beside the group's primary file ``NAME`` holds the transactions committed since the
last checkpoint, as redo records of whole rows (``embtool.store`` writes and replays it; the
design, with its invariants and the recovery procedure, is in that module's docstring and in
docs/design.md).  All integers are little-endian.

* bytes 0-511, the header, written once when the log is created and synced before any frame:
  ``b"EMBTWAL1"``, u32 format version (1), u32 offset of the first frame (1024), 8 random bytes
  (the salt: frames of an earlier log that a lost truncation left behind do not carry it), u32
  CRC-32 of the preceding 28 bytes.
* bytes 512-1023, the applied mark, rewritten (never synced) after each transaction has been
  applied to the files: ``b"EMBTMARK"``, the salt, u64 end of the last applied frame, the 16-byte
  boot id of the machine that applied it, u32 CRC-32 of the preceding 40 bytes.
* frames from byte 1024, one per transaction, each 8-byte aligned: ``b"EMBTFRM1"``, the salt, u64
  frame length (all of it), u32 number of records, u32 0; the records; u32 CRC-32 (seeded with
  nothing, over the frame so far) and u32 0.  A frame is committed when it is complete and its
  checksum holds; the first frame that is not ends the log.
* a record: u32 kind, u32 name length, the member's name (UTF-8, relative to the primary's
  folder) padded to 8 bytes, then by kind
  - 1 ROWS: u64 size of the file, u64 file offset of row 0, u64 row length, u64 n, n i64 row numbers, the n
    rows back to back (padded to 8 bytes);
  - 2 REPLACE: u32 name length, u32 0, the name of a complete temporary file that replaces the
    member (padded to 8 bytes);
  - 3 REMOVE: u64 size of the file.

The size of the file a record is about is a check, not an identity (a copied folder must replay):
records whose file has another size are about a file that was replaced outside embtool since.
"""
from __future__ import annotations

import os
import struct
import sys
import zlib
from dataclasses import dataclass

MAGIC, MARK_MAGIC, FRAME_MAGIC = b"EMBTWAL1", b"EMBTMARK", b"EMBTFRM1"
VERSION = 1
MARK_AT = 512
FRAMES_AT = 1024
ROWS, REPLACE, REMOVE = 1, 2, 3
_FRAME_HEAD = struct.Struct("<8s8sQII")
_HEADER = struct.Struct("<8sII8s")
_MARK = struct.Struct("<8s8sQ16s")


def _np():
    import numpy

    return numpy


def _int64s(view):
    """Little-endian int64s as a sequence (a zero-copy view on little-endian machines)."""
    if sys.byteorder == "little":
        return memoryview(view).cast("B").cast("q")
    return _np().frombuffer(view, "<i8").astype("=i8")


def log_path(primary):
    return primary.with_name(primary.name + "-wal")


@dataclass
class Rows:
    """Rows ``rows`` (i64) of the file ``member`` (of ``size`` bytes), each ``row_bytes`` long
    starting at file offset ``base + row * row_bytes``, become ``data`` (the rows back to back)."""
    member: str
    size: int
    base: int
    row_bytes: int
    rows: object  # numpy int64 array, or a sequence of ints
    data: object  # bytes-like

    def encoded_size(self) -> int:
        return 32 + 8 * len(self.rows) + _pad8(len(self.rows) * self.row_bytes)


@dataclass
class Replace:
    """The complete temporary file ``temp`` is renamed over ``member`` (created or replaced)."""
    member: str
    temp: str

    def encoded_size(self) -> int:
        return 8 + _pad8(len(self.temp.encode()))


@dataclass
class Remove:
    """The file ``member`` (of ``size`` bytes) is removed."""
    member: str
    size: int

    def encoded_size(self) -> int:
        return 8


def _pad8(n: int) -> int:
    return -(-n // 8) * 8


def _name(s: str) -> list:
    raw = s.encode("utf-8")
    return [raw, b"\0" * (_pad8(len(raw)) - len(raw))]


# --------------------------------------------------------------------------------------------
# Writing


def encode_header(salt: bytes) -> bytes:
    """The first ``FRAMES_AT`` bytes of a new log: the header and an empty applied mark."""
    head = _HEADER.pack(MAGIC, VERSION, FRAMES_AT, salt)
    return (head + struct.pack("<I", zlib.crc32(head))).ljust(FRAMES_AT, b"\0")


def encode_mark(salt: bytes, applied_end: int, boot: bytes) -> bytes:
    body = _MARK.pack(MARK_MAGIC, salt, applied_end, boot.ljust(16, b"\0"))
    return body + struct.pack("<I", zlib.crc32(body))


def frame_length(records: list) -> int:
    return _FRAME_HEAD.size + 8 + sum(8 + _pad8(len(r.member.encode())) + r.encoded_size() for r in records)


def encode_frame(salt: bytes, records: list) -> tuple[list, int]:
    """The buffers of one frame (written back to back) and its length."""
    length = frame_length(records)
    parts: list = [_FRAME_HEAD.pack(FRAME_MAGIC, salt, length, len(records), 0)]
    for r in records:
        kind = ROWS if isinstance(r, Rows) else REPLACE if isinstance(r, Replace) else REMOVE
        parts += [struct.pack("<II", kind, len(r.member.encode())), *_name(r.member)]
        if kind == ROWS:
            n = len(r.rows)
            data = memoryview(r.data).cast("B")
            rows = (_np().ascontiguousarray(r.rows, "<i8").view("u1") if hasattr(r.rows, "dtype")
                    else struct.pack(f"<{n}q", *r.rows))  # a header's [0]: no numpy for that
            parts += [struct.pack("<QQQQ", r.size, r.base, r.row_bytes, n), rows, data,
                      b"\0" * (_pad8(len(data)) - len(data))]
        elif kind == REPLACE:
            parts += [struct.pack("<II", len(r.temp.encode()), 0), *_name(r.temp)]
        else:
            parts.append(struct.pack("<Q", r.size))
    crc = 0
    for p in parts:
        crc = zlib.crc32(p, crc)
    parts.append(struct.pack("<II", crc, 0))
    return parts, length


# --------------------------------------------------------------------------------------------
# Reading


@dataclass
class State:
    """What the first 1 KiB of a log says: ``salt`` (None: no valid header: no frame was ever
    committed) and the applied mark (``applied_end``, ``boot``; 0 and b"" when torn)."""
    salt: bytes | None
    applied_end: int
    boot: bytes
    size: int


def read_state(fd: int) -> State:
    size = os.fstat(fd).st_size
    head = os.pread(fd, FRAMES_AT, 0)
    salt = None
    if len(head) >= _HEADER.size + 4:
        magic, version, first, s = _HEADER.unpack_from(head)
        (crc,) = struct.unpack_from("<I", head, _HEADER.size)
        if magic == MAGIC and crc == zlib.crc32(head[:_HEADER.size]):
            if version != VERSION or first != FRAMES_AT:
                from .errors import FormatError

                raise FormatError(f"write-ahead log format {version} is not supported (this embtool "
                                  f"writes version {VERSION})")
            salt = s
    applied, boot = 0, b""
    mark = head[MARK_AT:MARK_AT + _MARK.size + 4]
    if salt is not None and len(mark) == _MARK.size + 4:
        magic, msalt, end, b = _MARK.unpack_from(mark)
        (crc,) = struct.unpack_from("<I", mark, _MARK.size)
        if magic == MARK_MAGIC and msalt == salt and crc == zlib.crc32(mark[:_MARK.size]):
            applied, boot = end, b
    return State(salt, applied, boot, size)


def up_to_date(state: State, boot: bytes) -> bool:
    """Whether every committed frame has been applied to the files in this boot of the machine
    (then the files, through the page cache, are the last committed state)."""
    return (state.salt is not None and boot != b"" and state.boot == boot.ljust(16, b"\0")
            and state.applied_end == state.size)


def scan(buf, salt: bytes) -> list[tuple[int, int]]:
    """``(offset, length)`` of the committed frames of the log in ``buf`` (a bytes-like view of
    the whole file): complete, with this log's salt, and with a checksum that holds."""
    frames, pos, size = [], FRAMES_AT, len(buf)
    while pos + _FRAME_HEAD.size + 8 <= size:
        magic, fsalt, length, _, _ = _FRAME_HEAD.unpack_from(buf, pos)
        if magic != FRAME_MAGIC or fsalt != salt or length % 8 or length < _FRAME_HEAD.size + 8 \
                or pos + length > size:
            break
        crc = zlib.crc32(buf[pos:pos + length - 8])
        if struct.unpack_from("<I", buf, pos + length - 8)[0] != crc:
            break
        frames.append((pos, length))
        pos += length
    return frames


def decode(buf, offset: int) -> list:
    """The records of the (committed) frame at ``offset``; row numbers and data are views into
    ``buf`` (without numpy: a small command replaying or checkpointing a log need not import it)."""
    _, _, length, count, _ = _FRAME_HEAD.unpack_from(buf, offset)
    pos = offset + _FRAME_HEAD.size
    out = []
    for _ in range(count):
        kind, nlen = struct.unpack_from("<II", buf, pos)
        pos += 8
        member = bytes(buf[pos:pos + nlen]).decode("utf-8")
        pos += _pad8(nlen)
        if kind == ROWS:
            size, base, row_bytes, n = struct.unpack_from("<QQQQ", buf, pos)
            pos += 32
            rows = _int64s(buf[pos:pos + 8 * n])
            pos += 8 * n
            out.append(Rows(member, size, base, row_bytes, rows, buf[pos:pos + n * row_bytes]))
            pos += _pad8(n * row_bytes)
        elif kind == REPLACE:
            (tlen, _) = struct.unpack_from("<II", buf, pos)
            out.append(Replace(member, bytes(buf[pos + 8:pos + 8 + tlen]).decode("utf-8")))
            pos += 8 + _pad8(tlen)
        elif kind == REMOVE:
            out.append(Remove(member, struct.unpack_from("<Q", buf, pos)[0]))
            pos += 8
        else:
            from .errors import FormatError

            raise FormatError(f"write-ahead log record of unknown kind {kind}")
    return out
