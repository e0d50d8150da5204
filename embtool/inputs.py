"""Reading indices and arrays given on the command line, in files or on stdin.

Indices: JSON nested lists (shape kept), whitespace-separated integers (1-D), or ``.npy`` (shape
kept).  Any integer dtype is accepted (PyTorch itself insists on int32/int64, a detail of its API
rather than of the numbers); floats, booleans and ragged lists are errors naming the position.
Arrays (gradients, vectors, per-sample weights): ``.npy``, ``.safetensors`` (the only tensor, or
``name``) or JSON.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from .errors import EmbtoolError, FormatError, IndexRangeError, ShapeError
from .sniff import NPY_MAGIC, is_safetensors_head



def _read_source(source) -> tuple[bytes, str]:
    if source == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except IsADirectoryError:
        raise EmbtoolError(f"{path}: is a directory") from None


def _load_npy(data: bytes, where: str) -> np.ndarray:
    import io

    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError for damaged files
        raise FormatError(f"{where}: not a valid .npy file ({exc})") from None


def _position(shape, flat_index: int) -> str:
    return str([int(i) for i in np.unravel_index(flat_index, shape)]) if shape else "[]"


def _json_array(text: str, where: str, what: str) -> np.ndarray:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    try:
        arr = np.array(obj)
    except (ValueError, OverflowError) as exc:
        raise FormatError(f"{where}: {what} must be a rectangular nested list of numbers ({exc})") from None
    if arr.dtype == object:
        raise FormatError(f"{where}: {what} must be a rectangular nested list of numbers")
    return arr


def parse_ids_text(text: str, where: str) -> np.ndarray:
    if text.lstrip().startswith("["):
        return _json_array(text, where, "indices")
    tokens = text.split()
    try:
        return np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        pass
    for lineno, line in enumerate(text.splitlines(), 1):
        for tok in line.split():
            if not re.fullmatch(r"[+-]?\d+", tok):
                raise FormatError(f"{where}: line {lineno}: {tok!r} is not an integer index")
            if not -(2**63) <= int(tok) < 2**63:
                raise IndexRangeError(f"{where}: line {lineno}: index {tok} is out of range")
    raise FormatError(f"{where}: cannot read indices")  # pragma: no cover


def read_ids(source) -> np.ndarray:
    """Indices from a file or ``-`` (stdin), in their given shape (not yet range-checked)."""
    data, where = _read_source(source)
    if data.startswith(NPY_MAGIC):
        return _load_npy(data, where)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{where}: not UTF-8 text or .npy (byte {exc.start})") from None
    return parse_ids_text(text, where)


def ids_from_args(args) -> np.ndarray:
    """Indices given as arguments: integers, or one JSON nested list."""
    if len(args) == 1 and args[0].lstrip().startswith("["):
        return _json_array(args[0], "argument", "indices")
    return parse_ids_text(" ".join(args), "arguments")


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


def read_array(source, *, what: str = "array", tensor: str | None = None) -> np.ndarray:
    """A numeric array from ``.npy``, ``.safetensors`` or JSON (file or ``-``)."""
    data, where = _read_source(source)
    if data.startswith(NPY_MAGIC):
        arr = _load_npy(data, where)
    elif is_safetensors_head(data, len(data)):
        arr = _safetensors_array(data, where, tensor)
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{where}: not .npy, .safetensors or JSON") from None
        arr = _json_array(text, where, what)
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
        raise FormatError(f"{where}: {what} must be numeric, not {arr.dtype}")
    return arr


def _safetensors_array(data: bytes, where: str, tensor: str | None) -> np.ndarray:
    from . import dtypes, store as st

    header = st.parse_header(data, len(data), where)
    names = sorted(header.tensors)
    if tensor is None:
        if len(names) != 1:
            raise FormatError(f"{where}: {len(names)} tensors ({', '.join(names)}); name one")
        tensor = names[0]
    if tensor not in header.tensors:
        raise FormatError(f"{where}: no tensor {tensor!r} (tensors: {', '.join(names)})")
    info = header.tensors[tensor]
    view = dtypes.raw_numpy(info.dtype)
    if view is None:
        raise FormatError(f"{where}: tensor {tensor!r} has dtype {info.dtype}, which embtool cannot read")
    raw = np.frombuffer(data, dtype=view, count=int(np.prod(info.shape)),
                        offset=header.data_start + info.begin).reshape(info.shape)
    return dtypes.widen(raw, info.dtype) if info.dtype in ("BF16",) + dtypes.FLOAT8 else raw


def check_shape(arr: np.ndarray, shape: tuple, what: str, where: str) -> None:
    if tuple(arr.shape) != tuple(shape):
        raise ShapeError(f"{where}: {what} has shape {list(arr.shape)}, expected {list(shape)}")


def read_words(args, source=None, *, lines: bool = False, json_input: bool = False) -> list:
    """Words from arguments, or from a file / ``-``.

    Words are words: one argument, or the whole text read, is JSON only when it parses as a JSON
    list whose leaves are all strings (nested lists keep their shape); anything else is words
    (``[CLS]``, ``<s>``, ``-``, ``[1]``): each argument one word, a text split at ASCII
    whitespace.  ``json_input`` requires the JSON list (a clear error otherwise).  With ``lines``
    a text is one word per line (words may then contain spaces; only ``\n`` and a trailing
    ``\r`` are stripped), never JSON."""
    if source is None:
        if json_input and len(args) != 1:
            raise FormatError(f"arguments: --json-input takes one JSON list, not {len(args)} arguments")
        if len(args) == 1:
            words = _json_words(args[0], "argument", json_input)
            if words is not None:
                return words
        return list(args)
    data, where = _read_source(source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    if lines:
        return [w[:-1] if w.endswith("\r") else w for w in text.split("\n")[:-1 if text.endswith("\n") else None]]
    words = _json_words(text, where, json_input)
    return text.split() if words is None else words


def _json_words(text: str, where: str, required: bool):
    """The words of ``text`` when it is a JSON list of strings, else None (or, ``required``, an
    error saying why it is not)."""
    if not text.lstrip().startswith("["):
        if required:
            raise FormatError(f"{where}: not a JSON list of words")
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if required:
            raise FormatError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        return None
    if not _string_leaves(obj):
        if required:
            raise FormatError(f"{where}: words must be a nested list of strings")
        return None
    arr = np.array(obj, dtype=object)  # ragged lists become an array of lists: refused below
    if not all(isinstance(w, str) for w in arr.reshape(-1)):
        raise FormatError(f"{where}: words must be a rectangular nested list of strings")
    return obj


def _string_leaves(obj) -> bool:
    """Whether every leaf of nested lists is a string (iteratively: no recursion limit)."""
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        elif not isinstance(x, str):
            return False
    return True


def option_array(value, what: str, *, ints: bool = False):
    """The array of an option (``--offsets``, ``--per-sample-weights``): inline JSON or integers
    (``0,3,5`` or ``0 3 5``), or a file (path or ``-``) of JSON / ``.npy`` / ..."""
    if value is None:
        return None
    import os

    if value == "-" or os.path.isfile(value):
        return read_ids(value) if ints else read_array(value, what=what)
    if ints:
        return parse_ids_text(value.replace(",", " ") if not value.lstrip().startswith("[") else value,
                              f"--{what}")
    return _json_array(value, f"--{what}", what)
