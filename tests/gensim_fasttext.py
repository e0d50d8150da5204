"""The oracle of ``evaluate --unknown subword``: gensim 4.4's ``evaluate_word_analogies`` and
``evaluate_word_pairs`` loops on a ``FastTextKeyedVectors`` with one change, a word outside the
known words (the first ``restrict_vocab``, case-folded) getting ``kv[word]`` for the word as the
file spells it instead of its question or pair being skipped (docs/semantics.md §8.4).  The
vectors, means and scores are gensim's own (``kv.most_similar``, ``kv.similarity``); the loops are
restated here, and equal scores ranked by row as embtool ranks them.  Used by tests/test_fasttext.py and tests/golden/make_fasttext_evaluate.py.
"""
from __future__ import annotations

import numpy as np


def _fold(case_insensitive):
    return str.upper if case_insensitive else str


def known_words(kv, restrict_vocab, case_insensitive):
    """gensim's ``ok_vocab``: folded word -> row, earliest row wins."""
    fold = _fold(case_insensitive)
    return {fold(k): kv.get_index(k) for k in reversed(kv.index_to_key[:restrict_vocab])}


def _key(kv, ok, fold, word):
    """What gensim is given for a word: a known word's row (by its key), else the word as spelt
    (``FastTextKeyedVectors`` gives its own row or its subword vector)."""
    return kv.index_to_key[ok[fold(word)]] if fold(word) in ok else word


def predict(kv, ok, spelt, restrict_vocab=300000, case_insensitive=True):
    """gensim's answer (folded) to the question of words a, b, c as spelt, None if none; ``ok``:
    ``known_words``.  gensim's scores (``most_similar(..., topn=None)``) ranked as embtool ranks
    them (docs/semantics.md §8.1: equal scores by row, where gensim leaves ties unordered)."""
    fold = _fold(case_insensitive)
    ka, kb, kc = (_key(kv, ok, fold, w) for w in spelt[:3])
    scores = kv.most_similar(positive=[kb, kc], negative=[ka], topn=None, restrict_vocab=restrict_vocab)
    inputs = {ok[fold(w)] for w in spelt[:3] if fold(w) in ok}  # gensim drops the known inputs' rows
    ranked = [r for r in np.lexsort((np.arange(len(scores)), -scores)) if r not in inputs][:5]
    ignore = {fold(w) for w in spelt[:3]}
    predicted = None
    for row in ranked:  # gensim's loop over the top 5
        predicted = fold(kv.index_to_key[row])
        if predicted in ok and predicted not in ignore:
            break
    return predicted


def questions(path):
    """(number of sections, [(section, the 4 words as spelt)] of every 4-word line)."""
    out, sections = [], 0
    with open(path, encoding="utf-8") as fin:
        for line in fin:
            if line.startswith(": "):
                sections += 1
            elif len(line.split()) == 4:
                out.append((sections - 1, line.split()))
    return sections, out


def analogies(kv, path, restrict_vocab=300000, case_insensitive=True, dummy4unknown=False):
    """Per section [correct, incorrect] plus the total, and the numbers of unanswered (unknown
    expected answer) and answered questions with an unknown word."""
    fold = _fold(case_insensitive)
    ok = known_words(kv, restrict_vocab, case_insensitive)
    count, todo = questions(path)
    sections = [[0, 0] for _ in range(count)]
    oov = answered = 0
    for section, spelt in todo:
        if fold(spelt[3]) not in ok:  # only known words are ranked: never answerable
            oov += 1
            sections[section][1] += dummy4unknown
            continue
        answered += any(fold(w) not in ok for w in spelt[:3])
        right = predict(kv, ok, spelt, restrict_vocab, case_insensitive) == fold(spelt[3])
        sections[section][0 if right else 1] += 1
    total = [sum(s[0] for s in sections), sum(s[1] for s in sections)]
    return sections + [total], oov, answered


def pair_similarities(kv, path, delimiter="\t", restrict_vocab=300000, case_insensitive=True):
    """(gold scores, gensim's similarities, pairs with an unknown word) of every scorable pair."""
    fold = _fold(case_insensitive)
    ok = known_words(kv, restrict_vocab, case_insensitive)
    gold, sims, answered = [], [], 0
    with open(path, encoding="utf-8") as fin:
        for line in fin:
            if not line or line.startswith("#"):
                continue
            fields = line.split(delimiter)
            if len(fields) != 3:
                continue
            try:
                score = float(fields[2])
            except ValueError:
                continue
            answered += any(fold(w) not in ok for w in fields[:2])
            gold.append(score)
            sims.append(float(kv.similarity(*(_key(kv, ok, fold, w) for w in fields[:2]))))
    return gold, sims, answered
