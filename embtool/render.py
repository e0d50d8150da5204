"""Writing results: json, jsonl, csv, tsv, npy, a table for humans, and plain text.

Data goes to stdout (or ``-o FILE``); the default format of a command does not depend on what
stdout is.  Floats are written with the shortest text that reads back to the same float32
(float64 for F64 tables), as ``str(numpy.float32(x))``.  Non-finite values are written ``NaN``,
``Infinity``, ``-Infinity`` in JSON (what Python's json module, JavaScript's JSON5 readers, pandas
and jq 1.7 read back), or ``null`` with ``strict_json`` (RFC 8259 has no non-finite numbers), and
``nan``/``inf`` in csv/tsv.  JSON output is never shortened: a list is complete or absent.

``-f table`` fits the terminal: rows wider than it show their first and last components around
an ellipsis column, at four decimals (or ``%.3e`` when all values are tiny or some are huge), as
numpy and pandas summarise arrays; ``full`` shows them all.

numpy and rich are imported on first use: the command line imports this module for ``FORMATS``
when it starts, and ``embtool --help`` or ``freeze`` must not pay for them.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from .errors import EmbtoolError, OutputExistsError

if TYPE_CHECKING:
    import numpy as np

#: every output format; each command offers those that apply to its data
FORMATS = ("json", "jsonl", "csv", "tsv", "npy", "table", "text")
_JSON_SPECIAL = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
#: the narrowest a word column of ``-f table`` gets before it is cut with an ellipsis
WORD_WIDTH = 24


class Output:
    """Where data goes (stdout or a file, refusing to replace one without ``force``) and how:
    ``fmt`` (None: no data is written), ``full`` (every column of a table), ``strict_json``."""

    def __init__(self, path: str | None = None, force: bool = False, *, fmt: str | None = "json",
                 full: bool = False, strict_json: bool = False):
        self.path = None if path in (None, "-") else Path(path)
        self.fmt = fmt
        self.full = full
        self.strict_json = strict_json
        if self.path is not None and self.path.exists() and not force:
            raise OutputExistsError(f"{self.path} already exists; use --force to replace it")
        if self.path is None and fmt == "npy" and sys.stdout.isatty():
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

    def dumps(self, obj, **kwargs) -> str:
        """JSON text of plain values, non-finite floats as this output writes them."""
        obj = to_jsonable(obj)
        if self.strict_json:
            obj = _nulls_for_nonfinite(obj)
        return json.dumps(obj, ensure_ascii=False, **kwargs)


def _atomic_write(path: Path, data: bytes) -> None:
    from .store import replace_atomically

    replace_atomically(path, lambda tmp: Path(tmp).write_bytes(data))


# -- values as text ----------------------------------------------------------------------------

def float_strings(arr) -> "np.ndarray":
    """Shortest round-trip text of each value (vectorised numpy formatting)."""
    import numpy as np

    return np.asarray(arr).astype(str)


def _json_floats(arr, strict: bool) -> "np.ndarray":
    import numpy as np

    s = float_strings(arr)
    if not np.isfinite(arr).all():
        for k, v in _JSON_SPECIAL.items():
            s[s == k] = "null" if strict else v
    return s


def _nested(strings) -> str:
    if strings.ndim == 0:
        return str(strings)
    if strings.ndim == 1:
        return "[" + ",".join(strings.tolist()) + "]"
    return "[" + ",".join(_nested(s) for s in strings) + "]"


def short_floats(arr) -> "np.ndarray":
    """Values for a human table: 4 decimals, or ``%.3e`` when the largest finite magnitude is
    below 1e-3 (all would read 0.0000) or at least 1e5 (as pandas does, a tiny value among
    ordinary ones reads 0.0000 rather than turning the whole table scientific)."""
    import numpy as np

    arr = np.asarray(arr, dtype=np.float64)
    finite = np.abs(arr[np.isfinite(arr)])
    top = finite.max() if finite.size else 0.0
    scientific = top != 0 and (top < 1e-3 or top >= 1e5)
    return np.char.mod("%.3e" if scientific else "%.4f", arr) if arr.size else arr.astype(str)


def to_jsonable(obj):
    """Plain Python values for json.dumps (numpy scalars and arrays converted)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return to_jsonable(obj.tolist())
    return obj


def _nulls_for_nonfinite(obj):
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _nulls_for_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nulls_for_nonfinite(v) for v in obj]
    return obj


# -- arrays and rows ---------------------------------------------------------------------------

def render_array(arr, out: Output, *, labels: Mapping[str, Sequence] | None = None,
                 records: bool = False) -> None:
    """An array of shape ``(*, D)`` (``lookup``).

    json nested lists of the array's shape, jsonl one vector per line, csv/tsv/table one row per
    vector after the ``labels`` columns (of equal length, e.g. ``{"id": [...]}``), npy the exact
    array.  With ``records`` (a 2-D ``arr``) json and jsonl also carry the labels: one object per
    row (``{"id": ..., "word": ..., "vector": [...]}``), so a consumer can align rows and keys.
    """
    import numpy as np

    arr = np.asarray(arr)
    fmt = out.fmt
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, arr)
        out.write_bytes(buf.getvalue())
        return
    if records and fmt in ("json", "jsonl"):
        render_rows(labels or {}, out, vectors=arr)
        return
    if fmt == "json":
        out.write_text(_nested(_json_floats(arr, out.strict_json)) + "\n")
        return
    # rows x D, spelled out: reshape(-1, 0) cannot infer the rows of a zero-width table
    flat = arr.reshape(int(np.prod(arr.shape[:-1])), arr.shape[-1]) if arr.ndim else arr.reshape(1, 1)
    if fmt == "jsonl":
        s = _json_floats(flat, out.strict_json)
        out.write_text("".join("[" + ",".join(r) + "]\n" for r in s.tolist()))
        return
    render_rows(labels or {}, out, vectors=flat)


def render_rows(columns: Mapping[str, Sequence], out: Output, *, vectors=None,
                vector_key: str = "vector") -> None:
    """Rows given as columns of equal length (ids, words, scores, a ``query`` echoed, ...) and
    optionally one vector per row: json a list of objects, jsonl one object per line, csv/tsv
    a header then rows (vector components as ``v0 .. v{D-1}``), table for humans.  A column may
    hold any JSON value (a list of neighbours, say); csv/tsv/table write it as JSON text."""
    import numpy as np

    names = list(columns)
    n = len(vectors) if vectors is not None else (len(columns[names[0]]) if names else 0)
    fmt = out.fmt
    if fmt in ("json", "jsonl"):
        # each object is its labels' JSON with the closing brace replaced by the vector's text,
        # formatted for all rows at once (json.dumps of 1M vectors would be ~20x slower)
        labels = [out.dumps(dict(zip(names, row)))[:-1] for row in zip(*(columns[k] for k in names))] \
            if names else ["{"] * n
        if vectors is not None:
            strings = _json_floats(np.asarray(vectors), out.strict_json)
            key = json.dumps(vector_key)
            sep = ", " if names else ""
            items = [f"{lab}{sep}{key}: {_nested(v)}}}" for lab, v in zip(labels, strings)]
        else:
            items = [lab + "}" for lab in labels]
        if fmt == "json":
            out.write_text("[" + ", ".join(items) + "]\n")
        else:
            out.write_text("".join(item + "\n" for item in items))
        return
    label_rows = [list(row) for row in zip(*(columns[k] for k in names))] if names else [[] for _ in range(n)]
    if fmt in ("csv", "tsv"):
        import csv

        header = names + ([f"v{j}" for j in range(np.shape(vectors)[1])] if vectors is not None else [])
        values = float_strings(vectors).tolist() if vectors is not None else [[] for _ in range(n)]
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(lab + val for lab, val in zip(_csv_cells(label_rows), values))
        out.write_text(buf.getvalue())
        return
    if fmt == "table":
        _render_table(names, label_rows, vectors, out)
        return
    raise EmbtoolError(f"format {fmt} does not apply here")


def _cell(x) -> str:
    if isinstance(x, float):
        return str(short_floats([x])[0])
    return _csv_cell(x)


def _csv_cell(x):
    """csv text of a value: floats (e.g. scores) as their shortest round-trip text, like the
    vectors; lists and objects as JSON."""
    if isinstance(x, float):
        return repr(x)
    if x is None:  # e.g. the word of a row that has none
        return ""
    if isinstance(x, (list, tuple, dict)):
        return json.dumps(to_jsonable(x), ensure_ascii=False)
    return str(x)


def _csv_cells(label_rows):
    return [[_csv_cell(x) for x in row] for row in label_rows]


def _render_table(names, label_rows, vectors, out: Output) -> None:
    """A rich table that fits the width of the terminal (see the module's docstring)."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console(file=sys.stdout)  # its width: the terminal's, else $COLUMNS, else 80
    cells = [[_cell(x) for x in row] for row in label_rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(names)]
    widths = [min(w, WORD_WIDTH) if h in ("word", "query") else w for h, w in zip(names, widths)]
    shown, values = [], None
    if vectors is not None:
        vectors = np.asarray(vectors)
        d = vectors.shape[1]
        values = short_floats(vectors)
        vw = max([len(f"v{d - 1}")] + [int(np.char.str_len(values).max()) if values.size else 1])
        room = console.width - 1 - sum(w + 3 for w in widths)
        if out.full or d * (vw + 3) <= room:
            shown = list(range(d))
        else:
            k = max(2, (room - 4) // (vw + 3))  # 4: the ellipsis column
            head = (k + 1) // 2
            shown = list(range(head)) + [None] + list(range(d - (k - head), d))
    t = RichTable()
    for h in names:
        t.add_column(h, overflow="ellipsis", max_width=WORD_WIDTH if h in ("word", "query") else None,
                     no_wrap=True)
    for j in shown:
        t.add_column("…" if j is None else f"v{j}", justify="right", no_wrap=True)
    for i, row in enumerate(cells):
        vals = ["…" if j is None else values[i, j] for j in shown] if values is not None else []
        t.add_row(*row, *vals)
    width = 1 + sum(w + 3 for w in widths) + sum((vw if j is not None else 1) + 3 for j in shown)
    if out.path is None and width <= console.width:
        console.print(t)
        return
    buf = io.StringIO()  # a file, or --full wider than the terminal: lines as long as needed
    Console(file=buf, width=max(width, console.width), no_color=True).print(t)
    out.write_text(buf.getvalue())


# -- objects: reports, descriptions ------------------------------------------------------------

def render_object(obj: dict, out: Output, *, text: Callable[[dict], str] | None = None,
                  rows: Callable[[dict], tuple[dict, Sequence | None]] | None = None) -> None:
    """A report or description: json (indented), jsonl (one line), ``text`` (a function giving
    the human text) or csv/tsv/table from ``rows`` (a function giving ``render_rows`` columns).
    ``out.fmt`` None writes nothing."""
    fmt = out.fmt
    if fmt is None:
        return
    if fmt == "json":
        out.write_text(out.dumps(obj, indent=2) + "\n")
    elif fmt == "jsonl":
        out.write_text(out.dumps(obj) + "\n")
    elif fmt == "text" and text is not None:
        out.write_text(text(obj))
    elif fmt in ("csv", "tsv", "table") and rows is not None:
        render_rows(rows(obj), out)
    else:
        raise EmbtoolError(f"format {fmt} does not apply here")


def _value(v) -> str:
    """A hyper-parameter or config value as a person writes it: 0.01, (0.9, 0.999), true."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_value(x) for x in v) + ")"
    if v is None:
        return "none"
    return str(v)


def info_text(facts: dict) -> str:
    """``info`` for humans: the file, the table in it, its tensors and other metadata."""
    lines = [f"{facts['path']}  ({facts['size_bytes']:,} bytes, {len(facts['tensors'])} tensors)"]
    model = facts.get("model")
    if model is not None:
        lines.append(f"model      {model['kind']}: weights {model['weights']}, tokenizer "
                     f"{model['tokenizer'] or 'none'}")
    t = facts["table"]
    if t is not None:
        lines.append(f"table      {t['tensor']}: {t['num_embeddings']:,} x {t['embedding_dim']} {t['dtype']}"
                     + ("" if t["embtool_format"] else "  (not written by embtool: defaults shown)"))
        lines.append("config     " + ", ".join(f"{k}={_value(t[k])}" for k in (
            "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse")))
        lines.append(f"frozen     {_value(t['frozen'])}")
        v = t["vocab"]
        lines.append("vocab      none" if v is None else
                     f"vocab      {v['size']:,} words: " + " ".join(v["sample"]) +
                     (" ..." if v["size"] > len(v["sample"]) else "") +
                     (f" ({v['rows_without_word']:,} rows have no word)" if v.get("rows_without_word") else ""))
        lines += [f"note       {note}" for note in t.get("notes", [])]
        o = t["optimizer"]
        if o is None:
            lines.append("optimizer  none")
        else:
            hp = o["hparams"]
            hp = ", ".join(f"{k}={_value(x)}" for k, x in hp.items()) if isinstance(hp, dict) else str(hp)
            lines.append(f"optimizer  {o['name']}, step {o['step']}: {hp}")
            lines.append(f"           state: {', '.join(o['state']) or 'none'}"
                         + (f" in {o['state_file']}" if o.get("state_file") else ""))
    elif "table_error" in facts:
        lines.append(f"table      none ({facts['table_error']})")
    sh = facts.get("shards")
    if sh:  # a sharded table: its first and last shard
        first, last = sh[0], sh[-1]
        lines.append(f"shards     {len(sh)} files: {first['file']} rows [{first['rows'][0]}, {first['rows'][1]})"
                     + (f" ... {last['file']} rows [{last['rows'][0]}, {last['rows'][1]})" if len(sh) > 1 else ""))
    lines.append("tensors")
    for x in facts["tensors"]:
        lines.append(f"  {x['name']:<24} {x['dtype']:<5} {str(x['shape']):<20} {x['bytes']:,} bytes"
                     + (f"  {x['file']}" if "file" in x else ""))
    other = {k: v for k, v in facts["metadata"].items() if not k.startswith("embtool.")}
    if other:
        lines.append("metadata")
        lines += [f"  {k} = {v}" for k, v in sorted(other.items())]
    if "stats" in facts:
        from .stats import format_stats

        s = facts["stats"]
        words = {}
        for item in s["neighbours"]:
            if "word" in item:
                words[item["row"]] = item["word"]
                words.update(zip((r for r, _ in item["neighbours"]), item["neighbour_words"]))
        lines.append(format_stats(s, name=words.get if words else None))
    return "\n".join(lines) + "\n"
