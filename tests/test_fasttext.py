"""fastText .bin models: gensim's vectors for known words and subword vectors for unknown words,
bit for bit, in lookups, queries and evaluation (committed golden from gensim 4.4, live against
gensim when installed)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import gensim_fasttext
from embtool import evaluate, pretrained
from embtool.cli import query as cli_query
from embtool.errors import ConfigError, FormatError
from embtool.formats import fasttext
from embtool.table import Table
from helpers import assert_single_error_line, invoke

SAMPLES = Path(__file__).parent.parent / "sample_data"
SAMPLE = SAMPLES / "small.fasttext.bin"
QUESTIONS = SAMPLES / "questions-words.sample.txt"
PAIRS = SAMPLES / "wordsim353.tsv"
GOLDEN = Path(__file__).parent / "golden" / "fasttext.npz"
EVALUATE_GOLDEN = json.loads((Path(__file__).parent / "golden" / "fasttext_evaluate.json").read_text())


@pytest.fixture(scope="module")
def sample_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "ft.safetensors"
    r = invoke("load-pretrained", SAMPLE, out)
    assert r.code == 0, r.err
    assert "1000 n-gram buckets, n-grams of 3..5 characters" in r.err
    return out


def _lookup(table, words, *extra):
    r = invoke("lookup", table, "-w", "-f", "npy", *extra, input=json.dumps(words))
    assert r.code == 0, r.err
    return np.load(io.BytesIO(r.stdout_bytes))


def test_sample_matches_gensim_golden(sample_table):
    g = np.load(GOLDEN)
    with Table.open(sample_table) as t:
        assert t.vocab.head(len(t.vocab)) == list(g["all_words"])
        assert np.array_equal(t.weight(), g["all_vectors"])
    words = [str(w) for w in g["words"] if str(w)]
    want = np.stack([v for w, v in zip(g["words"], g["vectors"]) if str(w)])
    assert np.array_equal(_lookup(sample_table, words), want)


def test_similar_of_unknown_words_matches_gensim_golden(sample_table):
    g = np.load(GOLDEN)
    for query, keys, scores in zip(g["similar_queries"], g["similar_keys"], g["similar_scores"]):
        r = invoke("similar", sample_table, str(query), "-k", "5")
        assert r.code == 0, r.err
        got = json.loads(r.out)
        assert [x["word"] for x in got] == list(keys)
        np.testing.assert_allclose([x["score"] for x in got], scores, rtol=0, atol=2e-7)


def test_unknown_error_and_table_without_subwords(sample_table, tmp_path):
    r = invoke("lookup", sample_table, "-w", "australiaa", "--unknown", "error")
    assert_single_error_line(r, "word 'australiaa' is not in the vocabulary")
    r = invoke("similar", sample_table, "australiaa", "--unknown", "error")
    assert_single_error_line(r, "word 'australiaa' is not in the vocabulary")
    plain = tmp_path / "plain.vec"
    plain.write_text("2 2\na 1 0\nb 0 1\n")
    assert invoke("load-pretrained", plain, tmp_path / "p.safetensors").code == 0
    r = invoke("lookup", tmp_path / "p.safetensors", "-w", "c", "--unknown", "subword")
    assert_single_error_line(r, "no subword n-grams")


def test_truncated_and_damaged_models_are_one_line_errors(tmp_path):
    data = SAMPLE.read_bytes()
    for cut, message in [(100, "truncated fastText model"), (len(data) // 2, "truncated fastText model")]:
        p = tmp_path / f"cut{cut}.bin"
        p.write_bytes(data[:cut])
        r = invoke("load-pretrained", p, tmp_path / "t.safetensors")
        assert_single_error_line(r, str(p), message)
        assert not (tmp_path / "t.safetensors").exists()


def test_ngram_hashes_sign_extend_bytes_as_fasttext():
    # golden values of gensim's ft_ngram_hashes (compiled Cython) for non-ASCII words
    assert fasttext.ngram_hashes("é", 1, 2, 2_000_000) == [36627, 1043777, 1996781]
    with pytest.raises(FormatError):
        fasttext.read_bin(Path(__file__))


def _byte_ngrams(data: bytes, minn: int, maxn: int) -> list[bytes]:
    """fastText's ``computeSubwords`` over the bytes of ``<word>``: n-grams of minn..maxn
    characters, a character starting at each byte that is not ``10xxxxxx``."""
    starts = [i for i, b in enumerate(data) if b & 0xC0 != 0x80] + [len(data)]
    grams = []
    for a in range(len(starts) - 1):
        for n in range(minn, maxn + 1):
            if a + n < len(starts) and not (n == 1 and (a == 0 or a + n == len(starts) - 1)):
                grams.append(data[starts[a]:starts[a + n]])
    return grams


@pytest.mark.gensim
def test_words_from_undecodable_bytes_get_the_ngrams_of_those_bytes(gensim, sample_table):
    """A command-line word of bytes that are not UTF-8 (Python's surrogateescape) is hashed as
    those bytes, as fastText hashes what it is given; a lone surrogate is one Error line."""
    from gensim.models.fasttext_inner import ft_hash_bytes

    word = b"caf\xe9".decode("utf-8", "surrogateescape")
    want = [ft_hash_bytes(g) % 1000 for g in _byte_ngrams(b"<caf\xe9>", 3, 5)]
    assert fasttext.ngram_hashes(word, 3, 5, 1000) == want and len(want) == 9
    assert _lookup(sample_table, [word], "--unknown", "subword").shape == (1, 8)
    r = invoke("lookup", sample_table, "-w", "--", "\ud800")
    assert_single_error_line(r, "'\\ud800' is not text (a lone surrogate)")


# -- live: gensim ---------------------------------------------------------------------------------

def _gensim_test_data(gensim):
    return Path(gensim.__file__).parent / "test" / "test_data"


@pytest.mark.gensim
@pytest.mark.parametrize("name", ["crime-and-punishment.bin", "lee_fasttext.bin", "non_ascii_fasttext.bin",
                                  "cp852_fasttext.bin"])
def test_models_made_by_fasttext_match_gensim(gensim, name):
    """gensim's test models: written by Facebook's fastText (old and new layout, non-ASCII,
    bytes that are not UTF-8)."""
    from gensim.models.fasttext import load_facebook_vectors

    path = _gensim_test_data(gensim) / name
    assert pretrained.source_kind(path) == "fasttext"  # the old layout too, without a magic
    kv = load_facebook_vectors(str(path))
    model = fasttext.read_bin(path)
    assert model.words == kv.index_to_key
    assert np.array_equal(fasttext.word_vectors(model), kv.vectors)
    unknown = ["landlord", "Раскольникову", "zzz", "ça", "x"]
    assert np.array_equal(fasttext.subword_vectors(model.ngrams, unknown, model.minn, model.maxn),
                          np.stack([kv[w] for w in unknown]))


OLD_LAYOUT = dict(dim=100, ws=5, epoch=5, min_count=5, neg=5, word_ngrams=1, loss=2, model=2,
                  bucket=2_000_000, minn=3, maxn=6, lr_update_rate=100)


def _old_head(t=1e-4, size=10, nwords=10, nlabels=0, **args):
    import struct

    values = {**OLD_LAYOUT, **args}
    return struct.pack("<12id3i", *values.values(), t, size, nwords, nlabels) + b"word\0"


def test_old_layout_is_told_by_its_arguments():
    """Models saved before fastText had a magic open with their arguments: each must be in range,
    so other binary data is not taken for a model."""
    from embtool.sniff import is_fasttext_head, sniff_head

    assert is_fasttext_head(_old_head()) and sniff_head(_old_head()).name == "fasttext-bin"
    assert is_fasttext_head(_old_head(minn=0, maxn=0, bucket=0, t=0.0))
    for bad in (dict(dim=0), dict(ws=-1), dict(loss=5), dict(model=0), dict(minn=4, maxn=3),
                dict(lr_update_rate=0), dict(t=float("nan")), dict(t=2.0), dict(nwords=11),
                dict(nlabels=-1)):
        assert not is_fasttext_head(_old_head(**bad)), bad
    assert not is_fasttext_head(_old_head()[:60])
    assert not is_fasttext_head(np.random.default_rng(0).bytes(1 << 16))


@pytest.fixture(scope="module")
def trained(gensim, tmp_path_factory):
    """A fastText model trained with gensim, saved as a .bin, gensim's vectors of it and its table."""
    from gensim.models import FastText
    from gensim.models.fasttext import load_facebook_vectors, save_facebook_model

    sentences = [["the", "quick", "brown", "fox", "jumps", "über", "naïve", "café", "日本語"],
                 ["a", "lazy", "dog", "sleeps", "über", "alles", "foxes", "jumping"]] * 20
    model = FastText(sentences, vector_size=12, min_count=1, bucket=300, min_n=2, max_n=5, epochs=3,
                     seed=3, workers=1)
    path = tmp_path_factory.mktemp("trained") / "m.bin"
    save_facebook_model(model, str(path))
    out = path.with_suffix(".safetensors")
    assert invoke("load-pretrained", path, out).code == 0
    return SimpleNamespace(kv=load_facebook_vectors(str(path)), table=out)


@pytest.mark.gensim
def test_model_trained_in_the_test_matches_gensim(trained):
    kv, out = trained.kv, trained.table
    words = ["fox", "über", "日本語", "fax", "überall", "日本", "Jumps", "cafe"]
    assert np.array_equal(_lookup(out, words), np.stack([kv[w] for w in words]))
    for query in (["fax"], ["überall", "dog"]):
        want = kv.most_similar(positive=query, topn=4)
        got = json.loads(invoke("similar", out, *query, "-k", "4").out)
        assert [x["word"] for x in got] == [k for k, _ in want]
        np.testing.assert_allclose([x["score"] for x in got], [s for _, s in want], rtol=0, atol=2e-7)


# -- evaluate: unknown words get their fastText vectors ------------------------------------------

def _flags(args):
    """evaluate's options for gensim's evaluate_word_* keyword arguments."""
    out = ["--restrict-vocab", str(args["restrict_vocab"])] if "restrict_vocab" in args else []
    return out + ["--dummy4unknown"] * bool(args.get("dummy4unknown")) + \
        ["--case-sensitive"] * (args.get("case_insensitive") is False)


def _evaluate(table, *args):
    r = invoke("evaluate", table, *args)
    assert r.code == 0, r.err
    return json.loads(r.out)


def _counts(result):
    return [[s["correct"], s["incorrect"]] for s in result["sections"]]


def _answered_by(path, todo, answers):
    """A questions file asking ``todo``'s questions with ``answers`` as the expected words: all
    correct if and only if every answer is the one expected (unknown answers are never checked
    otherwise)."""
    path.write_text(": all\n" + "".join(" ".join(spelt[:3] + [want]) + "\n"
                                        for (_, spelt), want in zip(todo, answers) if want))
    return sum(1 for want in answers if want)


@pytest.mark.parametrize("setting", EVALUATE_GOLDEN, ids=lambda s: json.dumps(s["args"]))
def test_evaluate_gives_unknown_words_their_vectors_golden(sample_table, tmp_path, setting):
    """The default for a fastText table (--unknown subword): gensim's most_similar and similarity
    with kv[word] for each unknown word (tests/gensim_fasttext.py, golden)."""
    flags = _flags(setting["args"])
    got = _evaluate(sample_table, "--analogies", QUESTIONS, "--pairs", PAIRS, *flags)
    a, p = got["analogies"], got["pairs"]
    assert _counts(a) == setting["analogy_counts"]
    assert [a["oov"], a["oov_answered"]] == [setting["analogy_oov"], setting["analogy_oov_answered"]]
    assert [p["pairs"], p["oov"], p["oov_answered"]] == [setting["pairs"], 0, setting["pairs_oov_answered"]]
    assert abs(p["pearson"] - setting["pearson"]) <= 1e-9 and abs(p["spearman"] - setting["spearman"]) <= 1e-9
    _, todo = gensim_fasttext.questions(QUESTIONS)
    n = _answered_by(tmp_path / "q.txt", todo, setting["predicted"])
    assert _counts(_evaluate(sample_table, "--analogies", tmp_path / "q.txt", *flags))[-1] == [n, 0]


@pytest.mark.gensim
def test_evaluate_on_the_sample_matches_live_gensim(sample_table):
    """--unknown skip is gensim's evaluate_word_analogies / evaluate_word_pairs exactly; the
    default gives unknown words their vectors (live oracle of the golden's first setting)."""
    from gensim.models.fasttext import load_facebook_vectors

    kv = load_facebook_vectors(str(SAMPLE))
    got = _evaluate(sample_table, "--analogies", QUESTIONS, "--pairs", PAIRS, "--unknown", "skip")
    score, sections = kv.evaluate_word_analogies(str(QUESTIONS))
    assert _counts(got["analogies"]) == [[len(s["correct"]), len(s["incorrect"])] for s in sections]
    assert got["analogies"]["accuracy"] == score and got["analogies"]["oov_answered"] == 0
    pearson, spearman, oov_ratio = kv.evaluate_word_pairs(str(PAIRS))
    p = got["pairs"]
    assert abs(p["pearson"] - pearson[0]) <= 1e-9 and abs(p["spearman"] - spearman[0]) <= 1e-9
    assert p["oov_ratio"] == pytest.approx(oov_ratio, abs=1e-12)
    got = _evaluate(sample_table, "--analogies", QUESTIONS)
    counts, oov, answered = gensim_fasttext.analogies(kv, QUESTIONS)
    assert [_counts(got), got["oov"], got["oov_answered"]] == [counts, oov, answered]


@pytest.mark.gensim
@pytest.mark.parametrize("args", [{}, {"restrict_vocab": 8, "dummy4unknown": True}, {"case_insensitive": False}])
def test_evaluate_on_a_model_trained_in_the_test_matches_gensim(trained, tmp_path, args):
    """Questions and pairs mixing known words, words past restrict_vocab (their own rows) and
    unknown words (subword vectors), answers and gold scores checked against gensim."""
    from scipy import stats

    kv, rng = trained.kv, np.random.default_rng(7)
    words = kv.index_to_key + ["fax", "überall", "日本", "Jumps", "FOX", "cafe", "dogs", "x", "lazily"]
    todo = [(0, [str(w) for w in rng.choice(words, 4)]) for _ in range(60)]
    ok = gensim_fasttext.known_words(kv, args.get("restrict_vocab", 300000), args.get("case_insensitive", True))
    answers = [gensim_fasttext.predict(kv, ok, spelt, args.get("restrict_vocab", 300000),
                                       args.get("case_insensitive", True)) for _, spelt in todo]
    answers = [want if q % 3 else spelt[3] for q, ((_, spelt), want) in enumerate(zip(todo, answers))]
    path = tmp_path / "q.txt"
    _answered_by(path, todo, answers)
    pairs = tmp_path / "p.tsv"
    pairs.write_text("".join(f"{a}\t{b}\t{rng.integers(0, 10)}\n" for a, b in rng.choice(words, (40, 2))))
    got = _evaluate(trained.table, "--analogies", path, "--pairs", pairs, *_flags(args))
    counts, oov, answered = gensim_fasttext.analogies(kv, path, **args)
    a = got["analogies"]
    assert [_counts(a), a["oov"], a["oov_answered"]] == [counts, oov, answered]
    assert a["correct"] > 30 and a["oov_answered"] > 10  # the answers were mostly gensim's
    pair_args = {k: v for k, v in args.items() if k != "dummy4unknown"}
    gold, sims, answered = gensim_fasttext.pair_similarities(kv, pairs, **pair_args)
    p = got["pairs"]
    assert [p["pairs"], p["oov_answered"]] == [len(gold), answered]
    assert abs(p["pearson"] - stats.pearsonr(gold, sims)[0]) <= 1e-9
    assert abs(p["spearman"] - stats.spearmanr(gold, sims)[0]) <= 1e-9
    score, sections = kv.evaluate_word_analogies(str(path), **args)  # --unknown skip: gensim's own
    got = _evaluate(trained.table, "--analogies", path, "--unknown", "skip", *_flags(args))
    assert _counts(got) == [[len(s["correct"]), len(s["incorrect"])] for s in sections]


def test_evaluate_unknown_error_names_the_file_and_line(sample_table, tmp_path):
    r = invoke("evaluate", sample_table, "--analogies", QUESTIONS, "--unknown", "error")
    assert_single_error_line(r, f"{QUESTIONS}, line 2: word 'Athens' is not in the vocabulary")
    pairs = tmp_path / "p.tsv"
    pairs.write_text("the\tof\t1\nthe\tzzzq\t2\n")
    r = invoke("evaluate", sample_table, "--pairs", pairs, "--unknown", "error")
    assert_single_error_line(r, "p.tsv, line 2: word 'zzzq' is not in the vocabulary")
    questions = tmp_path / "q.txt"
    questions.write_text(": s\nthe of and in\nthe of and said\n")  # 'said': row 9
    r = invoke("evaluate", sample_table, "--analogies", questions, "--restrict-vocab", "5", "--unknown", "error")
    assert_single_error_line(r, "q.txt, line 3: word 'said' is row 9, past the first 5 rows")
    plain = tmp_path / "plain.vec"
    plain.write_text("2 2\na 1 0\nb 0 1\n")
    assert invoke("load-pretrained", plain, tmp_path / "p.safetensors").code == 0
    r = invoke("evaluate", tmp_path / "p.safetensors", "--pairs", pairs, "--unknown", "subword")
    assert_single_error_line(r, "no subword n-grams", "use --unknown skip or error")
    assert cli_query.EVALUATE_UNKNOWN == evaluate.UNKNOWN_POLICIES


def test_evaluate_computes_the_subword_vectors_of_a_file_at_once(sample_table):
    with Table.open(sample_table) as t:
        calls = []

        def subwords(words, unit=False):
            calls.append(unit)
            return pretrained.subword_vectors(t, words, unit=unit)

        got = evaluate.evaluate_analogies(t.weight(), t.vocab, QUESTIONS, unknown="subword", subwords=subwords)
        assert calls == [True] and _counts(got) == EVALUATE_GOLDEN[0]["analogy_counts"]
        got = evaluate.evaluate_pairs(t.weight(), t.vocab, PAIRS, unknown="subword", subwords=subwords)
        assert calls == [True, False] and got["oov_answered"] == EVALUATE_GOLDEN[0]["pairs_oov_answered"]
        with pytest.raises(ConfigError, match="needs subwords"):
            evaluate.evaluate_pairs(t.weight(), t.vocab, PAIRS, unknown="subword")
