"""Words <-> rows: the on-disk vocabulary layout and an O(log N) index over it.

A table's vocabulary is three tensors stored next to ``weight`` (layout fixed):

* ``vocab.bytes``   uint8 1-D: the UTF-8 bytes of all words concatenated in row order;
* ``vocab.offsets`` int64 1-D, length N+1, ``offsets[0] == 0``: word i is
  ``bytes[offsets[i]:offsets[i+1]]``;
* ``vocab.order``   int64 1-D, length K <= N: the ids of the rows that have a word, sorted by
  word bytes (unsigned lexicographic, a prefix first: the order of Python ``bytes`` comparison,
  which for UTF-8 is also code point order).  Words are unique, so the order is a strict total
  order.  Usually K == N; a row missing from ``order`` has **no word** (its span is empty): a
  vocabulary file shorter than the tensor, or with ids it does not name, leaves such rows (their
  ids still work).  A reader that expects K == N refuses such a file cleanly (shape check).

``Vocab`` works on these arrays as given (they may be read-only memory maps) and never decodes
more words than asked for: ``find`` is a binary search over ``order``.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from embtool.errors import FormatError

BYTES = "vocab.bytes"
OFFSETS = "vocab.offsets"
ORDER = "vocab.order"


class DuplicateWordError(FormatError):
    """A vocabulary holds the same word twice."""


# -- building ---------------------------------------------------------------------------------

def _chunk_keys(padded, offsets, lengths, rows, level):
    """Big-endian uint64 of bytes ``8*level .. 8*level+7`` of each word (zero padded)."""
    start = offsets[rows] + 8 * level
    have = np.clip(lengths[rows] - 8 * level, 0, 8)
    win = sliding_window_view(padded, 8)[np.minimum(start, len(padded) - 8)]
    win = np.where(np.arange(8) < have[:, None], win, 0).astype(np.uint8)
    return np.ascontiguousarray(win).view(">u8").ravel().astype(np.uint64)


def sort_spans(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort the byte strings ``data[offsets[i]:offsets[i+1]]``.

    Returns ``(order, distinct)``: ``order`` lists the ids by (bytes, id) -- equal strings keep
    id order, so the first of a run is the earliest -- and ``distinct[k]`` is False when
    ``order[k]`` holds the same bytes as ``order[k-1]``.

    Most-significant-digit radix refinement with numpy: strings are compared 8 bytes at a time
    (zero padded, then by length, which orders a prefix first and ``b"a" < b"a\\0"``); each pass
    only re-sorts the groups that are still tied, so typical vocabularies need one or two passes.
    """
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    padded = np.concatenate((np.asarray(data, np.uint8)[: offsets[-1]], np.zeros(8, np.uint8)))
    order = np.arange(n, dtype=np.int64)
    group = np.zeros(n, np.int64)  # per position: position where its tie group starts
    active = np.arange(n, dtype=np.int64) if n > 1 else np.zeros(0, np.int64)
    level = 0
    while active.size:
        rows = order[active]
        key = _chunk_keys(padded, offsets, lengths, rows, level)
        g = group[active]
        perm = np.lexsort((key, g)) if level else np.argsort(key, kind="stable")
        rows, key, g = rows[perm], key[perm], g[perm]
        order[active] = rows
        start = np.ones(len(active), bool)
        start[1:] = (g[1:] != g[:-1]) | (key[1:] != key[:-1])
        group[active] = active[np.maximum.accumulate(np.where(start, np.arange(len(active)), 0))]
        level += 1
        # keep refining groups of two or more in which some word is longer than the prefix seen
        longer = lengths[rows] > 8 * level
        first = np.flatnonzero(start)
        size = np.diff(np.append(first, len(active)))
        any_longer = np.logical_or.reduceat(longer, first) if len(first) else longer[:0]
        still = np.repeat((size > 1) & any_longer, size)
        active = active[still]
    # ties on every chunk: equal up to zero padding; order by length (stable keeps id order)
    tied = np.ones(n, bool)
    if n:
        tied[1:] = group[1:] == group[:-1]
        tied[:-1] |= group[:-1] == group[1:]
    pos = np.flatnonzero(tied) if n > 1 else np.zeros(0, np.int64)
    if pos.size:
        rows = order[pos]
        perm = np.lexsort((lengths[rows], group[pos]))
        order[pos] = rows[perm]
    distinct = np.ones(n, bool)
    if n > 1:
        lo = order[:-1]
        hi = order[1:]
        distinct[1:] = (group[1:] != group[:-1]) | (lengths[lo] != lengths[hi])
    return order, distinct


def encode_words(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 ``(bytes, offsets)`` of ``words`` (a word that cannot be encoded, e.g. a lone
    surrogate, raises FormatError naming its row)."""
    n = len(words)
    try:
        joined = "\n".join(words).encode("utf-8")
        raw = np.frombuffer(joined, np.uint8)
        seps = np.flatnonzero(raw == 10)
        if n and len(seps) == n - 1:  # no word contains "\n": split at the separators
            data = np.delete(raw, seps)
            offsets = np.zeros(n + 1, np.int64)
            offsets[1:] = np.append(seps, len(raw)) - np.arange(n)
            return data, offsets
        parts = [w.encode("utf-8") for w in words]
    except UnicodeEncodeError:
        for i, w in enumerate(words):
            try:
                w.encode("utf-8")
            except UnicodeEncodeError as e:
                raise FormatError(f"word at row {i} cannot be stored as UTF-8 ({e.reason}): {w!r}") from None
        raise
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return np.frombuffer(b"".join(parts), np.uint8).copy(), offsets


def first_duplicate(order: np.ndarray, distinct: np.ndarray) -> tuple[int, int] | None:
    """``(a, b)``: the earliest row ``b`` repeating an earlier row ``a`` (from ``sort_spans``)."""
    if distinct.all():
        return None
    dup = np.flatnonzero(~distinct)
    k = int(dup[np.argmin(order[dup])])
    first = k
    while not distinct[first]:
        first -= 1
    return int(order[first]), int(order[k])


def _check_unique(data, offsets, order, distinct):
    pair = first_duplicate(order, distinct)
    if pair is not None:
        a, b = pair
        word = data[offsets[b]:offsets[b + 1]].tobytes().decode("utf-8", "replace")
        raise DuplicateWordError(f"duplicate word {word!r} at rows {a} and {b}")


def arrays_from_spans(data: np.ndarray, offsets: np.ndarray) -> dict[str, np.ndarray]:
    """The three vocabulary tensors from UTF-8 words given as byte spans (no Python strings are
    created).  Raises DuplicateWordError naming both rows."""
    data = np.ascontiguousarray(data, np.uint8)
    offsets = np.ascontiguousarray(offsets, np.int64)
    order, distinct = sort_spans(data, offsets)
    _check_unique(data, offsets, order, distinct)
    return {BYTES: data, OFFSETS: offsets, ORDER: order}


def encode_vocab(words: Sequence[str]) -> dict[str, np.ndarray]:
    """The three vocabulary tensors for ``words`` (row order).  Raises DuplicateWordError
    naming both rows of the first repeated word."""
    data, offsets = encode_words(list(words))
    return arrays_from_spans(data, offsets)


def encode_vocab_rows(words: Sequence[str | None]) -> dict[str, np.ndarray]:
    """The three vocabulary tensors for rows named by ``words`` (row order), where ``None`` is a
    row without a word.  Raises DuplicateWordError naming both rows of a repeated word."""
    named = np.array([w is not None for w in words], bool)
    if named.all():
        return encode_vocab(words)
    data, offsets = encode_words(["" if w is None else w for w in words])
    ids = np.flatnonzero(named)
    lengths = np.diff(offsets)[ids]
    sub_offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(lengths, out=sub_offsets[1:])
    keep = np.zeros(len(data), bool)
    for i in ids[lengths > 0]:
        keep[offsets[i]:offsets[i + 1]] = True
    order, distinct = sort_spans(data[keep], sub_offsets)
    pair = first_duplicate(order, distinct)
    if pair is not None:
        a, b = int(ids[pair[0]]), int(ids[pair[1]])
        raise DuplicateWordError(f"duplicate word {words[b]!r} at rows {a} and {b}")
    return {BYTES: data, OFFSETS: offsets, ORDER: ids[order]}


def extend_vocab(arrays: dict[str, np.ndarray], words: Sequence[str]) -> dict[str, np.ndarray]:
    """The vocabulary tensors with ``words`` appended as new last rows (e.g. a padding or unknown
    token): O(k log N) searches and one O(N) insert, no re-sort.  A word already present (or
    given twice) raises DuplicateWordError naming both rows."""
    base = Vocab.from_arrays(arrays)
    n = len(base)
    data, offsets = encode_words(list(words))
    order = np.asarray(base.order, np.int64)
    keys = [data[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(words))]
    seen: dict[bytes, int] = {}
    where = []
    for i, key in enumerate(keys):
        pos = base._lower_bound(key)
        first = seen.get(key, int(order[pos]) if pos < len(order) and base._bytes(int(order[pos])) == key
                         else None)
        if first is not None:
            raise DuplicateWordError(f"duplicate word {words[i]!r} at rows {first} and {n + i}")
        seen[key] = n + i
        where.append(pos)
    # new words between the same old neighbours keep their byte order
    rank = sorted(range(len(keys)), key=lambda i: (where[i], keys[i]))
    new_order = np.insert(order, [where[i] for i in rank], [n + i for i in rank])
    old_bytes = np.asarray(arrays[BYTES], np.uint8)
    old_offsets = np.asarray(arrays[OFFSETS], np.int64)
    return {BYTES: np.concatenate((old_bytes, data)),
            OFFSETS: np.concatenate((old_offsets, offsets[1:] + len(old_bytes))),
            ORDER: new_order}


def decode_spans(data, offsets, ids=None, errors="strict") -> list[str]:
    """Decode words ``ids`` (default: all, in row order) from UTF-8 spans."""
    data = np.asarray(data)
    offsets = np.asarray(offsets)
    if ids is None:
        lo, hi = int(offsets[0]), int(offsets[-1])
        chunk = data[lo:hi]
        if not (chunk == 10).any():
            n = len(offsets) - 1
            if n == 0:
                return []
            sep = np.insert(chunk, offsets[1:-1] - lo, 10)
            return sep.tobytes().decode("utf-8", errors).split("\n")
        ids = range(len(offsets) - 1)
    return [data[offsets[i]:offsets[i + 1]].tobytes().decode("utf-8", errors) for i in ids]


# -- validation of stored tensors --------------------------------------------------------------

def check_arrays(data, offsets, order, where: str) -> None:
    """Refuse vocabulary tensors that break the layout (module doc), naming the tensor and what
    is wrong: dtypes and shapes, offsets out of order or past the end of the bytes, words that are
    not UTF-8, an order naming a row twice or out of range, a row without a word whose span is not
    empty, an order that is not sorted (a binary search over it gives wrong answers).
    O(N + bytes), vectorised: done once per open table."""
    for name, arr, dtype in ((BYTES, data, np.uint8), (OFFSETS, offsets, np.int64),
                             (ORDER, order, np.int64)):
        if arr.dtype != dtype or arr.ndim != 1:
            raise FormatError(f"{where}: {name} must be a 1-D {np.dtype(dtype).name} tensor, not "
                              f"{arr.ndim}-D {arr.dtype}")
    n = len(offsets) - 1
    if n < 0 or len(order) > n:
        raise FormatError(f"{where}: {ORDER} has {len(order)} entries for {max(n, 0)} rows in "
                          f"{OFFSETS} (at most one a row)")
    if offsets[0] != 0 or offsets[-1] != len(data):
        raise FormatError(f"{where}: {OFFSETS} must start at 0 and end at the length of {BYTES} "
                          f"({len(data)}), not run from {offsets[0]} to {offsets[-1]}")
    if n and (offsets.min() < 0 or offsets.max() > len(data)):
        i = int(np.argmax((offsets < 0) | (offsets > len(data))))
        raise FormatError(f"{where}: {OFFSETS} entry {i} is {offsets[i]}, outside {BYTES} "
                          f"(0 to {len(data)})")
    lengths = np.diff(offsets)
    if (lengths < 0).any():
        i = int(np.argmax(lengths < 0))
        raise FormatError(f"{where}: {OFFSETS} decreases at entry {i + 1} ({offsets[i]} then "
                          f"{offsets[i + 1]})")
    _check_utf8(data, offsets, lengths, where)
    if len(order) and (order.min() < 0 or order.max() >= n):
        i = int(np.argmax((order < 0) | (order >= n)))
        raise FormatError(f"{where}: {ORDER} entry {i} is {order[i]}, not a row (0 to {n - 1})")
    times = np.bincount(order, minlength=n)
    if (times > 1).any():
        raise FormatError(f"{where}: {ORDER} names row {int(np.argmax(times > 1))} more than once")
    wordless = np.flatnonzero((times == 0) & (lengths > 0))
    if wordless.size:
        raise FormatError(f"{where}: row {int(wordless[0])} is not in {ORDER} (a row without a "
                          f"word) but has {int(lengths[wordless[0]])} bytes in {BYTES}")
    k = _first_unsorted(data, offsets, lengths, order)
    if k is not None:
        a, b = int(order[k]), int(order[k + 1])
        wa, wb = (data[offsets[r]:offsets[r + 1]].tobytes().decode("utf-8") for r in (a, b))
        if wa == wb:
            raise DuplicateWordError(f"{where}: duplicate word {wa!r} at rows {min(a, b)} and "
                                     f"{max(a, b)}")
        raise FormatError(f"{where}: {ORDER} is not sorted by word: entry {k} (row {a}, {wa!r}) "
                          f"comes before entry {k + 1} (row {b}, {wb!r})")


def _check_utf8(data, offsets, lengths, where) -> None:
    raw = np.asarray(data).tobytes()
    try:
        raw.decode("utf-8")
        bad = None
    except UnicodeDecodeError as e:
        bad = e.start
    # each word must be UTF-8 by itself: none may start inside another word's character
    starts = offsets[:-1][lengths > 0]
    inside = np.flatnonzero((data[starts] & 0xC0) == 0x80) if starts.size else starts[:0]
    if inside.size and (bad is None or starts[inside[0]] < bad):
        bad = int(starts[inside[0]])
    if bad is not None:
        row = int(np.searchsorted(offsets, bad, side="right") - 1)
        raise FormatError(f"{where}: {BYTES}: the word of row {row} is not valid UTF-8 (byte {bad})")


def _first_unsorted(data, offsets, lengths, order) -> int | None:
    """First position k where word ``order[k]`` is not strictly below word ``order[k+1]`` (the
    order of ``sort_spans``: bytes, a prefix first), comparing 8 bytes at a time: the first 8
    bytes of every word are read in row order (sequential memory), later ones only for the
    neighbours still tied."""
    if len(order) < 2:
        return None
    padded = np.concatenate((np.asarray(data, np.uint8), np.zeros(8, np.uint8)))
    first = np.zeros(len(offsets) - 1, np.uint64)
    have = np.minimum(lengths, 8)
    for j in range(8):  # byte j of every word, big-endian into one key
        byte = padded[offsets[:-1] + j].astype(np.uint64)
        byte[have <= j] = 0
        first |= byte << np.uint64(56 - 8 * j)
    keys = first[order]
    a, b = order[:-1], order[1:]
    pairs = np.arange(len(order) - 1)
    ka, kb = keys[:-1], keys[1:]
    bad = []
    level = 0
    while pairs.size:
        bad.append(pairs[ka > kb])
        equal = ka == kb
        level += 1
        longer = np.maximum(lengths[a[pairs]], lengths[b[pairs]]) > 8 * level
        done = equal & ~longer  # equal up to zero padding: the shorter word comes first
        bad.append(pairs[done][lengths[a[pairs[done]]] >= lengths[b[pairs[done]]]])
        pairs = pairs[equal & longer]
        if pairs.size:
            ka = _chunk_keys(padded, offsets, lengths, a[pairs], level)
            kb = _chunk_keys(padded, offsets, lengths, b[pairs], level)
    bad = np.concatenate(bad)
    return int(bad.min()) if bad.size else None


# -- the index ----------------------------------------------------------------------------

class Vocab:
    """Word <-> row lookups over the three vocabulary arrays (possibly memory-mapped)."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray, order: np.ndarray):
        self.data = data
        self.offsets = offsets
        self.order = order
        n = len(offsets) - 1
        if data.ndim != 1 or offsets.ndim != 1 or order.ndim != 1 or not 0 <= len(order) <= n:
            raise FormatError(
                f"vocabulary tensors have inconsistent shapes: {BYTES} {data.shape}, "
                f"{OFFSETS} {offsets.shape}, {ORDER} {order.shape}")
        if n and (int(offsets[0]) != 0 or int(offsets[-1]) != len(data)):
            raise FormatError(f"{OFFSETS} must start at 0 and end at len({BYTES}) = {len(data)}")
        self._named = None

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Vocab":
        return cls(arrays[BYTES], arrays[OFFSETS], arrays[ORDER])

    @classmethod
    def from_words(cls, words: Sequence[str]) -> "Vocab":
        return cls.from_arrays(encode_vocab(words))

    def arrays(self) -> dict[str, np.ndarray]:
        return {BYTES: self.data, OFFSETS: self.offsets, ORDER: self.order}

    def __len__(self) -> int:
        """Rows covered (the table's rows); ``named`` of them have a word."""
        return len(self.offsets) - 1

    @property
    def named(self) -> int:
        return len(self.order)

    @property
    def unnamed(self) -> int:
        return len(self) - len(self.order)

    def has_word(self) -> np.ndarray | None:
        """Boolean mask of the rows that have a word, or None when every row has one."""
        if not self.unnamed:
            return None
        if self._named is None:
            mask = np.zeros(len(self), bool)
            mask[np.asarray(self.order, np.int64)] = True
            self._named = mask
        return self._named

    def _bytes(self, i: int) -> bytes:
        return self.data[int(self.offsets[i]):int(self.offsets[i + 1])].tobytes()

    def word(self, i: int) -> str | None:
        """The word of row ``i``, or None for a row without a word."""
        n = len(self)
        if not -n <= i < n:
            from embtool.errors import IndexRangeError
            raise IndexRangeError(f"row {i} is out of range for a vocabulary of {n} words")
        mask = self.has_word()
        if mask is not None and not mask[i % n]:
            return None
        return self._bytes(i % n).decode("utf-8")

    def words(self, ids: Iterable[int]) -> list[str | None]:
        return [self.word(int(i)) for i in ids]

    def head(self, n: int) -> list[str | None]:
        """Words of rows ``0..n-1`` (None for rows without a word)."""
        n = max(0, min(n, len(self)))
        words = decode_spans(self.data, self.offsets[: n + 1]) if n else []
        mask = self.has_word()
        if mask is not None:
            words = [w if mask[i] else None for i, w in enumerate(words)]
        return words

    def __iter__(self) -> Iterator[str | None]:
        for i in range(len(self)):
            yield self.word(i)

    def __contains__(self, word: str) -> bool:
        return self.find(word) >= 0

    def find(self, word: str) -> int:
        """Row of ``word``, or -1 when absent (binary search over ``order``: O(log N))."""
        try:
            key = word.encode("utf-8")
        except UnicodeEncodeError:
            return -1
        lo = self._lower_bound(key)
        if lo < len(self.order) and self._bytes(int(self.order[lo])) == key:
            return int(self.order[lo])
        return -1

    def _lower_bound(self, key: bytes) -> int:
        """First position in ``order`` whose word is not below ``key``."""
        order = self.order
        lo, hi = 0, len(order)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._bytes(int(order[mid])) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def find_many(self, words: Iterable[str]) -> np.ndarray:
        """Rows of ``words`` (int64, -1 for absent words)."""
        return np.array([self.find(w) for w in words], dtype=np.int64)


# -- vocab.txt files --------------------------------------------------------------------------

def read_vocab_file(path: str | Path) -> list[str]:
    """One token per line (a BERT ``vocab.txt``): lines split on ``\\n`` only, a trailing ``\\r``
    and a leading UTF-8 BOM removed, nothing else stripped.  An empty line is an error naming its
    line number.  (Every vocabulary format: ``embtool.vocab_files``.)"""
    from .vocab_files import read_lines

    return read_lines(path)


def write_vocab_file(path: str | Path, words: Iterable[str]) -> None:
    """One word a line (UTF-8, ``\\n``); a word that is empty or contains a line break cannot be
    read back and is an error naming its row."""
    words = list(words)
    for i, w in enumerate(words):
        if not w or "\n" in w or w.endswith("\r"):
            raise FormatError(f"word at row {i} cannot be written to a vocabulary file: {w!r}")
    data, offsets = encode_words(words)
    with open(path, "wb") as f:
        f.write(np.insert(data, offsets[1:], 10).tobytes() if words else b"")
