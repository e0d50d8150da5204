"""GloVe and word2vec (fastText ``.vec``) text: a streaming block parser.

Each block of whole lines is cut into chunks and parsed by the ``parse`` kernels straight into the
output table (parallel over chunks with Numba).  Rows the kernels leave to us -- values outside
the exact fast path (``nan``, ``1_000``, 20-digit mantissas...) and errors -- are handled here with
Python ``float()``, so every value equals ``numpy.float32(float(token))`` (or the dtype's rounding
of ``float(token)``), as gensim computes it.  Memory: the table plus one block and per-row
bookkeeping (key bytes, line numbers).

Behaviours chosen where gensim's are accidents (docs/semantics.md §7.6):

* blank lines are skipped anywhere (reported), never rows;
* a header count larger than the rows is an error unless ``limit`` is met; a smaller one reads
  ``count`` rows as gensim does and reports (and warns about) the rows ignored after them;
* ``limit`` counts rows read from the file; duplicates dropped afterwards may leave fewer;
* one number rule (``detect.number``): a field is a number exactly when Python ``float()``
  accepts its token, which is what gensim's ``numpy.float32(str)`` does: ``1_000``, ``+1``,
  ``.5``, ``3.``, ``nan``, ``Infinity``, ``1e50`` (overflow, counted), a tab or other non-space
  whitespace around a value and non-ASCII digits are all read as gensim reads them; ``0x1p3``
  and ``1,5`` are errors, as in gensim.  The kernels decide the common spellings themselves and
  leave every other token to this rule;
* a row's key is everything before its last ``dim`` fields (GloVe 840B); but when the field just
  before the vector is itself a number (by the same rule: ``b 0.5 1 2 3 4`` and ``b nan 1 2 3 4``
  alike), the row is refused as having too many values, and an empty field (leading space, two
  spaces in a row) is refused rather than read as an empty word;
* a GloVe file's dimension is the most common field count of its first 1000 rows (see
  ``detect.infer_dim``), unless given.
"""
from __future__ import annotations

import numpy as np

from embtool.errors import FormatError
from embtool.formats.detect import LINE_WS, number
from embtool.formats.loaded import shrink
from embtool.kernels.common import EMPTY_FIELD, ERRORS, SPACED_KEY, TOO_FEW, TOO_MANY

#: bytes per parallel chunk of a block.
CHUNK = 1 << 20
#: what ``page_aligned`` aligns to (a page covers every device's direct-I/O alignment).
PAGE = 4096
#: bytes of the output table written at a time while Numba starts (``GrowingTable``).
TOUCH_PIECE = 2 << 20
_LITERALS = (b"nan", b"inf", b"infinity")


class GrowingTable:
    """A C-contiguous (rows x dim) array that grows with ``ndarray.resize`` (realloc: large
    blocks are remapped, not copied) and is shrunk to the rows used at the end (``used``).

    ``touch``: a thread starting Numba (``kernels.prepare``); while it runs, the array is written
    once, a piece at a time.  The first write to fresh memory costs a page fault per page, and
    here (a VM whose guest memory the host backs lazily) 15-600 ms for a 120 MB table, 1-30x
    the write itself; numpy's fill does not hold the GIL, so those faults are paid on the core
    the Numba start-up leaves free instead of inside the parse.  The pieces stop when Numba is
    ready: the parse's threads fault in the rest.

    ``aligned``: the table starts on a page boundary (a view of a larger buffer), as the weight
    does in a table file (``store.encode_header``), so that writing it to a new file goes
    straight from this memory to the disk (``vfs.OS.fill``), without a copy through a bounce
    buffer.  For a file whose size gave the capacity: growing it copies it once (into an
    unaligned array, which later growth remaps), and the rows left unused stay allocated."""

    def __init__(self, dim: int, dtype, capacity: int, touch=None, aligned: bool = False):
        shape = (max(capacity, 1), dim)
        self.table = page_aligned(shape, dtype) if aligned else np.empty(shape, dtype)
        if touch is not None:
            step = max(1, TOUCH_PIECE // max(1, self.table[:1].nbytes))
            for r in range(0, len(self.table), step):
                if not touch.is_alive():
                    break
                self.table[r:r + step].fill(0)

    def ensure(self, rows: int):
        if rows > len(self.table):
            grown = max(rows, int(len(self.table) * 1.5) + 1024)
            if self.table.base is not None:  # aligned: a view, which cannot be resized
                table = np.empty((grown, self.table.shape[1]), self.table.dtype)
                table[:len(self.table)] = self.table
                self.table = table
            else:
                self.table.resize((grown, self.table.shape[1]), refcheck=False)

    def used(self, rows: int) -> np.ndarray:
        """The first ``rows`` rows: the table shrunk, or a view of an aligned one."""
        return shrink(self.table, rows)


def page_aligned(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array starting on a page boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + PAGE, np.uint8)
    skip = -raw.ctypes.data % PAGE
    return raw[skip:skip + nbytes].view(dtype).reshape(shape)


def warm_up(K, dtype: str) -> None:
    """Call ``K``'s text kernels once on a one-row text, with the argument types ``TextParser``
    gives them for a table of ``dtype``: with Numba, that loads their compiled forms (a
    ``kernels.prepare`` job running on another thread while the file is opened and sized)."""
    buf = np.zeros(64, np.uint8)
    buf[:4] = np.frombuffer(b"a 1\n", np.uint8)
    bounds = np.array([0, 4], np.int64)
    lines, rows = K.count_rows(buf, bounds)
    out = np.empty((1, 1), np.float64 if dtype in ("float16", "float64") else np.float32)
    K.parse_rows(buf, bounds, np.zeros(1, np.int64), np.zeros(1, np.int64), 1, 1, out,
                 np.empty(1, np.int64), np.empty(1, np.int64), np.empty(1, np.int64),
                 np.empty(1, np.uint8))


class TextParser:
    def __init__(self, reader, name, *, dim, header_count, header_lines, limit, dtype, encoding,
                 kernels, report):
        self.reader = reader
        self.name = name
        self.header_lines = header_lines
        self.encoding = encoding
        self.dim = dim
        self.header_count = header_count
        self.limit = limit
        self.dtype = dtype
        self.report = report
        self.kernels = kernels  # the backend (``embtool.kernels.choose``)
        self.key_parts, self.len_parts, self.line_parts = [], [], []

    # -- the loop --------------------------------------------------------------------------
    def _target(self):
        """The most rows to read: the header's count and ``limit`` (None: every row)."""
        target = self.header_count
        if self.limit is not None:
            target = self.limit if target is None else min(target, self.limit)
        return target

    def allocate(self, capacity: int, touch=None, aligned: bool = False) -> GrowingTable:
        """The output table for ``capacity`` rows (fewer when the header or limit says so);
        ``touch``: faulted in now, ``aligned``: on a page boundary (``GrowingTable``)."""
        store = np.float32 if self.dtype == "bfloat16" else np.dtype(self.dtype)
        target = self._target()
        return GrowingTable(self.dim, store, capacity if target is None else min(target, capacity),
                            touch, aligned)

    def run(self, arr, n, start, line_base, grow: GrowingTable, progress=None, src=None):
        """Parse from ``arr[start:n]`` (the first block) to the end into ``grow`` (``allocate``);
        return the table."""
        rep = self.report
        target = self._target()
        done = 0
        last_line = line_base
        counting_only = False
        consumed = 0
        while arr is not None:
            bounds = self._bounds(start, n)
            lines, rows = self.kernels.count_rows(arr, bounds)
            block_rows = int(rows.sum())
            want = block_rows if target is None else max(0, min(block_rows, target - done))
            if counting_only:
                rep.ignored_rows += block_rows
            elif want:
                grow.ensure(done + want)
                ln = self._parse_block(arr, n, bounds, lines, rows, want, line_base,
                                       grow.table, done)
                last_line = int(ln[-1])
                done += want
                if want < block_rows:
                    rep.ignored_rows += block_rows - want
            line_base += int(lines.sum())
            if progress is not None:
                now = src.consumed()
                progress(now - consumed, want)
                consumed = now
            if target is not None and done >= target and not counting_only:
                if self.limit is not None and done >= self.limit:
                    rep.limit_reached = True
                    rep.ignored_rows = 0
                    break
                counting_only = True
            start = 0
            arr = None
            nxt = self.reader.next()
            if nxt is not None:
                arr, n = nxt
        else:
            last_line = line_base
        if self.header_count is not None and done < self.header_count and not rep.limit_reached:
            raise FormatError(f"{self.name}: the header says {self.header_count} rows but the "
                              f"file has {done}")
        rep.blank_lines = last_line - self.header_lines - done - rep.ignored_rows
        if rep.ignored_rows:
            rep.warnings.append(f"the header says {self.header_count} rows; {rep.ignored_rows} "
                                "more rows after them were ignored")
        return grow.used(done), done

    def _bounds(self, a, n):
        nchunks = max(1, (n - a) // CHUNK)
        bounds = [a]
        for c in range(1, nchunks):
            k = self.reader.find(b"\n", a + c * (n - a) // nchunks, n)
            bounds.append(max(n if k < 0 else k + 1, bounds[-1]))
        bounds.append(n)
        return np.array(bounds, np.int64)

    def _parse_block(self, arr, n, bounds, lines, rows, want, line_base, table, r0):
        dim = self.dim
        line0 = np.concatenate(([0], np.cumsum(lines)[:-1])).astype(np.int64)
        row0 = np.concatenate(([0], np.cumsum(rows)[:-1])).astype(np.int64)
        staging = np.empty((want, dim), np.float64) if self.dtype == "float16" else None
        out = staging if staging is not None else table[r0:r0 + want]
        ks = np.empty(want, np.int64)
        ke = np.empty(want, np.int64)
        ln = np.empty(want, np.int64)
        st = np.empty(want, np.uint8)
        parse = self.kernels.parse_rows if dim else parse_zero_width_rows
        counts = parse(arr, bounds, line0, row0, dim, want, out, ks, ke, ln, st)
        ln += line_base
        rep = self.report
        rep.crlf_lines += int(counts[0])
        rep.trailing_space_lines += int(counts[1])
        rep.spaced_keys += int(np.count_nonzero(st & SPACED_KEY))
        for r in np.flatnonzero(st != 0):
            status = int(st[r])
            if status & SPACED_KEY and self._number_ends_key(arr, int(ks[r]), int(ke[r])):
                status = TOO_MANY  # the kernels' test of the field is a fast path of the rule
            if status != SPACED_KEY:
                self._resolve_row(arr, n, int(r), status, int(ks[r]), int(ln[r]), out)
        if staging is not None:
            with np.errstate(over="ignore", invalid="ignore"):  # nan/inf and overflow are counted
                table[r0:r0 + want] = staging
            self._count_nonfinite(table[r0:r0 + want], staging, ln)
        elif self.dtype == "bfloat16":
            block = table[r0:r0 + want]
            finite = np.isfinite(block)
            round_bfloat16(block)
            self._count_nonfinite(block, np.where(finite, 0.0, block), ln)
        self._keep_keys(arr, ks, ke, ln)
        return ln

    # -- rows the kernel left to us ----------------------------------------------------------
    def _number_ends_key(self, arr, start, key_end) -> bool:
        """The field just before the vector is a number (by ``detect.number``): the row has too
        many values rather than a key with spaces."""
        key = arr[start:key_end].tobytes()
        return number(key[key.rfind(b" ") + 1:], self.encoding) is not None

    def _line(self, arr, n, start):
        end = self.reader.find(b"\n", start, n)
        return arr[start:n if end < 0 else end].tobytes().rstrip(LINE_WS)

    def _resolve_row(self, arr, n, r, status, start, line_no, out):
        line = self._line(arr, n, start)
        fields = line.split(b" ")
        where = f"{self.name}, line {line_no}"
        if status & ERRORS:
            raise FormatError(f"{where}: {self._shape_problem(line, fields, status, line_no)}")
        toks = fields[len(fields) - self.dim:]
        vals = []
        for j, tok in enumerate(toks):
            value = number(tok, self.encoding)
            if value is None:
                shown = tok[:40].decode("utf-8", "replace")
                raise FormatError(f"{where}: value {j + 1} of {self.dim} is not a number: "
                                  f"{shown!r}")
            vals.append(value)
        with np.errstate(over="ignore", invalid="ignore"):
            out[r] = vals
        bad = np.flatnonzero(~np.isfinite(out[r]))
        if bad.size:
            self.report.overflow += sum(toks[j].strip().lstrip(b"+-").lower() not in _LITERALS
                                        for j in bad)
            if self.dtype not in ("float16", "bfloat16"):  # else counted after rounding
                self.report.nonfinite += len(bad)
                self._note_nonfinite(line_no, int(bad[0]), toks[bad[0]])

    def _shape_problem(self, line, fields, status, line_no):
        if status & EMPTY_FIELD:
            return "empty field (the line starts with a space or has two spaces in a row)"
        nvals = len(fields) - 1
        if status & TOO_FEW:
            hint = ""
            if b"\t" in line:
                hint = " (fields must be separated by single spaces, not tabs)"
            elif line_no == 1 and nvals == 1:
                hint = " (is line 1 a word2vec header? use format='word2vec')"
            return f"{nvals} values, expected {self.dim} (ragged row){hint}"
        return (f"{nvals} values after the word, expected {self.dim} (a row with too many values; "
                "the field before the vector is a number)")

    def _note_nonfinite(self, line_no, field, token):
        if self.report.first_nonfinite is None:
            shown = bytes(token)[:40].decode("utf-8", "replace")
            self.report.first_nonfinite = f"line {line_no}, value {field + 1}: {shown!r}"

    def _count_nonfinite(self, block, source, ln):
        bad = ~np.isfinite(block)
        if bad.any():
            self.report.nonfinite += int(bad.sum())
            self.report.overflow += int((bad & np.isfinite(source)).sum())
            r, j = np.argwhere(bad)[0]
            self._note_nonfinite(int(ln[r]), int(j), str(block[r, j]).encode())

    def _keep_keys(self, arr, ks, ke, ln):
        self.key_parts.append(gather_spans(arr, ks, ke))
        self.len_parts.append(ke - ks)
        self.line_parts.append(ln)

    def keys(self):
        """``(key bytes, offsets, line numbers)`` of every parsed row."""
        return join_spans(self.key_parts, self.len_parts, self.line_parts)


def parse_zero_width_rows(buf, bounds, line0, row0, dim, max_rows, out, key_start, key_end,
                          line_no, status):
    """``parse_rows`` for rows of width 0 (a word2vec header ``N 0``, as gensim writes them:
    ``word \n``): the key is the whole stripped line.  The kernels assume at least one value; a
    zero-width file has no values to parse fast, so plain Python is enough."""
    crlf = trailing = 0
    for c in range(len(bounds) - 1):
        lines = bytes(buf[bounds[c]:bounds[c + 1]]).split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        pos, row = int(bounds[c]), int(row0[c])
        for k, line in enumerate(lines):
            key = line.rstrip(LINE_WS)
            if key and row < max_rows:
                cr = line.endswith(b"\r")
                crlf += cr
                trailing += len(line) - len(key) > cr
                key_start[row], key_end[row] = pos, pos + len(key)
                line_no[row] = line0[c] + k + 1
                status[row] = (EMPTY_FIELD if key.startswith(b" ") or b"  " in key
                               else SPACED_KEY if b" " in key else 0)
                row += 1
            pos += len(line) + 1
    return np.array([crlf, trailing], np.int64)


def join_spans(byte_parts, len_parts, where_parts):
    """Per-block key bytes, lengths and locations joined into ``(bytes, offsets, where)``."""
    lens = np.concatenate(len_parts) if len_parts else np.zeros(0, np.int64)
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    data = np.concatenate(byte_parts) if byte_parts else np.zeros(0, np.uint8)
    where = np.concatenate(where_parts) if where_parts else np.zeros(0, np.int64)
    return data, offsets, where


def gather_spans(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The bytes ``arr[starts[i]:ends[i]]`` concatenated (one vectorised gather)."""
    lens = ends - starts
    shift = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return arr[shift + np.arange(int(lens.sum()))]


def round_bfloat16(a: np.ndarray) -> None:
    """Round float32 values in place to the nearest bfloat16 (ties to even), as torch's
    ``round_to_nearest_even`` (c10/util/BFloat16.h); NaN becomes the canonical 0x7FC0."""
    bits = a.view(np.uint32)
    nan = np.isnan(a)
    bits += np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    bits &= np.uint32(0xFFFF0000)
    bits[nan] = np.uint32(0x7FC00000)
