"""Writing vectors back: GloVe text, word2vec text, word2vec binary, .npy (+ a vocab file).

Text values are written as ``str(numpy.float32(v))`` -- the shortest decimal that round-trips
float32, exactly what gensim's ``save_word2vec_format`` writes -- so loading an export gives a
bit-identical table (float16 and bfloat16 values are exact float32 values and are written the same
way; float64 tables are written with the shortest float64 repr).  The Numba kernel reproduces
numpy's output byte for byte (Ryu shortest digits, numpy's positional/scientific layout); rows
are written with no trailing space and ``\\n``.  word2vec binary stores float32 (a float64 table
is rounded to float32, as gensim does); rows are ``word + " " + little-endian float32`` with no
newline, as gensim writes them.

Words a format cannot hold are refused before anything is written, naming the row: empty words,
words containing a space or a line break, and a first word starting with U+FEFF (read back as a
byte order mark).  A destination ending in ``.gz``, ``.bz2`` or ``.xz`` is compressed; ``"-"``
writes to stdout.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import sys
from pathlib import Path

import numpy as np

from embtool import kernels
from embtool.errors import ConfigError, FormatError
from embtool.kernels.common import MAX_VALUE_CHARS
from embtool.vocab import encode_words, write_vocab_file

WRITE_FORMATS = ("glove", "word2vec", "word2vec-binary", "npy")
#: rows formatted per block, and the output buffer bound that may lower it.
ROWS_PER_BLOCK = 8192
BLOCK_BYTES = 32 << 20

__all__ = ["WRITE_FORMATS", "write_vectors", "write_vocab_file"]


def write_vectors(dest, words, vectors, *, format, progress=None) -> None:
    """Write ``vectors`` (N x D) with ``words`` (N strings, or None for ``npy``) to ``dest`` (a
    path or ``"-"``) in ``format``: glove, word2vec, word2vec-binary or npy.
    ``progress(bytes, rows)`` is called after each block written."""
    if format not in WRITE_FORMATS:
        raise ConfigError(f"format must be one of {', '.join(WRITE_FORMATS)}, not {format!r}")
    if not hasattr(vectors, "ndim"):  # an array-like with shape and slices (a sharded table's
        vectors = np.asarray(vectors)  # rows) is read block by block, never copied whole
    if vectors.ndim != 2:
        raise FormatError(f"vectors must be 2-D (rows x dim), not shape {vectors.shape}")
    if format == "npy":
        with _open(dest, compress=False) as f:
            _save_npy(f, vectors)
        return
    if vectors.dtype.kind != "f":
        raise FormatError(f"vectors must be floating point, not {vectors.dtype}")
    if words is None:
        raise FormatError(f"{format} needs a word for every row; this table has no vocabulary "
                          "(export to npy instead)")
    words = list(words)
    if len(words) != len(vectors):
        raise FormatError(f"{len(words)} words for {len(vectors)} rows")
    key_data, key_off = _check_words(words, text=format != "word2vec-binary")
    n, dim = vectors.shape
    if dim == 0 and format == "glove":
        raise FormatError("GloVe text cannot hold rows of width 0 (it has no header to say so, "
                          "and a line without values is no row); use word2vec, word2vec-binary "
                          "or npy")
    with _open(dest) as f:
        if format != "glove":
            f.write(f"{n} {dim}\n".encode("ascii"))
        if format == "word2vec-binary":
            _write_binary(f, vectors, key_data, key_off, progress)
        else:
            _write_text(f, vectors, key_data, key_off, progress)


def _save_npy(f, vectors) -> None:
    """``np.save`` (the same bytes), block by block for an array-like that is not an array."""
    if isinstance(vectors, np.ndarray):
        np.save(f, vectors, allow_pickle=False)
        return
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(vectors.dtype), "fortran_order": False,
            "shape": tuple(vectors.shape)})
    for lo, hi in _blocks(len(vectors)):
        f.write(np.ascontiguousarray(vectors[lo:hi]).data)


def _check_words(words, *, text):
    data, offsets = encode_words(words)
    lengths = np.diff(offsets)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise FormatError(f"word at row {empty[0]} is empty; vector files cannot hold it")
    for byte, what in ((32, "a space"), (10, "a line break")):
        hits = np.flatnonzero(data == byte)
        if hits.size:
            row = int(np.searchsorted(offsets, hits[0], side="right") - 1)
            raise FormatError(f"word at row {row} contains {what}, which the file format cannot "
                              f"hold: {words[row]!r}")
    if text and words and words[0].startswith("\ufeff"):
        raise FormatError("word at row 0 starts with U+FEFF, which would be read back as a byte "
                          "order mark")
    return data, offsets


class _NoClose:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self.f

    def __exit__(self, *exc):
        self.f.flush()


def _open(dest, compress=True):
    if str(dest) == "-":
        return _NoClose(sys.stdout.buffer)
    if hasattr(dest, "write"):
        return _NoClose(dest)
    suffix = Path(dest).suffix.lower()
    if compress and suffix == ".gz":
        return gzip.open(dest, "wb", compresslevel=6)
    if compress and suffix == ".bz2":
        return bz2.open(dest, "wb")
    if compress and suffix == ".xz":
        return lzma.open(dest, "wb")
    return open(dest, "wb")


def _blocks(n, rows=ROWS_PER_BLOCK):
    for lo in range(0, n, rows):
        yield lo, min(n, lo + rows)


def _write_text(f, vectors, key_data, key_off, progress):
    n, dim = vectors.shape
    if vectors.dtype != np.float64:
        vectors = vectors.astype(np.float32, copy=False)
    if vectors.dtype == np.float32:
        K = kernels.choose(vectors.size * kernels.PER_FORMATTED_VALUE)
    else:  # the Numba kernel formats float32 only
        K = kernels.backend("numpy")
    row_bytes = (int(np.diff(key_off).max()) if n else 0) + dim * MAX_VALUE_CHARS + 2
    rows = max(1, min(ROWS_PER_BLOCK, BLOCK_BYTES // row_bytes))
    out = np.empty(rows * row_bytes, np.uint8)
    for lo, hi in _blocks(n, rows):
        block = np.ascontiguousarray(vectors[lo:hi])
        offs = key_off[lo:hi + 1]
        w = K.format_rows(block, key_data, offs, out)
        f.write(out[:w].data)
        if progress is not None:
            progress(w, hi - lo)


def _write_binary(f, vectors, key_data, key_off, progress):
    with np.errstate(over="ignore", invalid="ignore"):  # float32 as gensim writes it, nan included
        values = vectors.astype("<f4", copy=False)
    for lo, hi in _blocks(len(values)):
        raw = np.ascontiguousarray(values[lo:hi]).tobytes()
        step = 4 * values.shape[1]
        parts = []
        for r in range(lo, hi):
            parts.append(key_data[key_off[r]:key_off[r + 1]].tobytes())
            parts.append(b" ")
            parts.append(raw[(r - lo) * step:(r - lo + 1) * step])
        data = b"".join(parts)
        f.write(data)
        if progress is not None:
            progress(len(data), hi - lo)
