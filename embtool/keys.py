"""Keys -> rows: words of a table's vocabulary or row numbers as a user gives them, the policy for
unknown words, and the closest vocabulary entries to suggest for a word that is not there.

Suggestions (``closest_words``) cost a few binary searches and vectorised passes over a bounded
part of the vocabulary, so they stay cheap (milliseconds) on a vocabulary of millions of words:

1. words that differ only in case (``King`` -> ``king``), found by binary search;
2. words within a small edit distance (optimal string alignment: insertions, deletions,
   substitutions and swaps of neighbours, case ignored for ASCII), best first, ties broken by
   row (vector files list frequent words first), searched among the first ``HEAD_ROWS`` rows and
   among all the words that begin as the query does (up to one edit in its first bytes).
   Distances are counted in UTF-8 bytes, which is the character count for ASCII; for other
   scripts a close word may be missed, never invented.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import UNK_KEY
from .errors import ConfigError, FormatError, IndexRangeError, KeyNotFoundError
from .ids import parse_int
from .vocab import Vocab

#: how many suggestions an error message shows
SUGGESTIONS = 3
#: at most this many words are named on stderr when ``--unknown skip`` drops words
SHOWN_SKIPPED = 10


@dataclass
class WordRows:
    """Rows of looked-up words: ``ids`` in the words' shape, ``words`` the flat words kept (one
    per row of the result, to label it), ``skipped`` the unknown words dropped (``skip``)."""
    ids: np.ndarray
    words: list[str]
    skipped: list[str] = field(default_factory=list)


def rows_for_words(table, words, *, unknown: str = "error") -> WordRows:
    """Rows of ``words`` (a flat or nested list of str) in the same shape.

    ``unknown``: ``error`` (KeyNotFoundError naming the first unknown word and the closest
    entries), ``skip`` (drop it; flat input only) or ``unk`` (the table's unk row,
    ``embtool.unk_idx``)."""
    vocab = _vocab_of(table)
    if unknown == "subword":
        raise ConfigError("--unknown subword gives vectors, not rows: it does not apply to bags "
                          "(use error, skip or unk)")
    arr = np.array(words, dtype=object)
    flat = [str(w) for w in arr.reshape(-1)]
    ids = vocab.find_many(flat)
    missing = np.flatnonzero(ids < 0)
    if missing.size:
        if unknown == "error":
            raise KeyNotFoundError(unknown_word_message(vocab, flat[missing[0]], table.path,
                                                        others=missing.size - 1))
        if unknown == "unk":
            if UNK_KEY not in table.metadata:
                raise ConfigError(f"{table.path}: no unk row (load with --unk-token); "
                                  f"word {flat[missing[0]]!r} is unknown")
            ids[missing] = int(table.metadata[UNK_KEY])
        elif unknown == "skip":
            if arr.ndim > 1:
                raise ConfigError("--unknown skip needs a flat list of words")
            keep = ids >= 0
            return WordRows(ids[keep], [w for w, k in zip(flat, keep) if k],
                            [w for w, k in zip(flat, keep) if not k])
        else:
            raise ConfigError(f"unknown must be error, skip or unk, not {unknown!r}")
    return WordRows(ids.reshape(arr.shape), flat)


def rows_for_keys(table, keys, *, as_ids: bool = False) -> list[int]:
    """Rows of query keys: words when the table has a vocabulary (unless ``as_ids``), row
    numbers otherwise (each checked to be in range)."""
    vocab = table.vocab
    rows = []
    for key in keys:
        if vocab is not None and not as_ids:
            row = vocab.find(key)
            if row < 0:
                raise KeyNotFoundError(unknown_word_message(vocab, key, table.path))
        else:
            try:
                row = parse_int(key, "query")
            except FormatError:
                hint = " (the table has no vocabulary)" if vocab is None else ""
                raise KeyNotFoundError(f"{key!r} is not a row number{hint}") from None
            if not 0 <= row < table.num_embeddings:
                raise IndexRangeError(f"row {row} is out of range for a table of "
                                      f"{table.num_embeddings} rows")
        rows.append(row)
    return rows


def unknown_word_message(vocab: Vocab, word: str, where, others: int = 0) -> str:
    """``word 'kign' is not in the vocabulary of T; did you mean 'king', 'kin'?`` (``others``:
    how many more of the words asked for are unknown)."""
    close = closest_words(vocab, word)
    hint = "; did you mean " + ", ".join(map(repr, close)) + "?" if close else ""
    more = f" (nor are {others} more of the words)" if others else ""
    return f"word {word!r} is not in the vocabulary of {where}{more}{hint}"


def skipped_message(skipped: list[str]) -> str:
    """The stderr line of ``--unknown skip``: how many words were dropped, and which."""
    shown = ", ".join(map(repr, skipped[:SHOWN_SKIPPED]))
    more = f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
    return f"skipped {len(skipped)} unknown word{'s' if len(skipped) != 1 else ''}: {shown}{more}"


def _vocab_of(table) -> Vocab:
    if table.vocab is None:
        raise ConfigError(f"{table.path}: the table has no vocabulary; give row numbers")
    return table.vocab


# -- suggestions ------------------------------------------------------------------------------

def closest_words(vocab: Vocab, word: str, limit: int = SUGGESTIONS) -> list[str]:
    """Up to ``limit`` vocabulary entries closest to ``word`` (see the module docstring)."""
    found = []
    for variant in dict.fromkeys((word.lower(), word.capitalize(), word.title(), word.upper(),
                                  word.casefold(), word.swapcase())):
        row = vocab.find(variant) if variant != word else -1
        if row >= 0:
            found.append((row, variant))
    out = [w for _, w in sorted(found)]
    if len(out) < limit:
        for w in _by_edit_distance(vocab, word, limit + len(out)):
            if w not in out and w != word:
                out.append(w)
    return out[:limit]


def max_distance(n_bytes: int) -> int:
    """Edits tolerated for a word of this length: none up to 2 bytes, 1 up to 4, then 2 (a
    longer budget suggests unrelated words: 'a' is one edit from ',')."""
    return 0 if n_bytes <= 2 else 1 if n_bytes <= 4 else 2


def _by_edit_distance(vocab: Vocab, word: str, limit: int) -> list[str]:
    try:
        q = np.frombuffer(word.encode("utf-8"), np.uint8)
    except UnicodeEncodeError:
        return []
    n, d = len(q), max_distance(len(q))
    if d == 0 or len(vocab) == 0:
        return []
    offsets = np.asarray(vocab.offsets)
    folded = _ascii_fold(q)
    head = _head_rows(vocab, offsets, folded, n, d)
    rest = _prefix_rows(vocab, offsets, q, n, d)
    rows = np.concatenate((head, np.unique(rest[rest >= HEAD_ROWS])))  # the head is searched whole
    if rows.size == 0:
        return []
    lengths = offsets[rows + 1] - offsets[rows]
    cand = np.zeros((rows.size, int(lengths.max())), np.uint8)
    for j in range(cand.shape[1]):
        has = lengths > j
        cand[has, j] = vocab.data[offsets[rows[has]] + j]
    cand = _ascii_fold(cand)
    # bag distance, a lower bound of the edit distance: bytes of one not matched in the other
    common = np.zeros(rows.size, np.int64)
    for b, count in zip(*np.unique(folded, return_counts=True)):
        common += np.minimum((cand == b).sum(axis=1), count)
    near = np.maximum(lengths, n) - common <= d
    rows, cand, lengths = rows[near], cand[near], lengths[near]
    dist = _osa_distances(folded, cand, lengths)
    ok = np.flatnonzero(dist <= d)
    best = ok[np.lexsort((rows[ok], dist[ok]))][:limit]
    return vocab.words(rows[best])


#: suggestions are searched among this many first rows (vector files list frequent words first)
#: and, in the whole vocabulary, among the words that start as the query does (``_prefix_rows``):
#: one pass over all the bytes of a 2M-word vocabulary would cost several times the budget
HEAD_ROWS = 200_000


def _head_rows(vocab, offsets, folded, n, d) -> np.ndarray:
    """Rows among the first ``HEAD_ROWS`` that may be within ``d`` edits: of a length within
    ``d`` of ``n``, with at most ``d`` bytes that are not in the query (each needs an edit)."""
    k = min(len(vocab), HEAD_ROWS)
    lut = np.zeros(256, np.uint8)
    lut[folded] = lut[_ascii_upper(folded)] = 1
    # bytes inside the query per word, by differences of a running count (np.add.reduceat over
    # the word spans is several times slower); int32 is enough for the head's bytes
    if offsets[k] == 0:  # no bytes at all: only empty words, never a suggestion
        return np.zeros(0, np.int64)
    total = np.cumsum(lut[np.asarray(vocab.data[: offsets[k]])],
                      dtype=np.int32 if offsets[k] < 2**31 else np.int64)
    ends = offsets[1:k + 1]
    inside = np.where(ends > 0, total[ends - 1], 0) - np.where(offsets[:k] > 0, total[offsets[:k] - 1], 0)
    lengths = np.diff(offsets[:k + 1])
    outside = lengths - inside
    return np.flatnonzero((np.abs(lengths - n) <= d) & (outside <= d))


def _prefix_rows(vocab, offsets, q, n, d) -> np.ndarray:
    """Rows of words anywhere in the vocabulary that begin with the query's first ``d + 1``
    bytes, or with what one edit among them leaves (a byte dropped, two neighbours swapped),
    the first byte in either case; of a length within ``d`` of ``n``."""
    b = bytes(q)
    k = d + 1
    starts = {b[:k]} | {b[:i] + b[i + 1:k + 1] for i in range(k)} \
        | {b[:i] + b[i + 1:i + 2] + b[i:i + 1] + b[i + 2:k] for i in range(k - 1)}
    starts |= {bytes([c]) + p[1:] for p in starts if p for c in (_fold(p[0]), _upper(p[0]))}
    parts = []
    for p in starts:
        if len(p) < 2:
            continue
        lo = vocab._lower_bound(p)
        hi = vocab._lower_bound(p[:-1] + bytes([p[-1] + 1])) if p[-1] < 255 else len(vocab)
        rows = np.asarray(vocab.order[lo:hi], np.int64)
        lengths = offsets[rows + 1] - offsets[rows]
        parts.append(rows[np.abs(lengths - n) <= d])
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _fold(c: int) -> int:
    return c + 32 if 65 <= c <= 90 else c


def _upper(c: int) -> int:
    return c - 32 if 97 <= c <= 122 else c


def _ascii_fold(b: np.ndarray) -> np.ndarray:
    return np.where((b >= 65) & (b <= 90), b + 32, b).astype(np.uint8)


def _ascii_upper(b: np.ndarray) -> np.ndarray:
    return np.where((b >= 97) & (b <= 122), b - 32, b).astype(np.uint8)


def _osa_distances(q: np.ndarray, cand: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Optimal-string-alignment distance from ``q`` to each row of ``cand`` (zero padded to the
    longest; ``lengths`` the real lengths): the textbook dynamic programme, one query byte per
    step, every candidate and column at once."""
    c, m = cand.shape
    prev2 = None
    prev = np.broadcast_to(np.arange(m + 1), (c, m + 1)).copy()
    for i in range(1, len(q) + 1):
        cur = np.empty_like(prev)
        cur[:, 0] = i
        sub = prev[:, :-1] + (cand != q[i - 1])
        for j in range(1, m + 1):
            v = np.minimum(np.minimum(prev[:, j] + 1, cur[:, j - 1] + 1), sub[:, j - 1])
            if prev2 is not None and j > 1:
                swap = (cand[:, j - 1] == q[i - 2]) & (cand[:, j - 2] == q[i - 1])
                v = np.where(swap, np.minimum(v, prev2[:, j - 2] + 1), v)
            cur[:, j] = v
        prev2, prev = prev, cur
    return prev[np.arange(c), lengths]
