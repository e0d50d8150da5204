"""Writing results: json, jsonl, csv, tsv, npy and a rich table.

Data goes to stdout (or ``-o FILE``); JSON is the default whatever stdout is.  Floats are written
with the shortest text that reads back to the same float32 (float64 for F64 tables), as
``str(numpy.float32(x))``; non-finite values are written ``NaN``, ``Infinity``, ``-Infinity`` in
JSON (the convention of Python's json module) and ``nan``/``inf`` in csv/tsv.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import EmbtoolError, OutputExistsError

FORMATS = ("json", "jsonl", "csv", "tsv", "npy", "table")
_JSON_SPECIAL = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def float_strings(arr: np.ndarray) -> np.ndarray:
    """Shortest round-trip text of each value (vectorised numpy formatting)."""
    arr = np.asarray(arr)
    return arr.astype(str)


def _json_floats(arr: np.ndarray) -> np.ndarray:
    s = float_strings(arr)
    if not np.isfinite(arr).all():
        for k, v in _JSON_SPECIAL.items():
            s[s == k] = v
    return s


def _nested(strings: np.ndarray) -> str:
    if strings.ndim == 0:
        return str(strings)
    if strings.ndim == 1:
        return "[" + ",".join(strings.tolist()) + "]"
    return "[" + ",".join(_nested(s) for s in strings) + "]"


class Output:
    """Where data goes: stdout or a file (refusing to overwrite without ``force``)."""

    def __init__(self, path: str | None = None, force: bool = False, binary: bool = False):
        self.path = None if path in (None, "-") else Path(path)
        if self.path is not None and self.path.exists() and not force:
            raise OutputExistsError(f"{self.path} already exists; use --force to replace it")
        if self.path is None and binary and sys.stdout.isatty():
            raise EmbtoolError("refusing to write binary .npy data to a terminal; use -o FILE or a pipe")

    def write_text(self, text: str) -> None:
        if self.path is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            _atomic_write(self.path, text.encode("utf-8"))

    def write_bytes(self, data: bytes) -> None:
        if self.path is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            _atomic_write(self.path, data)


def _atomic_write(path: Path, data: bytes) -> None:
    from .store import replace_atomically

    replace_atomically(path, lambda tmp: Path(tmp).write_bytes(data))


def _row_labels(n: int, ids: np.ndarray | None, words: Sequence[str] | None):
    cols, rows = [], []
    if ids is not None:
        cols.append("id")
        rows.append([str(i) for i in np.asarray(ids).reshape(-1).tolist()])
    if words is not None:
        cols.append("word")
        rows.append(list(words))
    return cols, [list(r) for r in zip(*rows)] if rows else [[] for _ in range(n)]


def render_array(arr: np.ndarray, fmt: str, out: Output, *, ids=None, words=None, title=None) -> None:
    """An array of shape ``(*, D)``: json nested lists, jsonl one vector per line, csv/tsv one row
    per vector (with ``id``/``word`` columns when given), npy the exact array, table for humans."""
    arr = np.asarray(arr)
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, arr)
        out.write_bytes(buf.getvalue())
        return
    if fmt == "json":
        out.write_text(_nested(_json_floats(arr)) + "\n")
        return
    # rows x D, spelled out: reshape(-1, 0) cannot infer the rows of a zero-width table
    flat = arr.reshape(int(np.prod(arr.shape[:-1])), arr.shape[-1]) if arr.ndim else arr.reshape(1, 1)
    if fmt == "jsonl":
        s = _json_floats(flat)
        out.write_text("".join("[" + ",".join(r) + "]\n" for r in s.tolist()))
        return
    label_cols, labels = _row_labels(flat.shape[0], ids, words)
    header = label_cols + [f"v{j}" for j in range(flat.shape[1])]
    rows = [lab + r for lab, r in zip(labels, float_strings(flat).tolist())]
    render_rows(header, rows, fmt, out, title=title)


def render_rows(header: Sequence[str], rows: Iterable[Sequence], fmt: str, out: Output, *, title=None) -> None:
    """Tabular data as csv, tsv or a rich table."""
    if fmt in ("csv", "tsv"):
        import csv

        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        out.write_text(buf.getvalue())
        return
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table as RichTable

        t = RichTable(title=title)
        for h in header:
            t.add_column(str(h), overflow="fold")
        for r in rows:
            t.add_row(*[str(x) for x in r])
        if out.path is None:
            Console(file=sys.stdout).print(t)
        else:
            buf = io.StringIO()
            Console(file=buf, width=200, no_color=True).print(t)
            out.write_text(buf.getvalue())
        return
    raise EmbtoolError(f"format {fmt} does not apply here")


def to_jsonable(obj):
    """Plain Python values for json.dumps (numpy scalars and arrays converted)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def render_records(records: list[dict], fmt: str, out: Output, *, title=None) -> None:
    """A list of flat objects (e.g. similar's neighbours): json list, jsonl, csv/tsv, table."""
    records = to_jsonable(records)
    if fmt == "json":
        out.write_text(json.dumps(records, ensure_ascii=False) + "\n")
    elif fmt == "jsonl":
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    elif fmt == "npy":
        raise EmbtoolError("--format npy applies to arrays only; use json, jsonl, csv, tsv or table")
    else:
        header = list(records[0]) if records else []
        render_rows(header, [[r.get(h, "") for h in header] for r in records], fmt, out, title=title)


def render_object(obj: dict, out: Output) -> None:
    out.write_text(json.dumps(to_jsonable(obj), ensure_ascii=False, indent=2) + "\n")
