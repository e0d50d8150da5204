"""fastText .bin models: gensim's vectors for known words and subword vectors for unknown words,
bit for bit (committed golden from gensim 4.4, live against gensim when installed)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from embtool.errors import FormatError
from embtool.formats import fasttext
from embtool.table import Table
from helpers import assert_single_error_line, invoke

SAMPLE = Path(__file__).parent.parent / "sample_data" / "small.fasttext.bin"
GOLDEN = Path(__file__).parent / "golden" / "fasttext.npz"


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
    kv = load_facebook_vectors(str(path))
    model = fasttext.read_bin(path)
    assert model.words == kv.index_to_key
    assert np.array_equal(fasttext.word_vectors(model), kv.vectors)
    unknown = ["landlord", "Раскольникову", "zzz", "ça", "x"]
    assert np.array_equal(fasttext.subword_vectors(model.ngrams, unknown, model.minn, model.maxn),
                          np.stack([kv[w] for w in unknown]))


@pytest.mark.gensim
def test_model_trained_in_the_test_matches_gensim(gensim, tmp_path):
    from gensim.models import FastText
    from gensim.models.fasttext import load_facebook_vectors, save_facebook_model

    sentences = [["the", "quick", "brown", "fox", "jumps", "über", "naïve", "café", "日本語"],
                 ["a", "lazy", "dog", "sleeps", "über", "alles", "foxes", "jumping"]] * 20
    model = FastText(sentences, vector_size=12, min_count=1, bucket=300, min_n=2, max_n=5, epochs=3,
                     seed=3, workers=1)
    path = tmp_path / "m.bin"
    save_facebook_model(model, str(path))
    kv = load_facebook_vectors(str(path))
    out = tmp_path / "m.safetensors"
    assert invoke("load-pretrained", path, out).code == 0
    words = ["fox", "über", "日本語", "fax", "überall", "日本", "Jumps", "cafe"]
    assert np.array_equal(_lookup(out, words), np.stack([kv[w] for w in words]))
    for query in (["fax"], ["überall", "dog"]):
        want = kv.most_similar(positive=query, topn=4)
        got = json.loads(invoke("similar", out, *query, "-k", "4").out)
        assert [x["word"] for x in got] == [k for k, _ in want]
        np.testing.assert_allclose([x["score"] for x in got], [s for _, s in want], rtol=0, atol=2e-7)
