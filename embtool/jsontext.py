"""JSON from files, arguments and safetensors headers: the one reader, and what counts as JSON.

Every JSON embtool reads (indices, gradients, vectors, offsets, per-sample weights, words,
safetensors headers, metadata values) goes through ``loads``:

* RFC 8259 JSON in UTF-8, plus the literals ``NaN``, ``Infinity`` and ``-Infinity``, which embtool
  itself writes for non-finite values (the convention of Python's ``json``);
* nesting of at most ``MAX_DEPTH`` arrays/objects (numpy's limit on an array's dimensions):
  arrays nested deeper are refused when they become arrays (``nested_too_deep``), and text nested
  deeper than the parser's recursion limit (some hundreds of levels) is refused while parsing,
  however deep it goes; a safetensors header or metadata value is refused earlier, by its
  expected structure;
* integers of at most 4300 digits (Python's limit on converting text to an integer);
* strings of Unicode characters: an escaped lone surrogate (``"\\ud800"``) is refused, as the
  safetensors library refuses it.

Any failure is one ``FormatError`` naming ``where`` and, for syntax errors, line and column.
"""
from __future__ import annotations

import json
import re

from .errors import FormatError

#: deepest nesting of arrays/objects accepted (numpy arrays have at most 64 dimensions).
MAX_DEPTH = 64
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def loads(text: str | bytes, where: str):
    """The value of the JSON ``text`` (bytes are decoded as UTF-8)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{where}: JSON is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                          f"{exc.msg}") from None
    except RecursionError:  # the C parser recurses per level and stops cleanly at its limit
        raise nested_too_deep(where) from None
    except ValueError:  # the only other failure: an integer longer than Python converts
        raise FormatError(f"{where}: invalid JSON: an integer of more than 4300 digits") from None
    if _SURROGATE_ESCAPE.search(text):  # a pair is one character; a lone half is no character
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except RecursionError:
            raise nested_too_deep(where) from None
        except UnicodeEncodeError:
            raise FormatError(f"{where}: invalid JSON: a string holds a lone surrogate "
                              "(\\ud800-\\udfff)") from None
    return value


class NestingError(FormatError):
    """JSON nested too deep: an error even where text that is not JSON would be taken as a word
    (such text is JSON in all but its depth)."""


def nested_too_deep(where: str) -> FormatError:
    """The error for JSON (or an array) nested more than ``MAX_DEPTH`` deep."""
    return NestingError(f"{where}: JSON nested more than {MAX_DEPTH} deep")
