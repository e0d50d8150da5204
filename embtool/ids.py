"""Row indices: the one integer rule for text, and the range check ``F.embedding`` makes.

An integer written as text is an optional sign and ASCII digits, ``[+-]?[0-9]+`` (``7``, ``+7``,
``-1``, ``007``); ``1_0``, ``1.0``, ``1e3``, ``0x10``, non-ASCII digits and surrounding non-ASCII
spaces are not integers.  Several integers are separated by ASCII whitespace (space, tab, CR, LF,
VT, FF).  In JSON an index is a JSON integer.  Every integer must fit in int64 (PyTorch's index
type); checking it against the table is ``check_ids``.
"""
from __future__ import annotations

import re

import numpy as np

from .errors import FormatError, IndexRangeError

INTEGER = re.compile(rb"[+-]?[0-9]+")
_WS = rb"[ \t\n\r\x0b\x0c]"
_INTEGERS = re.compile(rb"%s*(?:[+-]?[0-9]+(?:%s+|\Z))*" % (_WS, _WS))
_INT64 = (-(2**63), 2**63 - 1)


def _fits_int64(token: bytes) -> bool:
    digits = token.lstrip(b"+-").lstrip(b"0")
    if len(digits) > 19:  # before int(): Python refuses to convert more than 4300 digits
        return False
    return _INT64[0] <= int(token) <= _INT64[1]


def _as_bytes(text: str | bytes) -> bytes:
    # arguments that were not valid UTF-8 arrive as surrogate escapes; keep their bytes
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")


def _shown(token: bytes) -> str:
    return repr(token[:40].decode("utf-8", "replace"))


def parse_int(text: str | bytes, where: str) -> int:
    """One integer by the rule above (``where`` names it in errors)."""
    token = _as_bytes(text)
    if not INTEGER.fullmatch(token):
        raise FormatError(f"{where}: {_shown(token)} is not an integer")
    if not _fits_int64(token):
        raise IndexRangeError(f"{where}: {_shown(token)} is out of range (integers must fit in "
                              "64 bits)")
    return int(token)


def parse_ints(text: str | bytes, where: str) -> np.ndarray:
    """Integers separated by ASCII whitespace, as a 1-D int64 array; an error names the line and
    the token that breaks the rule."""
    data = _as_bytes(text)
    if _INTEGERS.fullmatch(data):
        try:
            return np.array(data.split(), dtype=np.int64)
        except (OverflowError, ValueError):
            pass  # some integer does not fit: found and named below
    for lineno, line in enumerate(data.split(b"\n"), 1):
        for token in line.split():
            if not INTEGER.fullmatch(token):
                raise FormatError(f"{where}: line {lineno}: {_shown(token)} is not an integer index")
            if not _fits_int64(token):
                raise IndexRangeError(f"{where}: line {lineno}: index {_shown(token)} is out of "
                                      "range (integers must fit in 64 bits)")
    raise FormatError(f"{where}: cannot read the integers")  # pragma: no cover - unreachable


def _position(shape, flat_index: int) -> str:
    return str([int(i) for i in np.unravel_index(flat_index, shape)]) if shape else "[]"


def distinct(ids) -> np.ndarray:
    """The distinct values of an integer array, ascending (``np.unique`` without its options).

    Written out because numpy 2's ``unique`` imports ``numpy.ma`` on its first call (about 10 ms,
    a third of a small command's work) and hashes before it sorts, which is slower than one
    sort for the row indices of a step."""
    flat = np.sort(np.asarray(ids).reshape(-1))
    return flat[_firsts(flat)] if flat.size > 1 else flat


def distinct_inverse(ids) -> tuple[np.ndarray, np.ndarray]:
    """``(values, inverse)``: the distinct values ascending, and for each element of the flattened
    ``ids`` the position of its value in them (``np.unique(ids, return_inverse=True)``)."""
    flat = np.asarray(ids).reshape(-1)
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    first = _firsts(ordered)
    inverse = np.empty(flat.size, np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


def _firsts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array starts."""
    first = np.empty(ordered.size, bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first


def check_ids(ids, num_embeddings: int, where: str = "indices") -> np.ndarray:
    """int64 indices, each in ``[0, num_embeddings)`` as ``F.embedding`` requires (no wrap-around)."""
    ids = np.asarray(ids)
    if ids.dtype.kind == "b" or ids.dtype.kind not in "iu":
        if ids.size and ids.dtype.kind == "f":
            flat = ids.reshape(-1)
            bad = np.flatnonzero(flat != np.floor(flat))
            pos = int(bad[0]) if bad.size else 0
            raise FormatError(f"{where}: index {flat[pos].item()!r} at position {_position(ids.shape, pos)} "
                              "is not an integer")
        if ids.size or ids.dtype.kind not in "fiu":
            raise FormatError(f"{where}: indices must be integers, not {ids.dtype}")
    if ids.dtype.kind == "u" and ids.size and ids.max() > np.iinfo(np.int64).max:
        raise IndexRangeError(f"{where}: index {ids.max()} is out of range for a table of "
                              f"{num_embeddings} rows")
    ids = ids.astype(np.int64, copy=False)
    if ids.size:
        flat = ids.reshape(-1)
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0:
            pos = int(np.argmax(flat < 0))
            raise IndexRangeError(f"{where}: index {lo if flat[pos] == lo else flat[pos]} at position "
                                  f"{_position(ids.shape, pos)} is negative (valid: 0 to "
                                  f"{num_embeddings - 1})")
        if hi >= num_embeddings:
            pos = int(np.argmax(flat >= num_embeddings))
            raise IndexRangeError(f"{where}: index {flat[pos]} at position {_position(ids.shape, pos)} "
                                  f"is out of range for a table of {num_embeddings} rows")
    return ids
