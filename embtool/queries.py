"""Neighbour queries given as text, one per line, answered many at a time.

A line is one query:

* plain text: terms separated by whitespace.  A term written ``-TERM`` is subtracted
  (``king woman -man`` is gensim's ``most_similar(positive=["king", "woman"],
  negative=["man"])``), unless the term as written is itself a word of the table: GloVe's ``-``,
  ``--`` and ``-lrb-`` are words.  In a table without a vocabulary, or with ``as_ids``, terms
  are row ids and ``-3`` subtracts row 3;
* JSON, when the line parses as JSON and is a string, a list or an object: a string is one word,
  a list holds the positive terms, an object holds ``positive`` and ``negative`` lists (the
  ``-`` rule does not apply: this is the way to write any word, e.g. one with spaces).  In JSON,
  strings are words and integers are row ids.  A line that starts like JSON but does not parse
  (``[CLS] [SEP]``) is plain text.

Blank lines are skipped.  Queries are answered ``BATCH`` at a time, each batch in one pass over
the table (``similar.most_similar_many``), with the results a query alone would get.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from .errors import ConfigError, EmbtoolError, FormatError, IndexRangeError, KeyNotFoundError

#: queries answered per pass over the table (bounds memory: about 2 KB per query at D = 300).
BATCH = 4096
UNKNOWN = ("error", "skip")


@dataclass
class Query:
    """One query: its text as given (echoed in the results) and where it came from."""
    text: str
    where: str = "query"
    positive: list = field(default_factory=list)
    negative: list = field(default_factory=list)
    plain: bool = True  # terms still to be read with the ``-`` rule (needs the vocabulary)


@dataclass
class Result:
    query: Query
    neighbours: list | None  # [(row, score), ...] best first; None when skipped
    unknown: str | None = None  # the unknown word of a query skipped (``unknown="skip"``)


#: at most this many skipped queries are named on stderr
SHOWN_SKIPPED = 10


def parse_line(text: str, where: str = "query") -> Query | None:
    """The query on one line (without its line break), or None for a blank line."""
    stripped = text.strip()
    if not stripped:
        return None
    if stripped[0] in '["{':
        try:
            obj = json.loads(stripped)
        except ValueError:
            obj = None  # not JSON: words such as "[CLS]" or "{"
        if isinstance(obj, str):
            return Query(text, where, [obj], plain=False)
        if isinstance(obj, list):
            return Query(text, where, _json_terms(obj, where, "the list"), plain=False)
        if isinstance(obj, dict):
            extra = sorted(set(obj) - {"positive", "negative"})
            if extra:
                raise FormatError(f"{where}: a JSON query has the keys positive and negative, not "
                                  f"{', '.join(map(repr, extra))}")
            return Query(text, where, _json_terms(obj.get("positive", []), where, "positive"),
                         _json_terms(obj.get("negative", []), where, "negative"), plain=False)
    return Query(text, where, stripped.split())


def _json_terms(value, where, what):
    if not isinstance(value, list) or not all(
            isinstance(t, str) or (isinstance(t, int) and not isinstance(t, bool)) for t in value):
        raise FormatError(f"{where}: {what} must be a list of words (strings) and row ids "
                          f"(integers)")
    return list(value)


def read_queries(source, *, words: bool = False):
    """Queries from a file path or ``-`` (stdin), read line by line (UTF-8).  With ``words``
    each line is one word as written (only the line break is removed)."""
    if source == "-":
        stream, name = sys.stdin.buffer, "<stdin>"
    else:
        try:
            stream, name = open(source, "rb"), str(source)
        except IsADirectoryError:
            raise EmbtoolError(f"{source}: is a directory") from None
    try:
        for line_no, raw in enumerate(stream, 1):
            where = f"{name}, line {line_no}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormatError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            text = text.rstrip("\r\n")
            if words:
                if text:
                    yield Query(text, where, [text], plain=False)
                continue
            query = parse_line(text, where)
            if query is not None:
                yield query
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def resolve(query: Query, vocab, num_rows: int, *, as_ids: bool = False):
    """(positive rows, negative rows) of a query; unknown words raise ``KeyNotFoundError``."""
    by_id = vocab is None or as_ids
    positive, negative = [], []
    if query.plain:
        for term in query.positive:
            if by_id:
                subtract = term.startswith("-") and len(term) > 1
                target, row = (negative, term[1:]) if subtract else (positive, term)
                target.append(_row_number(query, row, vocab is None, num_rows))
            elif term.startswith("-") and len(term) > 1 and vocab.find(term) < 0:
                negative.append(_word_row(query, term[1:], vocab))
            else:
                positive.append(_word_row(query, term, vocab))
        return positive, negative
    for terms, out in ((query.positive, positive), (query.negative, negative)):
        for term in terms:
            if isinstance(term, str):
                if vocab is None:
                    raise ConfigError(f"{query.where}: the table has no vocabulary; give row ids, "
                                      f"not {term!r}")
                out.append(_word_row(query, term, vocab))
            else:
                out.append(_in_range(query, term, num_rows))
    return positive, negative


def _word_row(query, word, vocab):
    row = vocab.find(word)
    if row < 0:
        exc = KeyNotFoundError(f"{query.where}: word {word!r} is not in the vocabulary")
        exc.word = word
        raise exc
    return row


def _row_number(query, text, no_vocab, num_rows):
    try:
        row = int(text)
    except ValueError:
        hint = " (the table has no vocabulary)" if no_vocab else ""
        raise FormatError(f"{query.where}: {text!r} is not a row number{hint}") from None
    return _in_range(query, row, num_rows)


def _in_range(query, row, num_rows):
    if not 0 <= row < num_rows:
        raise IndexRangeError(f"{query.where}: row {row} is out of range for a table of "
                              f"{num_rows} rows")
    return int(row)


def neighbours(table, queries, *, topn=10, restrict_vocab=None, as_ids=False, unknown="error",
               batch=BATCH, progress=None):
    """``Result`` of every query (an iterable of ``Query``), in order, ``batch`` queries per
    pass over ``table`` (an open ``Table``).  ``unknown="skip"`` skips a query with an unknown
    word (its result names the word) instead of failing; ``progress(n)`` counts answered
    queries."""
    from .similar import most_similar_many

    if unknown not in UNKNOWN:
        raise ConfigError(f"unknown must be one of {', '.join(UNKNOWN)}, not {unknown!r}")
    vocab = table.vocab
    pending = []

    def answer():
        todo = [(q, r) for q, r in pending if not isinstance(r, str)]
        found = most_similar_many(table.streamed(), vocab, [r for _, r in todo], topn=topn,
                                  restrict_vocab=restrict_vocab, norms=table.norms,
                                  labels=[q.where for q, _ in todo]) if todo else []
        found = iter(found)
        for q, r in pending:
            yield Result(q, None, r) if isinstance(r, str) else Result(q, next(found))
        if progress is not None:
            progress(len(pending))
        pending.clear()

    for query in queries:
        try:
            rows = resolve(query, vocab, table.num_embeddings, as_ids=as_ids)
        except KeyNotFoundError as exc:
            if unknown == "error" or not hasattr(exc, "word"):
                raise
            rows = exc.word
        pending.append((query, rows))
        if len(pending) >= batch:
            yield from answer()
    if pending:
        yield from answer()


def similar_many(table, source, *, words: bool = False, **options):
    """``neighbours`` of the queries in a file or ``-`` (``read_queries``); ``options`` as
    ``neighbours`` takes them."""
    return neighbours(table, read_queries(source, words=words), **options)


def skipped_message(skipped: list[Result]) -> str:
    """The stderr line naming the queries skipped for an unknown word."""
    shown = ", ".join(f"{r.query.where} ({r.unknown!r})" for r in skipped[:SHOWN_SKIPPED])
    more = f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
    noun = "query" if len(skipped) == 1 else "queries"
    return f"skipped {len(skipped)} {noun} with an unknown word: {shown}{more}"


def record(result: Result, vocab) -> dict:
    """One result as a JSON-ready object: the query as given and its neighbours."""
    items = []
    words = vocab.words([r for r, _ in result.neighbours]) if vocab is not None else None
    for i, (row, score) in enumerate(result.neighbours):
        item = {"id": row}
        if words is not None:
            item["word"] = words[i]
        item["score"] = score
        items.append(item)
    return {"query": result.query.text, "neighbours": items}


def flat_records(result: Result, vocab) -> list[dict]:
    """One result as rows of a table (CSV/TSV): the query, the rank (1 = best), the neighbour."""
    rec = record(result, vocab)
    return [{"query": rec["query"], "rank": rank, **item}
            for rank, item in enumerate(rec["neighbours"], 1)]
