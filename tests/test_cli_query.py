"""similar / evaluate / EmbeddingBag lookups / info --stats through the command line (in-process),
against gensim and PyTorch when they are importable."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from embtool.table import Table

from helpers import assert_single_error_line, invoke, make_table

SAMPLES = Path(__file__).parent.parent / "sample_data"
GLOVE = SAMPLES / "glove.6B.50d.10k.txt.gz"


@pytest.fixture(scope="module")
def glove(tmp_path_factory):
    p = tmp_path_factory.mktemp("glove") / "glove.safetensors"
    assert invoke("load-pretrained", GLOVE, p).code == 0
    return p


@pytest.fixture(scope="module")
def kv():
    gensim = pytest.importorskip("gensim") if not __import__("os").environ.get("CI") else __import__("gensim")
    from gensim.models import KeyedVectors

    return KeyedVectors.load_word2vec_format(str(GLOVE), no_header=True)


def sim(*args):
    r = invoke("similar", *args)
    assert r.code == 0, r.err
    return json.loads(r.out)


@pytest.mark.parametrize("pos,neg,topn,restrict", [
    (["king"], [], 10, None), (["king", "woman"], ["man"], 5, None), (["paris", "germany"], ["france"], 3, None),
    (["computer"], [], 20, 2000), (["good"], ["bad"], 7, None),
])
def test_similar_matches_gensim(glove, kv, pos, neg, topn, restrict):
    args = [glove, *pos, "-k", topn] + [a for n in neg for a in ("-n", n)]
    if restrict:
        args += ["--restrict-vocab", restrict]
    ours = sim(*args)
    theirs = kv.most_similar(positive=pos, negative=neg, topn=topn, restrict_vocab=restrict)
    assert [r["word"] for r in ours] == [w for w, _ in theirs]
    assert np.allclose([r["score"] for r in ours], [s for _, s in theirs], atol=1e-6, rtol=0)
    assert all(r["id"] == kv.key_to_index[r["word"]] for r in ours)


def test_similar_by_vector_and_ids(glove, kv, tmp_path):
    v = kv["war"] * 3
    np.save(tmp_path / "v.npy", v)
    ours = sim(glove, "--vector", tmp_path / "v.npy", "-k", 4)
    theirs = kv.similar_by_vector(v, topn=4)
    assert [r["word"] for r in ours] == [w for w, _ in theirs] and ours[0]["word"] == "war"
    row = kv.key_to_index["king"]
    assert sim(glove, "--ids", row, "-k", 3) == sim(glove, "king", "-k", 3)


def test_similar_formats_and_table_without_vocab(tmp_path):
    w = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    p = make_table(tmp_path / "t.safetensors", w)
    res = sim(p, "3", "-k", 2)
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    scores = unit @ unit[3]
    scores[3] = -np.inf
    assert [r["id"] for r in res] == list(np.argsort(-scores)[:2]) and "word" not in res[0]
    r = invoke("similar", p, "3", "-k", 2, "-f", "csv")
    assert r.out.splitlines()[0] == "id,score"
    r = invoke("similar", p, "3", "-k", 2, "-f", "jsonl")
    assert len(r.out.splitlines()) == 2


def test_similar_errors(glove, tmp_path):
    assert_single_error_line(invoke("similar", glove, "qwertyuiop"), "'qwertyuiop' is not in the vocabulary")
    assert invoke("similar", glove).code == 2
    assert_single_error_line(invoke("similar", glove, "--ids", 10_000), "row 10000 is out of range")
    np.save(tmp_path / "bad.npy", np.zeros(7, np.float32))
    r = invoke("similar", glove, "--vector", tmp_path / "bad.npy")
    assert r.code == 1 and r.err.startswith("Error: ") and len(r.err.strip().splitlines()) == 1


def test_evaluate_matches_gensim(glove, kv):
    r = invoke("evaluate", glove, "--analogies", SAMPLES / "questions-words.sample.txt")
    ours = json.loads(r.out)
    score, sections = kv.evaluate_word_analogies(str(SAMPLES / "questions-words.sample.txt"))
    assert ours["accuracy"] == score
    assert [(s["section"], s["correct"], s["incorrect"]) for s in ours["sections"]] == \
        [(s["section"], len(s["correct"]), len(s["incorrect"])) for s in sections]
    r = invoke("evaluate", glove, "--pairs", SAMPLES / "wordsim353.tsv")
    ours = json.loads(r.out)
    pearson, spearman, oov = kv.evaluate_word_pairs(str(SAMPLES / "wordsim353.tsv"))
    assert abs(ours["pearson"] - pearson.statistic) < 1e-9
    assert abs(ours["spearman"] - spearman.statistic) < 1e-9
    assert abs(ours["oov_ratio"] - oov) < 1e-9
    both = json.loads(invoke("evaluate", glove, "--analogies", SAMPLES / "questions-words.sample.txt",
                          "--pairs", SAMPLES / "wordsim353.tsv").out)
    assert set(both) == {"analogies", "pairs"}


def test_evaluate_errors(glove, tmp_path):
    assert invoke("evaluate", glove).code == 2
    bad = tmp_path / "q.txt"
    bad.write_text("king queen man woman\n")
    assert_single_error_line(invoke("evaluate", glove, "--analogies", bad), "q.txt", "line 1")
    p = make_table(tmp_path / "nv.safetensors", np.ones((3, 2), np.float32))
    assert_single_error_line(invoke("evaluate", p, "--pairs", SAMPLES / "wordsim353.tsv"), "vocabulary")


@pytest.fixture
def bag_table(tmp_path):
    w = (np.random.default_rng(4).standard_normal((30, 7)) * 2).astype(np.float32)
    return make_table(tmp_path / "b.safetensors", w), w


def bag(*args):
    r = invoke("lookup", *args, "-f", "npy")
    assert r.code == 0, r.err
    return np.load(io.BytesIO(r.stdout_bytes))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_bags_match_torch(bag_table, torch, mode):
    p, w = bag_table
    ids = [3, 1, 1, 1, 4, 0, 7, 29, 3]
    offsets = [0, 0, 3, 3, 6]
    F = torch.nn.functional
    ref = F.embedding_bag(torch.tensor(ids), torch.from_numpy(w), torch.tensor(offsets), mode=mode)
    got = bag(p, json.dumps(ids), "--offsets", json.dumps(offsets), "--mode", mode)
    np.testing.assert_array_max_ulp(got, ref.numpy(), maxulp=2)
    # 2-D ids: each row is a bag
    ids2 = [[3, 1, 1], [4, 0, 7]]
    ref2 = F.embedding_bag(torch.tensor(ids2), torch.from_numpy(w), mode=mode)
    np.testing.assert_array_max_ulp(bag(p, json.dumps(ids2), "--mode", mode), ref2.numpy(), maxulp=2)
    # padding_idx is skipped and left out of the mean's count; max_norm renorms every input row first
    tw = torch.from_numpy(w.copy())
    ref3 = F.embedding_bag(torch.tensor(ids), tw, torch.tensor(offsets), mode=mode, padding_idx=1, max_norm=1.0)
    got3 = bag(p, json.dumps(ids), "--offsets", "0,0,3,3,6", "--mode", mode, "--padding-idx", 1,
               "--max-norm", 1.0, "--write-back")
    np.testing.assert_array_max_ulp(got3, ref3.numpy(), maxulp=2)
    with Table.open(p) as t:
        assert np.array_equal(t.weight(), tw.numpy())


def test_bag_per_sample_weights_and_last_offset(bag_table, torch):
    p, w = bag_table
    ids = [5, 6, 7, 8, 9]
    psw = [0.5, -1.0, 2.0, 0.25, 3.0]
    F = torch.nn.functional
    ref = F.embedding_bag(torch.tensor(ids), torch.from_numpy(w), torch.tensor([0, 2, 5]), mode="sum",
                          per_sample_weights=torch.tensor(psw), include_last_offset=True)
    got = bag(p, json.dumps(ids), "--offsets", "[0, 2, 5]", "--mode", "sum", "--per-sample-weights",
              json.dumps(psw), "--include-last-offset")
    np.testing.assert_array_max_ulp(got, ref.numpy(), maxulp=2)


@pytest.mark.parametrize("args,needle", [
    (["[1, 2, 3]", "--offsets", "[1, 2]"], "offsets[0]"),
    (["[1, 2, 3]", "--offsets", "[0, 5]"], "offsets"),
    (["[1, 2, 3]", "--offsets", "[0, 2, 1]"], "offsets"),
    (["[1, 2, 3]", "--offsets", "[0]", "--mode", "mean", "--per-sample-weights", "[1, 2, 3]"], "per_sample_weights"),
    (["[1, 2, 3]", "--mode", "sum", "--per-sample-weights", "[1, 2]"], "same shape"),
    (["[1, 2, 30]", "--offsets", "[0]"], "30"),
    (["[[1, 2], [3, 4]]", "--offsets", "[0, 1]"], "offsets"),
])
def test_bad_bags(bag_table, args, needle):
    p, _ = bag_table
    before = p.read_bytes()
    r = invoke("lookup", p, *args)
    assert_single_error_line(r, needle)
    assert p.read_bytes() == before


def test_info_stats(tmp_path):
    w = np.random.default_rng(1).standard_normal((100, 6)).astype(np.float32)
    w[5] = 0
    w[7] = w[2]
    w[9, 1] = np.nan
    p = make_table(tmp_path / "s.safetensors", w)
    facts = json.loads(invoke("info", p, "--stats", "--json").out)
    s = facts["stats"]
    assert s["zero_rows"]["count"] == 1 and s["nonfinite_rows"]["count"] == 1
    assert s["duplicate_rows"]["count"] == 1
    r = invoke("info", p, "--stats")
    assert r.code == 0 and "histogram" in r.out
