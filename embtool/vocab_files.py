"""Vocabulary files naming the rows of a tensor: a Hugging Face ``tokenizer.json``, a JSON
``{token: id}`` map (``vocab.json``), or one token per line (a BERT ``vocab.txt``).

The JSON is read here rather than through the ``tokenizers`` library (not a dependency): only the
token -> id table is needed, and it is plain JSON.

* ``tokenizer.json``: ``model.vocab`` is ``{token: id}`` for WordPiece, BPE and WordLevel models
  and a list of ``[token, score]`` pairs for Unigram models (id = position); every entry of
  ``added_tokens`` (``{"id": ..., "content": ...}``) names its id too, and wins over a model token
  of the same id (it is what the tokenizer produces for that id).  Tokens are the tokenizer's own
  strings (``##ing``, ``Ġthe``, ``▁the``), not decoded text.
* one token per line: split on ``\\n``; a trailing ``\\r`` (CRLF) is removed and a UTF-8 BOM at
  the start is dropped, as for vector files (both reported); nothing else is stripped; an empty
  line is an error (it cannot be a token).
* a row whose id no token names, and every row past the end of a shorter vocabulary, has no word
  (``None``); its id still works.  A token naming a row past the tensor's end is an error.
* the same token for two rows follows ``on_duplicate``: ``first`` (the lower id keeps it, the
  other row has no word), ``last``, or ``error``.  Rows are never dropped: they are the tensor's.

Every error names the file and the line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, FormatError
from .sniff import BOM

DUPLICATE_POLICIES = ("first", "last", "error")


@dataclass
class FileVocabulary:
    """The word of each row (None: a row without a word)."""
    words: list
    kind: str                     #: "WordPiece tokenizer", "one token per line", ...
    notes: list[str] = field(default_factory=list)

    @property
    def unnamed(self) -> int:
        return sum(w is None for w in self.words)


def read_vocabulary(path, rows: int, *, on_duplicate: str = "first",
                    cut: bool = False) -> FileVocabulary:
    """The words of ``rows`` rows from the vocabulary file at ``path``.  ``cut``: tokens naming
    rows past ``rows`` are dropped (``--limit``) instead of being an error."""
    if on_duplicate not in DUPLICATE_POLICIES:
        raise ConfigError(f"on_duplicate must be one of {', '.join(DUPLICATE_POLICIES)}, "
                          f"not {on_duplicate!r}")
    path = Path(path)
    raw = path.read_bytes()
    body = raw[len(BOM):] if raw.startswith(BOM) else raw
    if body.lstrip()[:1] == b"{" and (path.suffix.lower() == ".json" or _parses(body)):
        entries, kind, notes, text = _json_entries(path, body)
        where = _json_line(text)
    else:
        entries, notes = _line_entries(path, raw)
        kind = "one token per line"
        where = None
    if raw.startswith(BOM):
        notes.insert(0, "repaired BOM")
    return _by_row(path, entries, rows, on_duplicate, cut, kind, notes, where)


def _parses(body: bytes) -> bool:
    try:
        json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return True


# -- one token per line -----------------------------------------------------------------------

def _line_entries(path, raw: bytes):
    """``[(id, token, line)]`` of a one-token-per-line file, and notes on repairs."""
    if raw.startswith(BOM):
        raw = raw[len(BOM):]
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    entries, crlf = [], 0
    for no, line in enumerate(lines, 1):
        if line.endswith(b"\r"):
            line = line[:-1]
            crlf += 1
        if not line:
            raise FormatError(f"{path}, line {no}: empty line in vocabulary file")
        try:
            entries.append((no - 1, line.decode("utf-8"), no))
        except UnicodeDecodeError as e:
            raise FormatError(f"{path}, line {no}: not valid UTF-8 ({e.reason})") from None
    return entries, [f"{crlf} CRLF"] if crlf else []


def read_lines(path) -> list[str]:
    """The tokens of a one-token-per-line file, in order (BOM and CRLF repaired)."""
    return [tok for _, tok, _ in _line_entries(path, Path(path).read_bytes())[0]]


# -- JSON ---------------------------------------------------------------------------------------

def _json_entries(path, body: bytes):
    """``[(id, token, None)]`` of a tokenizer.json or ``{token: id}`` file."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        line = body.count(b"\n", 0, e.start) + 1
        raise FormatError(f"{path}, line {line}: not valid UTF-8 ({e.reason})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}, line {e.lineno}: invalid JSON ({e.msg})") from None
    except RecursionError:
        raise FormatError(f"{path}: JSON nested too deeply") from None
    notes: list[str] = []
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        model = obj["model"]
        vocab = model.get("vocab")
        mtype = model.get("type") or ("Unigram" if isinstance(vocab, list) else "BPE/WordPiece")
        if isinstance(vocab, list):
            entries = []
            for i, item in enumerate(vocab):
                if not (isinstance(item, list) and item and isinstance(item[0], str)):
                    raise FormatError(f"{path}, line {_json_line(text)(item)}: Unigram vocab entry "
                                      f"{i} is not a [token, score] pair")
                entries.append((i, item[0], None))
        elif isinstance(vocab, dict):
            entries = _map_entries(path, vocab, text)
        else:
            raise FormatError(f"{path}: tokenizer model type {mtype!r} has no vocabulary "
                              "(model.vocab) embtool can read")
        added = obj.get("added_tokens") or []
        if not isinstance(added, list):
            raise FormatError(f"{path}: added_tokens is not a list")
        for item in added:
            if not (isinstance(item, dict) and isinstance(item.get("content"), str)):
                raise FormatError(f"{path}, line {_json_line(text)(item)}: an added token without "
                                  "a 'content' string")
            entries.append((_check_id(path, item.get("id"), item["content"], text),
                            item["content"], "added"))
        if added:
            notes.append(f"{len(added)} added tokens")
        return entries, f"{mtype} tokenizer", notes, text
    if isinstance(obj, dict):
        return _map_entries(path, obj, text), "JSON {token: id} map", notes, text
    raise FormatError(f"{path}: a JSON vocabulary must be a tokenizer.json or a {{token: id}} object")


def _map_entries(path, mapping: dict, text: str):
    return [(_check_id(path, i, tok, text), tok, None) for tok, i in mapping.items()]


def _check_id(path, value, token, text) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FormatError(f"{path}, line {_json_line(text)(token)}: token {token!r} has id "
                          f"{value!r}; ids are non-negative integers")
    return value


def _json_line(text: str):
    """A function giving the line where a token (or entry) is written in the JSON ``text``:
    json.loads keeps no positions, so the entry is searched for as it would be written."""
    def line(item) -> str:
        for ensure_ascii in (False, True):
            needle = json.dumps(item, ensure_ascii=ensure_ascii)
            if isinstance(item, (list, dict)):
                needle = needle[: max(1, needle.find(",") if "," in needle else len(needle))]
            at = text.find(needle)
            if at >= 0:
                return str(text.count("\n", 0, at) + 1)
        return "?"
    return line


# -- rows ---------------------------------------------------------------------------------------

def _by_row(path, entries, rows, on_duplicate, cut, kind, notes, where) -> FileVocabulary:
    """Place the ``(id, token, line)`` entries on rows, applying the duplicate policy."""
    def at(entry) -> str:
        _, token, line = entry
        if isinstance(line, int):
            return f"line {line}"
        return f"line {where(token) if where else '?'}"

    by_id: dict[int, tuple] = {}
    overridden = 0
    beyond = 0
    for entry in entries:
        i, token, line = entry
        if i >= rows:
            if not cut:
                raise FormatError(f"{path}, {at(entry)}: token {token!r} names row {i}, past the "
                                  f"tensor's {rows} rows")
            beyond += 1
            continue
        if i in by_id and by_id[i][1] != token:
            if line != "added":
                raise FormatError(f"{path}, {at(entry)}: id {i} is given to {by_id[i][1]!r} and "
                                  f"{token!r}")
            overridden += 1
        by_id[i] = entry
    words: list = [None] * rows
    first_row: dict[str, int] = {}
    duplicates = 0
    for i in sorted(by_id):
        token = by_id[i][1]
        prev = first_row.get(token)
        if prev is None:
            first_row[token] = i
            words[i] = token
            continue
        if on_duplicate == "error":
            raise FormatError(f"{path}, {at(by_id[i])}: duplicate token {token!r} (rows {prev} "
                              f"and {i}); choose one with --on-duplicate first|last")
        duplicates += 1
        if on_duplicate == "last":
            words[prev] = None
            first_row[token] = i
            words[i] = token
    if overridden:
        notes.append(f"{overridden} added tokens replace the model's token of their id")
    if duplicates:
        notes.append(f"{duplicates} duplicate tokens (kept {on_duplicate}; the other rows have no word)")
    if beyond:
        notes.append(f"{beyond} tokens past the last row dropped")
    return FileVocabulary(words, kind, notes)
