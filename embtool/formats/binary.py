"""word2vec binary: ``count dim\\n`` then, per word, optional ``\\n`` (word2vec.c) or ``\\r\\n``
(Windows tools; gensim would glue it to the word), the word's bytes, a space, and ``dim``
little-endian float32.  Records are located by the ``scan_records`` kernel (only word bytes
are visited) and the vectors of a block are copied with one vectorised gather, so a file loads at
about I/O speed.  Values are float32 cast to the dtype, as gensim does.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from embtool.errors import FormatError
from embtool.formats.text import GrowingTable, gather_spans, join_spans, round_bfloat16

#: a word longer than this (no space found) means a corrupt file or a wrong header dim.
MAX_WORD = 1 << 16
_WHITESPACE = b" \t\r\n\x0b\x0c"


def read_binary(reader, start, header_count, dim, *, limit, dtype, kernels, report, name,
                capacity, progress=None, src=None):
    """Returns ``(table, rows, word_bytes, word_offsets, byte_offsets)``; ``kernels`` is the
    backend (``embtool.kernels.choose``)."""
    target = header_count if limit is None else min(header_count, limit)
    store = np.float32 if dtype == "bfloat16" else np.dtype(dtype)
    grow = GrowingTable(dim, store, min(target, capacity))
    arr, filled = reader.raw()
    pos = start
    done = 0
    nvec = 4 * dim
    words, lens, offsets = [], [], []
    consumed = 0
    while done < target:
        want = target - done
        ws = np.empty(min(want, filled // (nvec + 1) + 1), np.int64)
        we = np.empty_like(ws)
        k, pos, crlf, status = kernels.scan_records(arr, pos, filled, dim, len(ws), MAX_WORD, ws, we)
        report.crlf_records += int(crlf)
        if k:
            grow.ensure(done + k)
            block = grow.table[done:done + k]
            raw = (sliding_window_view(arr, nvec)[we[:k] + 1].view("<f4") if nvec
                   else np.zeros((k, 0), "<f4"))  # zero-width records: a word and a space
            with np.errstate(over="ignore", invalid="ignore"):  # nan/inf and overflow are counted
                block[:] = raw
            if dtype == "bfloat16":
                round_bfloat16(block)
            bad = ~np.isfinite(block)
            if bad.any():
                report.nonfinite += int(bad.sum())
                report.overflow += int((bad & np.isfinite(raw)).sum())
                if report.first_nonfinite is None:
                    r, j = np.argwhere(bad)[0]
                    report.first_nonfinite = (f"row {done + r + 1} (byte {reader.offset + ws[r]}), "
                                              f"value {j + 1}: {block[r, j]}")
            lens.append(we[:k] - ws[:k])
            words.append(gather_spans(arr, ws[:k], we[:k]))
            offsets.append(ws[:k] + reader.offset)
            done += k
            del block, raw
        if status:
            raise FormatError(f"{name}, byte {reader.offset + pos}: no space within {MAX_WORD} "
                              "bytes after a word's start: not word2vec binary, or the header's "
                              "dim is wrong")
        if progress is not None:
            now = src.consumed()
            progress(now - consumed, k)
            consumed = now
        if done >= target:
            break
        if reader.eof and k == 0:
            raise FormatError(
                f"{name}, byte {reader.offset + pos}: the file ends inside row {done + 1}; the "
                f"header says {header_count} rows of {dim} float32 (truncated file, or a wrong "
                "count or dim)")
        arr, filled = reader.refill(pos)
        pos = 0
    if limit is not None and done >= limit and limit < header_count:
        report.limit_reached = True
    else:
        report.trailing_bytes = _trailing(reader, pos)
        if report.trailing_bytes:
            report.warnings.append(f"{report.trailing_bytes} bytes after the last of the header's "
                                   f"{header_count} rows were ignored")
    return (grow.table, done) + join_spans(words, lens, offsets)


def _trailing(reader, pos) -> int:
    """Bytes after the last record, not counting the line breaks word2vec.c writes."""
    arr, filled = reader.raw()
    rest = arr[pos:filled].tobytes().lstrip(_WHITESPACE)
    count = len(rest)
    while not reader.eof:
        arr, filled = reader.refill(filled)
        more = arr[:filled].tobytes()
        count += len(more.lstrip(_WHITESPACE) if count == 0 else more)
    return count
