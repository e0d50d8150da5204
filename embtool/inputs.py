"""Reading indices and arrays given on the command line, in files or on stdin.

Indices: JSON nested lists (shape kept), integers separated by ASCII whitespace (1-D; the integer
rule of ``embtool.ids``), or ``.npy`` (shape kept).  Any integer dtype is accepted (PyTorch itself
insists on int32/int64, a detail of its API rather than of the numbers); floats, booleans and
ragged lists are errors naming the position.  Arrays (gradients, vectors, offsets, per-sample
weights): ``.npy``, ``.safetensors`` (the only tensor, or ``name``) or JSON numbers.  An option's
array (``read_option_array``) is read the same way whether it is given inline or as a file.
JSON is read by ``embtool.jsontext`` (what counts as JSON is defined there).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from . import jsontext
from .errors import EmbtoolError, FormatError, IndexRangeError, ShapeError
from .ids import parse_ints
from .sniff import NPY_MAGIC, is_safetensors_head

#: the first thing in numeric JSON that is not a number (strings, literals, objects)
_NOT_A_NUMBER = re.compile(r'"|\btrue\b|\bfalse\b|\bnull\b|\{')


def _read_source(source) -> tuple[bytes, str]:
    if source == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise EmbtoolError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise EmbtoolError(f"{path}: is a directory") from None


def _load_npy(data: bytes, where: str) -> np.ndarray:
    import io

    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError for damaged files
        raise FormatError(f"{where}: not a valid .npy file ({exc})") from None


def json_array(text: str | bytes, where: str, what: str, *, integers: bool = False) -> np.ndarray:
    """A rectangular nested list of JSON numbers as an array (shape kept).  With ``integers``
    (indices) an integer beyond int64 is an IndexRangeError; otherwise large integers are read
    as float64, as any JSON number is."""
    if not isinstance(text, str):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{where}: JSON is not valid UTF-8 (byte {exc.start})") from None
    obj = jsontext.loads(text, where)
    try:
        arr = np.array(obj)
    except ValueError as exc:
        if "maximum number of dimension" in str(exc):
            raise jsontext.nested_too_deep(where) from None
        raise FormatError(f"{where}: {what} must be a rectangular nested list of numbers "
                          "(rows of different lengths)") from None
    # numpy reads true/false among numbers as 1/0, and null or strings as objects
    if arr.dtype.kind not in "fiu" or "true" in text or "false" in text:
        found = _NOT_A_NUMBER.search(text)
        if found:
            line = text.count("\n", 0, found.start()) + 1
            col = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
            shown = {'"': "a string", "{": "an object"}.get(found.group(), found.group())
            raise FormatError(f"{where}: {what} must be {'integers' if integers else 'numbers'}, "
                              f"not {shown} (line {line} column {col})")
    if arr.dtype.kind == "O" or (integers and arr.dtype.kind == "f" and arr.size
                                 and not re.search(r"[.eEIN]", text)):
        # integers beyond 64 bits (numpy made objects, or floats of a mix of int64 and uint64)
        return _large_integers(obj, where, what, integers)
    if arr.dtype.kind not in "fiu":
        raise FormatError(f"{where}: {what} must be numbers, not {arr.dtype}")
    return arr


def _large_integers(obj, where, what, integers) -> np.ndarray:
    if not integers:
        try:
            return np.array(obj, dtype=np.float64)
        except OverflowError:
            raise FormatError(f"{where}: {what}: a number is too large for float64") from None
    flat = np.array(obj, dtype=object).reshape(-1)
    big = next((x for x in flat if not -(2**63) <= x < 2**63), flat[0])
    shown = str(big) if len(str(big)) <= 40 else f"{str(big)[:20]}... ({len(str(big))} digits)"
    raise IndexRangeError(f"{where}: index {shown} is out of range (integers must fit in 64 bits)")


def parse_ids_text(text: str | bytes, where: str) -> np.ndarray:
    """Indices from text: a JSON nested list (shape kept) or whitespace-separated integers."""
    head = text[:64].lstrip()
    if head.startswith("[" if isinstance(text, str) else b"["):
        return json_array(text, where, "indices", integers=True)
    return parse_ints(text, where)


def read_ids(source) -> np.ndarray:
    """Indices from a file or ``-`` (stdin), in their given shape (not yet range-checked)."""
    data, where = _read_source(source)
    if data.startswith(NPY_MAGIC):
        return _load_npy(data, where)
    return parse_ids_text(data, where)


def ids_from_args(args) -> np.ndarray:
    """Indices given as arguments: integers, or one JSON nested list."""
    if len(args) == 1 and args[0].lstrip().startswith("["):
        return json_array(args[0], "argument", "indices", integers=True)
    return parse_ints(" ".join(args), "arguments")


def read_array(source, *, what: str = "array", tensor: str | None = None) -> np.ndarray:
    """A numeric array from ``.npy``, ``.safetensors`` or JSON (file or ``-``)."""
    data, where = _read_source(source)
    return _array_from_bytes(data, where, what, tensor)


def _array_from_bytes(data: bytes, where: str, what: str, tensor: str | None = None) -> np.ndarray:
    if data.startswith(NPY_MAGIC):
        arr = _load_npy(data, where)
    elif is_safetensors_head(data, len(data)):
        arr = _safetensors_array(data, where, tensor)
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{where}: not .npy, .safetensors or JSON") from None
        arr = json_array(text, where, what)
    if arr.dtype.kind not in "fiu":
        raise FormatError(f"{where}: {what} must be numeric, not {arr.dtype}")
    return arr


def read_option_array(value: str, what: str, *, integers: bool = False) -> np.ndarray:
    """An option's array, read the same way whether given inline or in a file: ``-`` is stdin and
    an existing file is read (``.npy``, ``.safetensors``, JSON, and for ``integers`` whitespace
    integers); any other value is the array itself: a JSON nested list, or for ``integers`` also
    integers separated by commas or whitespace."""
    if value == "-" or os.path.isfile(value):
        data, where = _read_source(value)
    else:
        where = f"--{what.replace(' ', '-')}"
        data = value.encode("utf-8", "surrogateescape")
        if not data.lstrip().startswith(b"["):
            if not integers:
                raise EmbtoolError(f"{value}: no such file (and not a JSON array)")
            data = data.replace(b",", b" ")
    if not integers:
        return _array_from_bytes(data, where, what)
    if data.startswith(NPY_MAGIC):
        return _load_npy(data, where)
    return parse_ids_text(data, where)


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
        obj = jsontext.loads(text, where)
    except jsontext.NestingError:
        raise
    except FormatError:
        if required:
            raise
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
