"""Word-analogy and word-pair evaluation with gensim 4.4's rules and numbers.

``evaluate_analogies`` is ``KeyedVectors.evaluate_word_analogies`` and ``evaluate_pairs`` is
``KeyedVectors.evaluate_word_pairs`` (docs/semantics.md §8.2-8.3): only the first
``restrict_vocab`` rows are known; with ``case_insensitive`` words and questions are
upper-cased and the earliest row of colliding case variants wins; questions or pairs with an
unknown word are skipped, or counted as wrong / scored 0.0 with ``dummy4unknown``.

``unknown`` says what happens to a word outside those known words (docs/semantics.md §8.4):
``skip`` (gensim, above), ``error`` (the first one refuses the file, naming its line), or
``subword``: the word gets gensim's ``FastTextKeyedVectors[word]`` for the word as the file spells
it -- its own row if the vocabulary has exactly that word (past ``restrict_vocab``), else its
subword vector, computed for all such words of the file at once by ``subwords`` -- and an analogy
whose expected answer is unknown stays unanswerable (only known words are ranked), so it is
skipped (counted wrong with ``dummy4unknown``) as gensim skips it.

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

from embtool.errors import ConfigError, FormatError, KeyNotFoundError
from embtool.formats.source import open_source, text_encoding
from embtool.similar import (as_f32, decode_arrays, mean_units, search_exact, search_stop,
                             unitvec)

#: candidate rows proposed per analogy question by the batched pass.
CANDIDATES = 16
#: questions answered per pass over the table (progress is reported after each).
QUESTIONS_PER_PASS = 4096
_TOPN = 5  # gensim's topn for analogies
#: what a word outside the known words does (``unknown``): its question or pair is skipped
#: (gensim), it gets its fastText vector, or it refuses the file
UNKNOWN_POLICIES = ("skip", "subword", "error")

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


class _Unknown:
    """Words outside the known words under an ``unknown`` policy.

    With ``subword`` a word stands for a row id: its own row if the vocabulary has exactly this
    spelling (a row past ``restrict_vocab``: gensim's ``FastTextKeyedVectors[word]`` is that row),
    else ``len(weight) + g`` for the g-th distinct word of the file needing a subword vector;
    ``vectors`` computes those all at once, after the file is read.
    """

    def __init__(self, unknown, subwords, vocab, name, restrict_vocab, case_insensitive, num):
        if unknown not in UNKNOWN_POLICIES:
            raise ConfigError(f"unknown must be one of {', '.join(UNKNOWN_POLICIES)}, not {unknown!r}")
        if unknown == "subword" and subwords is None:
            raise ConfigError("unknown='subword' needs subwords, the table's subword vectors "
                              "(pretrained.subword_vectors)")
        self.policy, self.subwords, self.vocab, self.name = unknown, subwords, vocab, name
        self.restrict_vocab, self.case_insensitive, self.num = restrict_vocab, case_insensitive, num
        self.words = {}  # word -> g, in order of first use
        self.answered = 0  # questions / pairs answered with such words

    def row(self, word):
        own = self.vocab.find(word)
        return own if own >= 0 else self.num + self.words.setdefault(word, len(self.words))

    def vectors(self, dim, unit):
        if not self.words:
            return np.zeros((0, dim), f32)
        return as_f32(np.asarray(self.subwords(list(self.words), unit=unit)))

    def refusal(self, word, line_no):
        """The ``error`` policy's error for the first unknown word of the file."""
        from embtool.keys import unknown_word_message

        everywhere = known_words(self.vocab, None, self.case_insensitive)
        row = everywhere.get(word.upper() if self.case_insensitive else word)
        if row is not None:
            what = (f"word {word!r} is row {row}, past the first {self.restrict_vocab} rows that "
                    f"count (--restrict-vocab)")
        else:
            what = unknown_word_message(self.vocab, word, "the table")
        return KeyNotFoundError(f"{self.name}, line {line_no}: {what}")


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


def _read_analogies(path_or_lines, known, unknown, dummy4unknown):
    if isinstance(path_or_lines, (str, os.PathLike)):
        with _open(path_or_lines, "rb") as fin:
            return _parse_analogies(fin, known, unknown, dummy4unknown)
    return _parse_analogies(path_or_lines, known, unknown, dummy4unknown)


def _parse_analogies(lines, known, unknown, dummy4unknown):
    name = unknown.name
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
        spelt = line.split()
        if len(spelt) != 4:  # gensim skips such lines (blank lines included)
            continue
        words = [w.upper() for w in spelt] if unknown.case_insensitive else spelt
        quadruplets += 1
        missing = [i for i, w in enumerate(words) if w not in known]
        if missing:
            if unknown.policy == "error":
                raise unknown.refusal(spelt[missing[0]], line_no)
            if unknown.policy == "skip" or missing[-1] == 3:  # an unknown answer is never ranked
                oov += 1
                sections[-1].incorrect += dummy4unknown
                continue
            unknown.answered += 1
        questions.section.append(len(sections) - 1)
        questions.words.append(words)
        questions.rows.append([known[w] if w in known else unknown.row(s)
                               for w, s in zip(words[:3], spelt[:3])])
        questions.nbytes.append(skipped_bytes)
        skipped_bytes = 0
    if quadruplets == 0:
        raise FormatError(f"{name}: no analogy questions (lines of 4 words) found")
    return sections, questions, quadruplets, oov, skipped_bytes


def evaluate_analogies(weight, vocab, path_or_lines, *, restrict_vocab=300000,
                       case_insensitive=True, dummy4unknown=False, norms=None, progress=None,
                       unknown="skip", subwords=None):
    """Accuracy on a questions-words file (a path, or an iterable of str/bytes lines).

    Returns ``{"accuracy", "correct", "incorrect", "oov", "oov_ratio", "oov_answered",
    "questions", "sections"}``: counts over all sections, ``oov`` the number of 4-word questions
    not answered for an unknown word (``oov_ratio`` the same as a percentage, as gensim logs it),
    ``oov_answered`` those answered with fastText vectors (``unknown="subword"``), ``questions``
    the number of 4-word lines, and ``sections`` a list of ``{"section", "correct",
    "incorrect", "accuracy"}`` ending with gensim's ``"Total accuracy"`` entry.  Accuracies are
    fractions, 0.0 when nothing was evaluated.  ``progress(n)`` is called with the number of
    input bytes whose questions have been answered.  ``norms``: the table's row norms if known
    (see ``similar.search``).  ``unknown``: ``skip``, ``error`` or ``subword`` (see the module
    docstring), the latter with ``subwords(words, unit=...)`` giving the vectors of words the
    vocabulary lacks (``pretrained.subword_vectors`` of a fastText table).
    """
    known = known_words(vocab, restrict_vocab, case_insensitive)
    name = (os.fspath(path_or_lines) if isinstance(path_or_lines, (str, os.PathLike))
            else "<analogies>")
    unknown = _Unknown(unknown, subwords, vocab, name, restrict_vocab, case_insensitive,
                       weight.shape[0])
    sections, questions, quadruplets, oov, tail_bytes = _read_analogies(
        path_or_lines, known, unknown, dummy4unknown)
    stop = search_stop(weight, restrict_vocab)
    given = unknown.vectors(weight.shape[1], unit=True)  # gensim: get_vector(word, norm=True)
    for lo in range(0, len(questions.rows), QUESTIONS_PER_PASS):
        hi = min(lo + QUESTIONS_PER_PASS, len(questions.rows))
        rows = np.array(questions.rows[lo:hi], np.int64)
        predicted = _predict(weight, vocab, rows, questions.words[lo:hi], stop, case_insensitive,
                             norms, given)
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
    result.update(oov=oov, oov_ratio=oov / quadruplets * 100, oov_answered=unknown.answered,
                  questions=quadruplets,
                  sections=[s.as_dict() for s in sections] + [total.as_dict()])
    return result


def analogy_queries(weight, rows, given=None):
    """Unit 3CosAdd queries ``b + c - a`` for rows (Q, 3) = (a, b, c), gensim's arithmetic
    (positive b, c, then negative a); ids ``len(weight) + g`` stand for the unit vectors
    ``given[g]`` (``similar.mean_units``).

    Returns (queries (Q, D) float32, valid (Q,) bool); a query is invalid when an input row or
    the mean has zero or non-finite norm.
    """
    weights = np.broadcast_to(np.array([1.0, 1.0, -1.0]), rows.shape)
    return mean_units(weight, rows[:, [1, 2, 0]], weights, given)


def _predict(weight, vocab, rows, words, stop, case_insensitive, norms=None, given=None):
    """gensim's predicted word (upper-cased if case_insensitive) per question, None if none."""
    queries, valid = analogy_queries(weight, rows, given)
    top = np.full((len(rows), _TOPN), -1, np.int64)
    ok = np.flatnonzero(valid)
    # gensim excludes the known input words' rows; other inputs (subword vectors, rows past
    # restrict_vocab) are never among the searched rows
    exclude = np.where(rows < stop, rows, -1)
    if ok.size:
        best = search_exact(weight, queries[ok], exclude[ok], _TOPN, stop, norms=norms,
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
                   case_insensitive=True, dummy4unknown=False, unknown="skip", subwords=None):
    """Correlation of cosine similarities with gold scores in a word-pair file.

    Lines starting with ``#`` and lines that do not split into exactly 3 fields (the third a
    float) are skipped, as gensim.  Returns ``{"pearson", "spearman", "pairs", "oov",
    "oov_ratio", "oov_answered"}``: ``pairs`` scored pairs (OOV pairs included with
    ``dummy4unknown``), ``oov`` pairs not scored for an unknown word, ``oov_ratio`` gensim's
    percentage, ``oov_answered`` pairs scored with fastText vectors.  ``unknown`` and
    ``subwords``: as ``evaluate_analogies``.
    """
    if not delimiter:
        raise ConfigError("the delimiter of word pairs must not be empty")
    text_encoding(encoding)
    known = known_words(vocab, restrict_vocab, case_insensitive)
    name = os.fspath(path)
    unknown = _Unknown(unknown, subwords, vocab, name, restrict_vocab, case_insensitive,
                       weight.shape[0])
    gold, pair_rows, oov = [], [], 0
    with _open(path, "rt", encoding) as fin:
        line_no = 0
        try:
            for line_no, line in enumerate(fin, 1):
                if not line or line.startswith("#"):
                    continue
                spelt = line.split(delimiter)
                fields = [f.upper() for f in spelt] if case_insensitive else spelt
                if len(fields) != 3:
                    continue
                try:
                    score = float(fields[2])
                except ValueError:
                    continue
                missing = [s for s, w in zip(spelt[:2], fields[:2]) if w not in known]
                if missing and unknown.policy == "error":
                    raise unknown.refusal(missing[0], line_no)
                if missing and unknown.policy == "skip":
                    oov += 1
                    if dummy4unknown:
                        gold.append(score)
                        pair_rows.append((-1, -1))
                    continue
                unknown.answered += bool(missing)
                gold.append(score)
                pair_rows.append(tuple(known[w] if w in known else unknown.row(s)
                                       for w, s in zip(fields[:2], spelt[:2])))
        except UnicodeError as exc:  # UnicodeDecodeError, or a decoder's own (utf-16: no BOM)
            line_no = _undecodable_line(path, encoding) or line_no + 1
            raise FormatError(f"{name}, line {line_no}: cannot decode as {encoding} "
                              f"({getattr(exc, 'reason', exc)})") from None
    if len(gold) < 2:
        raise FormatError(f"{name}: {len(gold)} word pair(s) could be scored (all others are "
                          f"malformed or have unknown words); a correlation needs 2")
    given = unknown.vectors(weight.shape[1], unit=False)  # gensim: kv[word]
    model = _pair_similarities(weight, np.array(pair_rows, np.int64).reshape(-1, 2), given)
    gold = np.array(gold, f64)
    scored = len(gold) if dummy4unknown else len(gold) + oov
    return {"pearson": pearson(gold, model), "spearman": spearman(gold, model),
            "pairs": len(gold), "oov": oov, "oov_ratio": oov / scored * 100,
            "oov_answered": unknown.answered}


def _undecodable_line(path, encoding):
    """1-based number of the first line that does not decode (text files decode in blocks)."""
    with _open(path, "rb") as fin:
        for line_no, raw in enumerate(fin, 1):
            try:
                raw.decode(encoding)
            except UnicodeError:
                return line_no
    return None


def _pair_similarities(weight, pairs, given):
    """gensim's ``similarity``: ``dot(unitvec(W[a]), unitvec(W[b]))`` (float32 BLAS dot), 0.0
    for the dummy pairs (-1, -1); ids ``len(weight) + g`` stand for the vectors ``given[g]``."""
    known = pairs[:, 0] >= 0
    ids = pairs[known].reshape(-1)
    inside = ids < weight.shape[0]
    vecs = np.empty((len(ids), weight.shape[1]), f32)
    vecs[inside] = as_f32(weight[ids[inside]])
    vecs[~inside] = given[ids[~inside] - weight.shape[0]]
    units, _ = unitvec(vecs.astype(f64))
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
