"""Write tests/golden/fasttext_evaluate.json: gensim 4.4's analogy counts and word-pair
correlations of the committed fastText sample (sample_data/small.fasttext.bin) on the sample
questions and word pairs, with unknown words given their fastText vectors (``kv[word]``) as
``evaluate --unknown subword`` gives them (the loops: tests/gensim_fasttext.py), and gensim's
answer to every question (its expected word aside: unknown answers are otherwise never checked).

Run with gensim and scipy installed:  python tests/golden/make_fasttext_evaluate.py
"""
import json
import sys
from pathlib import Path

from gensim.models.fasttext import load_facebook_vectors
from scipy import stats

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
import gensim_fasttext  # noqa: E402 - the tests' oracle module, found through the path above

SAMPLES = HERE.parent.parent / "sample_data"
#: restrict_vocab 500 leaves some known words past it: they get their own rows
SETTINGS = [{}, {"restrict_vocab": 500, "dummy4unknown": True}, {"case_insensitive": False}]


def main():
    kv = load_facebook_vectors(str(SAMPLES / "small.fasttext.bin"))
    out = []
    for setting in SETTINGS:
        counts, oov, answered = gensim_fasttext.analogies(
            kv, SAMPLES / "questions-words.sample.txt", **setting)
        pair_kw = {k: v for k, v in setting.items() if k != "dummy4unknown"}
        gold, sims, pairs_answered = gensim_fasttext.pair_similarities(
            kv, SAMPLES / "wordsim353.tsv", **pair_kw)
        ok = gensim_fasttext.known_words(kv, setting.get("restrict_vocab", 300000),
                                         setting.get("case_insensitive", True))
        _, todo = gensim_fasttext.questions(SAMPLES / "questions-words.sample.txt")
        predicted = [gensim_fasttext.predict(kv, ok, spelt, setting.get("restrict_vocab", 300000),
                                             setting.get("case_insensitive", True))
                     for _, spelt in todo]
        out.append({"args": setting, "analogy_counts": counts, "analogy_oov": oov,
                    "analogy_oov_answered": answered, "predicted": predicted, "pairs": len(gold),
                    "pairs_oov_answered": pairs_answered,
                    "pearson": float(stats.pearsonr(gold, sims)[0]),
                    "spearman": float(stats.spearmanr(gold, sims)[0])})
    lines = ",\n".join(json.dumps(setting) for setting in out)
    (HERE / "fasttext_evaluate.json").write_text(f"[\n{lines}\n]\n")


if __name__ == "__main__":
    main()
