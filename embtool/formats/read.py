"""``read_vectors``: load GloVe / word2vec text / word2vec binary / .npy into a table."""
from __future__ import annotations

import io
from functools import partial

import numpy as np

from embtool import dtypes as _dtypes, kernels
from embtool.errors import ConfigError, FormatError
from embtool.formats import binary, detect as _detect, text
from embtool.formats.loaded import (
    DUPLICATE_POLICIES, UNICODE_ERRORS, LoadedVectors, LoadReport, compact_rows, decode_keys,
    dedupe, shrink,
)
from embtool.formats.source import (
    MAP_FROM, BlockReader, MappedReader, Prefixed, read_fully, open_source,
)

DTYPES = tuple(_dtypes.NAMES.values())  # the user-facing names of the table dtypes
#: bytes read first for format detection (more if the first lines are longer).
HEAD = 1 << 16
#: the most bytes allocated for the table before the size of a stream is known.
FIRST_ALLOCATION = 256 << 20
#: bytes of the first block whose lines give the estimate of bytes per row (``_capacity``).
CAPACITY_SAMPLE = 4 << 20
#: the samples ``_infer_dim`` tries in turn: the last one decides (``detect.infer_dim``).
DIM_SAMPLES = (4 << 20, 8 << 20)


def read_vectors(source, *, format="auto", limit=None, dtype="float32", encoding="utf-8",
                 unicode_errors="strict", on_duplicate="first", allow_nonfinite=False,
                 dim=None, progress=None) -> LoadedVectors:
    """Load pretrained vectors from a path (``.gz``/``.bz2``/``.xz`` recognised by their magic
    bytes) or ``"-"`` (stdin).

    ``format``: ``auto``, ``glove``, ``word2vec`` (text with a header; fastText ``.vec``),
    ``word2vec-binary`` or ``npy``.  ``limit``: read at most this many rows (``0`` reads none).
    ``dtype``: float32, float64, float16 or bfloat16 (see ``LoadedVectors``); text values are
    ``dtype(float(token))`` as gensim's ``datatype``, binary values are float32 cast to ``dtype``.
    ``encoding`` / ``unicode_errors`` (strict, replace, ignore) decode the words (the header is
    read as ASCII digits, so it never fails to decode; a UTF-8 BOM is skipped for UTF-8).
    ``on_duplicate``: first (gensim), last (torchtext) or error.  Non-finite values (nan, inf,
    overflow) are an error naming the first one unless ``allow_nonfinite``.  ``dim`` fixes a GloVe
    file's dimension instead of inferring it (and must match a header).  ``progress(bytes, rows)``
    is called after each block with the source bytes (compressed bytes for compressed files,
    so the total is the file size) and rows read since the previous call.
    """
    _check_options(format, limit, dtype, unicode_errors, on_duplicate, dim, encoding)
    src = open_source(source)
    try:
        head, whole = _read_head(src)
        found = _detect.detect(head, src.name, format, encoding, whole)
        report = LoadReport(source=src.name, format=found.format, compression=src.compression,
                            dtype=dtype, limit=limit, bom=found.bom, on_duplicate=on_duplicate)
        if found.format == "npy":
            got = _read_npy(src, limit, dtype, allow_nonfinite, report)
            if progress is not None:
                progress(src.size or 0, got.report.rows)
            return got
        if found.header is not None:
            report.header_count = found.header[0]
            if dim is not None and dim != found.header[1]:
                raise FormatError(f"{src.name}, line 1: header gives dimension {found.header[1]}, "
                                  f"not {dim}")
            dim = found.header[1]
        mapped = src.plain_file and src.size >= MAP_FROM and found.format != "word2vec-binary"
        reader = MappedReader(src) if mapped else BlockReader(src)
        arr, n = reader.next()
        work = max(src.size or 0, n) * kernels.PER_TEXT_BYTE
        starting = None
        if found.format != "word2vec-binary":
            # Numba starts on another thread (about 0.4 s) while this one sizes the table and
            # faults it in; the parse then finds its kernels loaded.
            starting = kernels.prepare(work, partial(text.warm_up, dtype=dtype))
        capacity = _capacity(src, found, n, reader, dim)
        if found.format == "word2vec-binary":
            K = kernels.choose(work)
            table, rows, data, offsets, where = binary.read_binary(
                reader, found.start, found.header[0], dim, limit=limit, dtype=dtype,
                kernels=K, report=report, name=src.name, capacity=capacity,
                progress=progress, src=src)
            where_kind = "byte"
        else:
            if dim is None:
                dim = _infer_dim(arr, found.start, n, src.name)
            parser = text.TextParser(
                reader, src.name, dim=dim, header_count=found.header and found.header[0],
                header_lines=found.header_lines, limit=limit, dtype=dtype, encoding=encoding,
                kernels=None, report=report)
            grow = parser.allocate(capacity, touch=starting, aligned=src.plain_file)
            parser.kernels = kernels.choose(work)
            table, rows = parser.run(arr, n, found.start, found.header_lines, grow, progress, src)
            data, offsets, where = parser.keys()
            where_kind = "line"
        report.dim = dim
        return _finish(table, rows, data, offsets, where, where_kind, report, src.name,
                       encoding, unicode_errors, on_duplicate, allow_nonfinite, dtype)
    finally:
        src.close()


def _check_options(fmt, limit, dtype, unicode_errors, on_duplicate, dim, encoding):
    if fmt not in _detect.FORMATS:
        raise ConfigError(f"format must be one of {', '.join(_detect.FORMATS)}, not {fmt!r}")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if unicode_errors not in UNICODE_ERRORS:
        raise ConfigError(f"unicode_errors must be one of {', '.join(UNICODE_ERRORS)}, "
                          f"not {unicode_errors!r}")
    if on_duplicate not in DUPLICATE_POLICIES:
        raise ConfigError(f"on_duplicate must be one of {', '.join(DUPLICATE_POLICIES)}, "
                          f"not {on_duplicate!r}")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer, not {limit!r}")
    if dim is not None and (not isinstance(dim, (int, np.integer)) or not 1 <= dim <= _detect.MAX_DIM):
        raise ConfigError(f"dim must be an integer from 1 to {_detect.MAX_DIM}, not {dim!r}")
    _detect.is_utf8(encoding)  # raises ConfigError on an unknown encoding


def _read_head(src) -> tuple[bytes, bool]:
    """The first bytes of the data (at least three lines when there are), pushed back, and
    whether they are the whole data."""
    head = b""
    while True:
        want = max(HEAD, len(head))
        more = read_fully(src.stream, want)
        head += more
        if len(more) < want or head.count(b"\n") >= 3 or len(head) >= (16 << 20):
            break
    src.stream = io.BufferedReader(Prefixed(head, src.stream), 1 << 20)
    return head, len(more) < want


def _infer_dim(arr, start, n, name) -> int:
    """``detect.infer_dim`` of the first lines of the block, up to 8 MB.  A first 4 MB is enough
    when it holds the lines the rule looks at (1000 rows of 300 values do): copying and splitting
    8 MB holds the GIL for 10-15 ms, which the Numba start-up on the other thread waits for."""
    for size in DIM_SAMPLES:
        sample_end = min(n, start + size)
        sample = arr[start:sample_end].tobytes()
        if sample_end < n:
            sample = sample[: sample.rfind(b"\n") + 1] or sample
        dim = _detect.infer_dim(sample, name, partial=sample_end < n and size < DIM_SAMPLES[-1])
        if dim is not None:
            return dim
    raise AssertionError("unreachable: the last sample decides")  # pragma: no cover


def _capacity(src, found, n, reader, dim) -> int:
    """Rows to allocate at first: exact from a header (bounded by what the file can hold), else
    estimated from the file size and the first block's bytes per row; the table grows if needed."""
    if found.header is not None and found.format == "word2vec-binary":
        per_row = 4 * dim + 2
    else:
        # bytes per row from the first lines (counting a whole 32 MB block holds the GIL for
        # 15-30 ms, which the Numba start-up on the other thread waits for)
        end = min(n, found.start + CAPACITY_SAMPLE)
        rows = reader.count(b"\n", found.start, end)
        if rows == 0:
            end, rows = n, max(1, reader.count(b"\n", found.start, n))
        per_row = max(1, (end - found.start) // rows)
        if found.header is not None:
            per_row = min(per_row, 2 * (dim or 1) + 1)
    if src.plain_file:
        estimate = src.size // per_row + 1
        return estimate if found.header is not None else int(estimate * 1.02) + 64
    # a stream of unknown size: a guess, at most FIRST_ALLOCATION bytes (a header's count or
    # dim may be wrong or hostile; the table grows as rows actually arrive)
    return max(1, min(max(1 << 16, 4 * (n // per_row)), FIRST_ALLOCATION // (8 * max(dim or 1, 1))))


def _read_npy(src, limit, dtype, allow_nonfinite, report) -> LoadedVectors:
    """A .npy array as ``from_pretrained`` takes it: 2-D floating point, no words."""
    from numpy.lib import format as npformat

    try:
        if src.plain_file:
            arr = np.load(src.name, mmap_mode="r", allow_pickle=False)
        else:
            arr = npformat.read_array(src.stream, allow_pickle=False)
    except ValueError as e:
        raise FormatError(f"{src.name}: not a readable .npy array ({e})") from None
    if arr.ndim != 2:
        raise FormatError(f"{src.name}: the array has shape {arr.shape}; expected 2-D (rows x dim)")
    if arr.dtype.kind != "f":
        raise FormatError(f"{src.name}: the array has dtype {arr.dtype}; expected floating point")
    if limit is not None:
        report.limit_reached = limit < arr.shape[0]
        arr = arr[:limit]
    store = np.float32 if dtype == "bfloat16" else np.dtype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # nan/inf and overflow are counted
        table = np.array(arr, dtype=store, order="C", copy=True)
    if dtype == "bfloat16":
        table_before = np.isfinite(table)
        text.round_bfloat16(table)
    else:
        table_before = np.isfinite(np.asarray(arr))
    bad = ~np.isfinite(table)
    report.nonfinite = int(bad.sum())
    report.overflow = int((bad & table_before).sum())
    report.rows, report.dim = table.shape
    if report.nonfinite:
        r, j = np.argwhere(bad)[0]
        report.first_nonfinite = f"row {r}, column {j}: {table[r, j]}"
        _check_nonfinite(report, src.name, dtype, allow_nonfinite)
    return LoadedVectors(table, report, dtype)


def _check_nonfinite(report, name, dtype, allow_nonfinite):
    if report.nonfinite and not allow_nonfinite:
        at = f", the first at {report.first_nonfinite}" if report.first_nonfinite else ""
        raise FormatError(f"{name}: {report.nonfinite} non-finite values (nan/inf, or numbers too "
                          f"large for {dtype}){at}; pass allow_nonfinite to keep them")


def _finish(table, rows, data, offsets, where, where_kind, report, name, encoding,
            unicode_errors, on_duplicate, allow_nonfinite, dtype) -> LoadedVectors:
    _check_nonfinite(report, name, dtype, allow_nonfinite)
    data, offsets, bad = decode_keys(data, offsets, where, name=name, encoding=encoding,
                                     unicode_errors=unicode_errors, where_kind=where_kind)
    report.undecodable_words = bad
    if bad:
        report.warnings.append(f"{bad} words had bytes invalid in {encoding} "
                               f"({unicode_errors}d)")
    report.empty_words = int(np.count_nonzero(np.diff(offsets) == 0))
    if report.empty_words:
        report.warnings.append(f"{report.empty_words} words are empty after decoding")
    keep, arrays, dropped, groups = dedupe(data, offsets, where, on_duplicate, name=name,
                                           where_kind=where_kind)
    table = shrink(table, rows)
    if keep is not None:
        table = compact_rows(table, keep)
    report.duplicates, report.duplicate_words = dropped, groups
    report.rows = len(table)
    return LoadedVectors(table, report, dtype, arrays)
