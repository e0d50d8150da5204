"""Word-analogy and word-pair evaluation with gensim 4.4's rules and numbers.

``evaluate_analogies`` is ``KeyedVectors.evaluate_word_analogies`` and ``evaluate_pairs`` is
``KeyedVectors.evaluate_word_pairs`` (docs/semantics.md §8.2-8.3): only the first
``restrict_vocab`` rows are known; with ``case_insensitive`` words and questions are
upper-cased and the earliest row of colliding case variants wins; questions or pairs with an
unknown word are skipped, or counted as wrong / scored 0.0 with ``dummy4unknown``.

Analogies (3CosAdd, gensim's ``most_similar(positive=[b, c], negative=[a], topn=5)``) are
answered many questions at a time by ``similar.search_exact``: one streamed pass over the table
with matrix products proposes ``CANDIDATES`` rows per question, whose scores are then recomputed
with gensim's own arithmetic; the rare question whose proposal is not certain is answered by a
matrix-vector pass, as gensim does.  Questions whose input row has zero norm (gensim: NaN
scores, an arbitrary answer) count as incorrect.

Correlations are computed in float64 with numpy, as scipy's ``pearsonr`` / ``spearmanr``
(average ranks for ties; NaN for a constant input).  p-values are not computed.

Files are read as UTF-8 (analogies) or ``encoding`` (pairs, a text encoding); gzip, bzip2 and
xz data is decompressed whatever the file's name (recognised by its magic bytes, as vector files
are).  Errors name the file and the 1-based line.
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field

import numpy as np

from embtool.errors import ConfigError, FormatError
from embtool.formats.source import open_source, text_encoding
from embtool.similar import (as_f32, decode_arrays, mean_units, search_exact, search_stop,
                             unitvec)

#: candidate rows proposed per analogy question by the batched pass.
CANDIDATES = 16
#: questions answered per pass over the table (progress is reported after each).
QUESTIONS_PER_PASS = 4096
_TOPN = 5  # gensim's topn for analogies

f32 = np.float32
f64 = np.float64


@contextlib.contextmanager
def _open(source, mode, encoding=None):
    """The file as binary lines (``rb``) or text lines in ``encoding`` (``rt``, universal
    newlines), decompressed as vector files are (by their magic bytes, errors naming the file)."""
    src = open_source(source)
    try:
        yield src.stream if mode == "rb" else io.TextIOWrapper(src.stream, encoding=encoding)
    finally:
        src.close()


def known_words(vocab, restrict_vocab, case_insensitive):
    """gensim's ``ok_vocab``: word (upper-cased) -> row, first ``restrict_vocab`` rows, earliest wins."""
    if vocab is None:
        raise ConfigError("evaluation needs a table with a vocabulary")
    words = vocab.head(len(vocab) if restrict_vocab is None else max(0, min(int(restrict_vocab), len(vocab))))
    if case_insensitive:
        words = [None if w is None else w.upper() for w in words]
    known = {}
    for row in range(len(words) - 1, -1, -1):
        if words[row] is not None:  # a row without a word is never an answer
            known[words[row]] = row
    return known


# ---------------------------------------------------------------------------------- analogies

@dataclass
class _Section:
    name: str
    correct: int = 0
    incorrect: int = 0

    def as_dict(self):
        total = self.correct + self.incorrect
        return {"section": self.name, "correct": self.correct, "incorrect": self.incorrect,
                "accuracy": self.correct / total if total else 0.0}


@dataclass
class _Questions:
    """Answerable questions: section number, words (a, b, c, expected), rows of a, b, c."""
    section: list = field(default_factory=list)
    words: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    nbytes: list = field(default_factory=list)


def _read_analogies(path_or_lines, known, case_insensitive, dummy4unknown):
    if isinstance(path_or_lines, (str, os.PathLike)):
        name = os.fspath(path_or_lines)
        with _open(path_or_lines, "rb") as fin:
            return _parse_analogies(fin, name, known, case_insensitive, dummy4unknown)
    return _parse_analogies(path_or_lines, "<analogies>", known, case_insensitive, dummy4unknown)


def _parse_analogies(lines, name, known, case_insensitive, dummy4unknown):
    sections, questions = [], _Questions()
    quadruplets = oov = skipped_bytes = 0
    for line_no, raw in enumerate(lines, 1):
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormatError(f"{name}, line {line_no}: invalid UTF-8 ({exc.reason})") from None
            size = len(raw)
        else:
            line, size = raw, len(raw.encode("utf-8", "surrogatepass"))
        skipped_bytes += size
        if line.startswith(": "):
            sections.append(_Section(line.lstrip(": ").strip()))
            continue
        if not sections:
            raise FormatError(f"{name}, line {line_no}: missing section header (': name') before "
                              f"this line")
        words = line.split()
        if len(words) != 4:  # gensim skips such lines (blank lines included)
            continue
        if case_insensitive:
            words = [w.upper() for w in words]
        quadruplets += 1
        if any(w not in known for w in words):
            oov += 1
            sections[-1].incorrect += dummy4unknown
            continue
        questions.section.append(len(sections) - 1)
        questions.words.append(words)
        questions.rows.append([known[w] for w in words[:3]])
        questions.nbytes.append(skipped_bytes)
        skipped_bytes = 0
    if quadruplets == 0:
        raise FormatError(f"{name}: no analogy questions (lines of 4 words) found")
    return sections, questions, quadruplets, oov, skipped_bytes


def evaluate_analogies(weight, vocab, path_or_lines, *, restrict_vocab=300000,
                       case_insensitive=True, dummy4unknown=False, norms=None, progress=None):
    """Accuracy on a questions-words file (a path, or an iterable of str/bytes lines).

    Returns ``{"accuracy", "correct", "incorrect", "oov", "oov_ratio", "questions",
    "sections"}``: counts over all sections, ``oov`` the number of 4-word questions with an
    unknown word (``oov_ratio`` the same as a percentage, as gensim logs it), ``questions`` the
    number of 4-word lines, and ``sections`` a list of ``{"section", "correct", "incorrect",
    "accuracy"}`` ending with gensim's ``"Total accuracy"`` entry.  Accuracies are fractions,
    0.0 when nothing was evaluated.  ``progress(n)`` is called with the number of input bytes
    whose questions have been answered.  ``norms``: the table's row norms if known (see
    ``similar.search``).
    """
    known = known_words(vocab, restrict_vocab, case_insensitive)
    sections, questions, quadruplets, oov, tail_bytes = _read_analogies(
        path_or_lines, known, case_insensitive, dummy4unknown)
    stop = search_stop(weight, restrict_vocab)
    for lo in range(0, len(questions.rows), QUESTIONS_PER_PASS):
        hi = min(lo + QUESTIONS_PER_PASS, len(questions.rows))
        rows = np.array(questions.rows[lo:hi], np.int64)
        predicted = _predict(weight, vocab, rows, questions.words[lo:hi], stop, case_insensitive,
                             norms)
        for q, guess in enumerate(predicted, lo):
            section = sections[questions.section[q]]
            if guess == questions.words[q][3]:
                section.correct += 1
            else:
                section.incorrect += 1
        if progress is not None:
            progress(sum(questions.nbytes[lo:hi]))
    if progress is not None and tail_bytes:
        progress(tail_bytes)
    total = _Section("Total accuracy", sum(s.correct for s in sections),
                     sum(s.incorrect for s in sections))
    result = total.as_dict()
    del result["section"]
    result.update(oov=oov, oov_ratio=oov / quadruplets * 100, questions=quadruplets,
                  sections=[s.as_dict() for s in sections] + [total.as_dict()])
    return result


def analogy_queries(weight, rows):
    """Unit 3CosAdd queries ``b + c - a`` for rows (Q, 3) = (a, b, c), gensim's arithmetic
    (positive b, c, then negative a).

    Returns (queries (Q, D) float32, valid (Q,) bool); a query is invalid when an input row or
    the mean has zero or non-finite norm.
    """
    weights = np.broadcast_to(np.array([1.0, 1.0, -1.0]), rows.shape)
    return mean_units(weight, rows[:, [1, 2, 0]], weights)


def _predict(weight, vocab, rows, words, stop, case_insensitive, norms=None):
    """gensim's predicted word (upper-cased if case_insensitive) per question, None if none."""
    queries, valid = analogy_queries(weight, rows)
    top = np.full((len(rows), _TOPN), -1, np.int64)
    ok = np.flatnonzero(valid)
    if ok.size:
        best = search_exact(weight, queries[ok], rows[ok], _TOPN, stop, norms=norms,
                            extra=CANDIDATES - _TOPN)
        top[ok] = decode_arrays(best)[0]
    predicted = []
    for q in range(len(rows)):
        guess = None
        if valid[q]:
            ignore = set(words[q][:3])
            for r in top[q][top[q] >= 0]:
                guess = _word(vocab, int(r), case_insensitive)
                if guess not in ignore:
                    break
        predicted.append(guess)
    return predicted


def _word(vocab, row, case_insensitive):
    word = vocab.word(row)
    return word.upper() if case_insensitive and word is not None else word


# ---------------------------------------------------------------------------------- word pairs

def evaluate_pairs(weight, vocab, path, *, delimiter="\t", encoding="utf-8", restrict_vocab=300000,
                   case_insensitive=True, dummy4unknown=False):
    """Correlation of cosine similarities with gold scores in a word-pair file.

    Lines starting with ``#`` and lines that do not split into exactly 3 fields (the third a
    float) are skipped, as gensim.  Returns ``{"pearson", "spearman", "pairs", "oov",
    "oov_ratio"}``: ``pairs`` scored pairs (OOV pairs included with ``dummy4unknown``),
    ``oov`` pairs with an unknown word and ``oov_ratio`` gensim's percentage.
    """
    if not delimiter:
        raise ConfigError("the delimiter of word pairs must not be empty")
    text_encoding(encoding)
    known = known_words(vocab, restrict_vocab, case_insensitive)
    name = os.fspath(path)
    gold, pair_rows, oov = [], [], 0
    with _open(path, "rt", encoding) as fin:
        line_no = 0
        try:
            for line_no, line in enumerate(fin, 1):
                if not line or line.startswith("#"):
                    continue
                fields = line.split(delimiter)
                if case_insensitive:
                    fields = [f.upper() for f in fields]
                if len(fields) != 3:
                    continue
                try:
                    score = float(fields[2])
                except ValueError:
                    continue
                a, b = fields[0], fields[1]
                if a not in known or b not in known:
                    oov += 1
                    if dummy4unknown:
                        gold.append(score)
                        pair_rows.append((-1, -1))
                    continue
                gold.append(score)
                pair_rows.append((known[a], known[b]))
        except UnicodeError as exc:  # UnicodeDecodeError, or a decoder's own (utf-16: no BOM)
            line_no = _undecodable_line(path, encoding) or line_no + 1
            raise FormatError(f"{name}, line {line_no}: cannot decode as {encoding} "
                              f"({getattr(exc, 'reason', exc)})") from None
    if len(gold) < 2:
        raise FormatError(f"{name}: {len(gold)} word pair(s) could be scored (all others are "
                          f"malformed or have unknown words); a correlation needs 2")
    model = _pair_similarities(weight, np.array(pair_rows, np.int64).reshape(-1, 2))
    gold = np.array(gold, f64)
    scored = len(gold) if dummy4unknown else len(gold) + oov
    return {"pearson": pearson(gold, model), "spearman": spearman(gold, model),
            "pairs": len(gold), "oov": oov, "oov_ratio": oov / scored * 100}


def _undecodable_line(path, encoding):
    """1-based number of the first line that does not decode (text files decode in blocks)."""
    with _open(path, "rb") as fin:
        for line_no, raw in enumerate(fin, 1):
            try:
                raw.decode(encoding)
            except UnicodeError:
                return line_no
    return None


def _pair_similarities(weight, pairs):
    """gensim's ``similarity``: ``dot(unitvec(W[a]), unitvec(W[b]))`` (float32 BLAS dot), 0.0
    for the dummy pairs (-1, -1)."""
    known = pairs[:, 0] >= 0
    units, _ = unitvec(as_f32(weight[pairs[known].reshape(-1)]).astype(f64))
    units = units.reshape(-1, 2, weight.shape[1])
    sims = np.zeros(len(pairs), f64)
    sims[known] = [np.dot(u[0], u[1]) for u in units]
    return sims


def rankdata(a):
    """Average ranks (1-based) of a 1-D array; ties share the mean of their ranks."""
    a = np.asarray(a)
    sorter = np.argsort(a, kind="mergesort")
    inv = np.empty(len(a), np.intp)
    inv[sorter] = np.arange(len(a))
    ordered = a[sorter]
    new = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = np.cumsum(new)[inv]
    bounds = np.r_[np.flatnonzero(new), len(a)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def pearson(x, y):
    """scipy.stats.pearsonr's statistic: NaN for a constant or NaN-containing input."""
    x = np.asarray(x, f64)
    y = np.asarray(y, f64)
    if (x == x[0]).all() or (y == y[0]).all() or np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    xm = x - x.mean()
    ym = y - y.mean()
    xmax = np.abs(xm).max()
    ymax = np.abs(ym).max()
    r = np.dot(xm / (xmax * np.linalg.norm(xm / xmax)), ym / (ymax * np.linalg.norm(ym / ymax)))
    r = float(np.clip(r, -1.0, 1.0))
    return float(round(r)) if len(x) == 2 else r


def spearman(x, y):
    """scipy.stats.spearmanr's statistic: Pearson correlation of the average ranks."""
    x = np.asarray(x, f64)
    y = np.asarray(y, f64)
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    return pearson(rankdata(x), rankdata(y))
