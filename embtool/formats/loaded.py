"""The result of loading a vector file: the table, its words, and what was repaired or skipped."""
from __future__ import annotations

import codecs
import threading
from dataclasses import dataclass, field

import numpy as np

from embtool import vocab as _vocab
from embtool.errors import FormatError

DUPLICATE_POLICIES = ("first", "last", "error")
UNICODE_ERRORS = ("strict", "replace", "ignore")


@dataclass
class LoadReport:
    """What a load found.  Counts are of lines/rows of the source file."""

    source: str
    format: str
    compression: str | None = None
    rows: int = 0                  #: rows of the loaded table
    dim: int = 0
    dtype: str = "float32"
    header_count: int | None = None
    limit: int | None = None
    limit_reached: bool = False
    bom: bool = False              #: a UTF-8 byte order mark was skipped
    crlf_lines: int = 0            #: rows ending in CR LF (CR removed)
    trailing_space_lines: int = 0  #: rows with trailing spaces/tabs (removed)
    blank_lines: int = 0           #: blank lines skipped (not rows)
    spaced_keys: int = 0           #: words containing spaces (the last dim fields were the vector)
    on_duplicate: str = "first"
    duplicates: int = 0            #: rows dropped because their word occurred before/after
    duplicate_words: int = 0       #: distinct words that occurred more than once
    nonfinite: int = 0             #: nan/inf values in the table (allowed only on request)
    first_nonfinite: str | None = None  #: where the first one is ("line 7, value 3: 'nan'")
    overflow: int = 0              #: of which finite numbers too large for the dtype
    undecodable_words: int = 0     #: words with bytes invalid in the encoding (replaced/ignored)
    empty_words: int = 0           #: words that became empty by unicode_errors="ignore"
    ignored_rows: int = 0          #: rows after the header's count (read as gensim: ignored)
    trailing_bytes: int = 0        #: binary: bytes after the last counted vector (ignored)
    crlf_records: int = 0          #: binary: CR LF found before a word (skipped)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: rows, dim and what was skipped or repaired."""
        what = f"{self.format}{', ' + self.compression if self.compression else ''}"
        head = f"loaded {self.rows} x {self.dim} {self.dtype} from {self.source} ({what})"
        skipped = _join([
            (self.duplicates, f"{self.duplicates} duplicate rows (kept {self.on_duplicate})"),
            (self.blank_lines, f"{self.blank_lines} blank lines"),
            (self.ignored_rows, f"{self.ignored_rows} rows beyond the header count"),
            (self.trailing_bytes, f"{self.trailing_bytes} trailing bytes"),
        ])
        repaired = _join([
            (self.bom, "BOM"),
            (self.crlf_lines + self.crlf_records, f"{self.crlf_lines + self.crlf_records} CRLF"),
            (self.trailing_space_lines, f"{self.trailing_space_lines} trailing spaces"),
            (self.spaced_keys, f"{self.spaced_keys} words with spaces"),
            (self.undecodable_words, f"{self.undecodable_words} undecodable words"),
        ])
        parts = [head]
        if self.limit_reached:
            parts.append(f"limit {self.limit}")
        if self.nonfinite:
            parts.append(f"{self.nonfinite} non-finite values")
        if skipped:
            parts.append(f"skipped {skipped}")
        if repaired:
            parts.append(f"repaired {repaired}")
        return "; ".join(parts)


def _join(items):
    return ", ".join(text for count, text in items if count)


class LoadedVectors:
    """``vectors`` (N x D), ``words`` (list[str], None for .npy), ``report``.

    For ``dtype="bfloat16"`` the vectors are a float32 array whose values are already rounded to
    bfloat16 (round to nearest even, as torch converts float32 to bfloat16; numpy has no bfloat16):
    ``torch.from_numpy(v).to(torch.bfloat16)`` is exact, and ``dtype`` says "bfloat16".
    ``vocab_arrays()`` gives the three ``vocab.*`` tensors without creating Python strings.
    """

    def __init__(self, vectors, report: LoadReport, dtype: str, vocab_arrays=None):
        self.vectors = vectors
        self.report = report
        self.dtype = dtype
        self._vocab = vocab_arrays
        self._words = None

    @property
    def words(self) -> list[str] | None:
        if self._vocab is None:
            return None
        if self._words is None:
            self._words = _vocab.decode_spans(self._vocab[_vocab.BYTES], self._vocab[_vocab.OFFSETS])
        return self._words

    def vocab_arrays(self) -> dict[str, np.ndarray] | None:
        return self._vocab

    def vocab(self) -> _vocab.Vocab | None:
        return None if self._vocab is None else _vocab.Vocab.from_arrays(self._vocab)

    def summary(self) -> str:
        return self.report.summary()

    def __repr__(self):
        return f"<LoadedVectors {self.summary()}>"


# -- decoding words -----------------------------------------------------------------------

_errors_seen = threading.local()


def _recording(replacement):
    def handler(exc):
        _errors_seen.positions.append(exc.start)
        return replacement, exc.end
    return handler


codecs.register_error("embtool-replace", _recording("\ufffd"))
codecs.register_error("embtool-ignore", _recording(""))


def decode_keys(data, offsets, where, *, name, encoding, unicode_errors, where_kind="line"):
    """UTF-8 ``(bytes, offsets, undecodable_rows)`` of raw keys in the file's encoding.

    The keys are decoded at once, joined by ``\\n`` (no key contains one in text files; binary
    keys are checked): a decoding error stays inside its key, as when gensim decodes each line.
    Strict decoding names the line (or byte offset) of the first bad word."""
    n = len(offsets) - 1
    lo = int(offsets[0])
    chunk = data[lo:int(offsets[-1])]
    utf8 = codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    enc = "utf-8" if utf8 else encoding
    if n and (chunk == 10).any():  # only binary files can have such words: decode one by one
        words = _decode_each(data, offsets, where, name, enc, unicode_errors, where_kind)
        new_data, new_offsets = _vocab.encode_words(words)
        return new_data, new_offsets, 0
    joined = np.insert(chunk, offsets[1:-1] - lo, 10).tobytes() if n else b""
    seps = offsets[1:-1] - lo + np.arange(n - 1)
    try:
        if unicode_errors == "strict":
            text = joined.decode(enc)
            if utf8:
                return chunk, offsets - lo, 0
        else:
            _errors_seen.positions = []
            text = joined.decode(enc, "embtool-" + unicode_errors)
    except UnicodeDecodeError as e:
        row = int(np.searchsorted(seps, e.start))
        raise FormatError(
            f"{name}, {where_kind} {int(where[row])}: word is not valid {enc} ({e.reason}); "
            "use --unicode-errors replace or ignore (unicode_errors= in Python), or give the file's "
            "--encoding") from None
    except UnicodeError:  # a decoder that names no position (punycode, idna, utf-16's BOM)
        _decode_each(data, offsets, where, name, enc, unicode_errors, where_kind)
        raise FormatError(f"{name}: the words are not valid {enc}") from None
    bad = 0
    if unicode_errors != "strict":
        bad = len(np.unique(np.searchsorted(seps, np.array(_errors_seen.positions, np.int64))))
    words = text.split("\n") if n else []
    if len(words) != n:  # an encoding whose decoder does not keep b"\n" as "\n"
        words = _decode_each(data, offsets, where, name, enc, unicode_errors, where_kind)
    new_data, new_offsets = _vocab.encode_words(words)
    return new_data, new_offsets, bad


def _decode_each(data, offsets, where, name, enc, unicode_errors, where_kind) -> list[str]:
    """The words decoded one by one; the first that does not decode is a FormatError."""
    words = []
    for i in range(len(offsets) - 1):
        try:
            words.append(data[offsets[i]:offsets[i + 1]].tobytes().decode(enc, unicode_errors))
        except UnicodeError as e:
            raise FormatError(f"{name}, {where_kind} {int(where[i])}: word is not valid {enc} "
                              f"({getattr(e, 'reason', e)})") from None
    return words


def dedupe(data, offsets, where, on_duplicate, *, name, where_kind="line"):
    """Sort the words, apply the duplicate policy.

    Returns ``(keep, vocab_arrays, dropped, words_with_dups)``; ``keep`` is None when nothing is
    dropped.  ``first`` keeps the first occurrence (gensim, without its phantom zero row),
    ``last`` keeps the last one (torchtext's stoi), both at the kept occurrence's position;
    ``error`` names the word and both lines."""
    order, distinct = _vocab.sort_spans(data, offsets)
    if distinct.all():
        return None, {_vocab.BYTES: data, _vocab.OFFSETS: offsets, _vocab.ORDER: order}, 0, 0
    if on_duplicate == "error":
        a, b = _vocab.first_duplicate(order, distinct)
        word = data[offsets[b]:offsets[b + 1]].tobytes().decode("utf-8", "replace")
        at = "at byte offsets" if where_kind == "byte" else "on lines"
        raise _vocab.DuplicateWordError(
            f"{name}: duplicate word {word!r} {at} {int(where[a])} and {int(where[b])} "
            "(on_duplicate='first' keeps the first, 'last' the last)")
    n = len(order)
    if on_duplicate == "first":
        kept_sorted = distinct
    else:
        kept_sorted = np.append(distinct[1:], True)
    keep = np.zeros(n, bool)
    keep[order[kept_sorted]] = True
    rank = np.cumsum(keep) - 1
    new_order = rank[order[kept_sorted]]
    lengths = np.diff(offsets)
    new_data = data[np.repeat(keep, lengths)]
    new_offsets = np.zeros(int(keep.sum()) + 1, np.int64)
    np.cumsum(lengths[keep], out=new_offsets[1:])
    arrays = {_vocab.BYTES: new_data, _vocab.OFFSETS: new_offsets, _vocab.ORDER: new_order}
    groups = int(np.count_nonzero(~distinct[1:] & distinct[:-1]))
    return keep, arrays, int(n - keep.sum()), groups


def compact_rows(table: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``table[keep]`` computed in place (rows only move towards the front), then shrunk."""
    idx = np.flatnonzero(keep)
    step = 1 << 16
    for lo in range(0, len(idx), step):
        part = idx[lo:lo + step]
        if part[0] != lo or part[-1] != lo + len(part) - 1:
            table[lo:lo + len(part)] = table[part]
    return shrink(table, len(idx))


def shrink(table: np.ndarray, rows: int) -> np.ndarray:
    """The first ``rows`` rows of ``table``, releasing the rest of its memory when it owns it; a
    view of a larger buffer (the page-aligned table of a plain file) is cut in place: copying
    it would need a second table's memory."""
    if rows == len(table):
        return table
    if table.base is not None:
        return table[:rows]
    table.resize((rows,) + table.shape[1:], refcheck=False)
    return table
