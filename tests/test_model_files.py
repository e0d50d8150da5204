"""The files users have: tokenizer vocabularies, model folders, sharded checkpoints, every
safetensors dtype, model2vec layouts, and clear refusals of what is not a table."""
from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
from safetensors.numpy import save_file

from embtool.errors import FormatError
from embtool.sniff import sniff
from embtool.table import Table
from embtool.vocab_files import read_vocabulary
from helpers import assert_single_error_line, invoke
from model_builders import (SPECIAL, WORDS, bert_tensors, model2vec_folder, sentence_transformers_folder,
                            sharded_checkpoint, static_embedding_folder, tokenizer_json, write_json)

TOKENS = SPECIAL + WORDS


@pytest.fixture
def model2vec():
    """model2vec as a live oracle (and the tokenizers library it installs): skipped when absent
    locally, required in CI (.ci/run installs it)."""
    import os

    try:
        return pytest.importorskip("model2vec") if not os.environ.get("CI") else __import__("model2vec")
    except ImportError:  # pragma: no cover - CI installs the oracle extra
        raise


@pytest.fixture
def tokenizers(model2vec):
    import tokenizers

    return tokenizers


def _npy(result):
    return np.load(io.BytesIO(result.stdout_bytes))


# -- vocabularies ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["WordPiece", "BPE", "Unigram"])
def test_tokenizer_json_ids_come_from_the_file(tmp_path, kind):
    tokens = ["<pad>", "a", "Ġthe", "▁king", "##s", "日本"]
    added = {"<extra_0>": 7, "<mask>": 6}  # added tokens name ids past the model's vocabulary
    p = write_json(tmp_path / "tokenizer.json", tokenizer_json(kind, tokens, added))
    got = read_vocabulary(p, 9)
    assert got.words == tokens + ["<mask>", "<extra_0>", None]
    assert got.unnamed == 1 and got.kind == f"{kind} tokenizer"


@pytest.mark.model2vec
@pytest.mark.parametrize("kind", ["WordPiece", "BPE", "Unigram"])
def test_tokenizer_json_agrees_with_the_tokenizers_library(tmp_path, kind, tokenizers):
    p = write_json(tmp_path / "tokenizer.json", tokenizer_json(kind, TOKENS, {"<new>": len(TOKENS)}))
    want = tokenizers.Tokenizer.from_file(str(p)).get_vocab(with_added_tokens=True)
    got = read_vocabulary(p, len(TOKENS) + 1).words
    assert {w: i for i, w in enumerate(got)} == want


@pytest.mark.model2vec
def test_tokenizers_library_files_read_the_same(tmp_path, tokenizers):
    from tokenizers.models import BPE, Unigram, WordPiece

    vocab = {t: i for i, t in enumerate(TOKENS)}
    for name, model in [("wp", WordPiece(vocab, unk_token="[UNK]")), ("bpe", BPE(vocab, [])),
                        ("uni", Unigram([(t, -1.0) for t in TOKENS], 1, False))]:
        tok = tokenizers.Tokenizer(model)
        tok.add_special_tokens(["<added>"])
        p = tmp_path / f"{name}.json"
        tok.save(str(p))
        n = tok.get_vocab_size(with_added_tokens=True)
        got = read_vocabulary(p, n).words
        assert {w: i for i, w in enumerate(got)} == tok.get_vocab(with_added_tokens=True), name


def test_vocab_txt_bom_and_crlf_are_repaired(tmp_path):
    p = tmp_path / "vocab.txt"
    p.write_bytes(b"\xef\xbb\xbf[PAD]\r\nthe\r\nof\n")
    got = read_vocabulary(p, 3)
    assert got.words == ["[PAD]", "the", "of"]
    assert got.notes == ["repaired BOM", "2 CRLF"]


def test_json_token_map(tmp_path):
    p = write_json(tmp_path / "vocab.json", {"b": 1, "a": 0, "c": 3})
    assert read_vocabulary(p, 4).words == ["a", "b", None, "c"]


@pytest.mark.parametrize("policy,want", [("first", ["a", "b", None, "c"]), ("last", [None, "b", "a", "c"])])
def test_duplicate_tokens_follow_the_policy(tmp_path, policy, want):
    p = tmp_path / "vocab.txt"
    p.write_text("a\nb\na\nc\n")
    got = read_vocabulary(p, 4, on_duplicate=policy)
    assert got.words == want
    with pytest.raises(FormatError, match=r"vocab.txt, line 3: duplicate token 'a' \(rows 0 and 2\)"):
        read_vocabulary(p, 4, on_duplicate="error")


@pytest.mark.parametrize("content,message", [
    (b"a\n\nb\n", "vocab.txt, line 2: empty line"),
    (b"a\n\xff\n", "vocab.txt, line 2: not valid UTF-8"),
    (b"a\nb\nc\nd\n", "vocab.txt, line 4: token 'd' names row 3, past the tensor's 3 rows"),
])
def test_vocab_txt_errors_name_file_and_line(tmp_path, content, message):
    p = tmp_path / "vocab.txt"
    p.write_bytes(content)
    with pytest.raises(FormatError, match=message):
        read_vocabulary(p, 3)


def test_tokenizer_json_errors_name_file_and_line(tmp_path):
    p = tmp_path / "tokenizer.json"
    p.write_text('{\n  "model": {"type": "WordPiece",\n "vocab": {"a": 0,\n "b": -1}}}')
    with pytest.raises(FormatError, match=r"tokenizer.json, line 4: token 'b' has id -1"):
        read_vocabulary(p, 3)
    p.write_text('{\n "model": {\n "vocab": {"a": 0,,}}}')
    with pytest.raises(FormatError, match=r"tokenizer.json, line 3: invalid JSON"):
        read_vocabulary(p, 3)


def test_vocabulary_index_with_rows_without_a_word():
    from embtool.vocab import DuplicateWordError, Vocab, encode_vocab_rows, extend_vocab

    arrays = encode_vocab_rows(["b", None, "a", None, ""])
    assert len(arrays["vocab.order"]) == 3 and len(arrays["vocab.offsets"]) == 6
    v = Vocab.from_arrays(arrays)
    assert (len(v), v.named, v.unnamed) == (5, 3, 2)
    assert v.head(5) == ["b", None, "a", None, ""] and v.word(3) is None
    assert [v.find(w) for w in ["a", "b", "", "zz"]] == [2, 0, 4, -1]
    v2 = Vocab.from_arrays(extend_vocab(arrays, ["<pad>"]))
    assert v2.head(6)[-1] == "<pad>" and v2.find("<pad>") == 5 and v2.unnamed == 2
    with pytest.raises(DuplicateWordError, match="rows 0 and 3"):
        encode_vocab_rows(["a", None, None, "a"])


def test_load_pretrained_with_tokenizer_json_and_a_padded_tensor(tmp_path):
    """A real MiniLM package ships only tokenizer.json; embedding matrices are often padded past
    the tokenizer (rows without a word keep their ids)."""
    w = np.random.default_rng(0).standard_normal((len(TOKENS) + 3, 8)).astype(np.float32)
    save_file({"embeddings.word_embeddings.weight": w, "other": w[:2]}, str(tmp_path / "model.safetensors"))
    tok = write_json(tmp_path / "tok" / "tokenizer.json", tokenizer_json("WordPiece", TOKENS))
    out = tmp_path / "t.safetensors"
    r = invoke("load-pretrained", tmp_path / "model.safetensors", out, "--tensor",
               "embeddings.word_embeddings.weight", "--vocab", tok)
    assert r.code == 0, r.err
    assert "3 rows have no word" in r.err
    with Table.open(out) as t:
        assert t.vocab.named == len(TOKENS) and t.vocab.unnamed == 3
        assert t.vocab.word(len(TOKENS)) is None and t.vocab.find("king") == TOKENS.index("king")
    r = invoke("lookup", out, str(len(TOKENS) + 2), "-f", "npy")
    assert np.array_equal(_npy(r), w[[len(TOKENS) + 2]])
    r = invoke("info", out, "--json")
    assert json.loads(r.out)["table"]["vocab"]["rows_without_word"] == 3
    r = invoke("similar", out, "king", "-k", str(len(w) - 1))
    assert r.code == 0, r.err
    assert sum(x["word"] is None for x in json.loads(r.out)) == 3
    # a vector file needs a word per row: rows without one are named by their number
    assert invoke("export", out, tmp_path / "t.vec").code == 0
    lines = (tmp_path / "t.vec").read_text().splitlines()
    assert [ln.split()[0] for ln in lines[-3:]] == [str(len(TOKENS)), str(len(TOKENS) + 1), str(len(TOKENS) + 2)]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("king\tqueen\t9\nman\twoman\t8\nparis\tberlin\t2\n")
    r = invoke("evaluate", out, "--pairs", pairs)
    assert r.code == 0, r.err
    assert json.loads(r.out)["pairs"] == 3


# -- folders and shards -----------------------------------------------------------------------

def test_sentence_transformers_folder_in_one_command(tmp_path):
    root = tmp_path / "all-MiniLM"
    tensors = sentence_transformers_folder(root, TOKENS)
    w = tensors["embeddings.word_embeddings.weight"]
    out = tmp_path / "mini.safetensors"
    r = invoke("load-pretrained", root, out)
    assert r.code == 0, r.err
    assert "'embeddings.word_embeddings.weight'" in r.err and "tokenizer.json" in r.err
    with Table.open(out) as t:
        assert np.array_equal(t.weight(), w) and t.vocab.head(len(TOKENS)) == TOKENS
    # every read-only command takes the folder itself
    r = invoke("lookup", root, "-w", "king", "queen", "-f", "npy")
    assert np.array_equal(_npy(r), w[[TOKENS.index("king"), TOKENS.index("queen")]])
    assert json.loads(invoke("similar", root, "king", "-k", "3").out) == \
        json.loads(invoke("similar", out, "king", "-k", "3").out)
    facts = json.loads(invoke("info", root, "--json").out)
    assert facts["table"]["tensor"] == "embeddings.word_embeddings.weight"
    assert {x["name"] for x in facts["tensors"]} == set(tensors)
    r = invoke("export", root, tmp_path / "mini.vec")
    assert r.code == 0, r.err
    assert (tmp_path / "mini.vec").read_text().split("\n")[1].startswith("[PAD] ")
    r = invoke("renorm", root, "--max-norm", "1")
    assert_single_error_line(r, str(root), "read-only", "load-pretrained")


def test_static_embedding_subfolder(tmp_path):
    w = np.random.default_rng(1).standard_normal((len(TOKENS), 6)).astype(np.float32)
    static_embedding_folder(tmp_path / "m", TOKENS, w)
    r = invoke("lookup", tmp_path / "m", "-w", "paris", "-f", "npy")
    assert r.code == 0, r.err
    assert np.array_equal(_npy(r), w[[TOKENS.index("paris")]])


def test_sharded_checkpoint_reads_only_the_shard_of_the_tensor(tmp_path):
    tensors = bert_tensors(len(TOKENS), 8, seed=3)
    emb = "embeddings.word_embeddings.weight"
    rest = [n for n in tensors if n != emb]
    index = sharded_checkpoint(tmp_path, tensors, [rest[:3], [emb] + rest[3:5], rest[5:]], TOKENS)
    facts = json.loads(invoke("info", index, "--json").out)
    assert {x["name"]: x["file"] for x in facts["tensors"]}[emb] == "model-00002-of-00003.safetensors"
    assert len(facts["tensors"]) == len(tensors)
    # the other shards are garbage now: the lookup never opens them
    for k in (1, 3):
        (tmp_path / f"model-0000{k}-of-00003.safetensors").write_bytes(b"\xff" * 64)
    r = invoke("lookup", index, "-w", "woman", "-f", "npy")
    assert r.code == 0, r.err
    assert np.array_equal(_npy(r), tensors[emb][[TOKENS.index("woman")]])
    out = tmp_path / "t.safetensors"
    assert invoke("load-pretrained", index, out).code == 0
    with Table.open(index) as t:
        assert t.raw.base is not None  # a view of the mapped shard: zero-copy
    r = invoke("lookup", tmp_path / "model-00002-of-00003.safetensors", "0", "--tensor", rest[0])
    assert_single_error_line(r, f"no tensor {rest[0]!r}; tensor {rest[0]!r} is in shard "
                             "model-00001-of-00003.safetensors; give the index model.safetensors.index.json")
    r = invoke("lookup", index, "0", "--tensor", "nope")
    assert_single_error_line(r, "no tensor 'nope' in the index", "and")
    assert len(r.err) - len(str(index)) < 300


def test_a_folder_with_several_candidates_lists_them_in_one_line(tmp_path):
    rng = np.random.default_rng(0)
    save_file({f"layer.{i}.weight": rng.standard_normal((4, 4)).astype(np.float32) for i in range(40)},
              str(tmp_path / "model.safetensors"))
    r = invoke("info", tmp_path, "--tensor", "x")
    assert_single_error_line(r, "no tensor 'x'", "2-D: layer.0.weight", "and 35 more")
    r = invoke("lookup", tmp_path / "model.safetensors", "0")
    assert_single_error_line(r, "40 2-D tensors; choose one with --tensor", "and 35 more")
    assert len(r.err) - len(str(tmp_path)) < 250


# -- dtypes -------------------------------------------------------------------------------------

ALL_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2,
              "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8,
              "F64": 8, "C64": 8, "F4": 0.5, "Q9_FUTURE": None}


def _raw_safetensors(path, entries):
    """A safetensors file written by hand (so any dtype string can be named)."""
    header, data = {}, b""
    for name, (dtype, shape, payload) in entries.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path


def test_every_dtype_is_listed_and_never_blocks_the_file(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    entries = {"weight": ("F32", [3, 4], w.tobytes())}
    for dt, size in ALL_DTYPES.items():
        entries[f"x.{dt}"] = (dt, [2, 2], bytes(int(4 * (size or 3))))
    p = _raw_safetensors(tmp_path / "all.safetensors", entries)
    facts = json.loads(invoke("info", p, "--json").out)
    assert {x["name"].split(".")[1]: x["dtype"] for x in facts["tensors"] if x["name"] != "weight"} == \
        {dt: dt for dt in ALL_DTYPES}
    r = invoke("lookup", p, "2", "-f", "npy")
    assert np.array_equal(_npy(r), w[[2]])
    assert_single_error_line(invoke("lookup", p, "0", "--tensor", "x.C64"), "has dtype C64")
    assert_single_error_line(invoke("lookup", p, "0", "--tensor", "x.Q9_FUTURE"), "has dtype Q9_FUTURE")


@pytest.mark.torch
@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu"])
def test_float8_tables_widen_exactly_as_torch(tmp_path, torch, name):
    from safetensors.torch import save_file as torch_save

    dt = getattr(torch, name)
    bits = torch.arange(256, dtype=torch.uint8).reshape(64, 4)
    w = bits.view(dt)
    p = tmp_path / "f8.safetensors"
    torch_save({"weight": w}, str(p))
    with Table.open(p) as t:
        got = t.weight()
    want = w.float().numpy()
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def test_integer_table_is_widened_and_says_so(tmp_path):
    w = np.arange(-6, 6, dtype=np.int8).reshape(3, 4)
    save_file({"embeddings": w}, str(tmp_path / "i8.safetensors"))
    r = invoke("load-pretrained", tmp_path / "i8.safetensors", tmp_path / "t.safetensors")
    assert r.code == 0, r.err
    assert "I8 values used as float32 (widened)" in r.err
    with Table.open(tmp_path / "t.safetensors") as t:
        assert t.dtype == "F32" and np.array_equal(t.weight(), w.astype(np.float32))


# -- model2vec ------------------------------------------------------------------------------------

def test_model2vec_vocabulary_quantised_layout(tmp_path):
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((4, 5)).astype(np.float32)
    mapping = rng.integers(0, 4, len(TOKENS)).astype(np.int32)
    weights = rng.random(len(TOKENS)).astype(np.float32)
    model2vec_folder(tmp_path / "m", TOKENS, {"embeddings": emb, "mapping": mapping, "weights": weights})
    want = emb[mapping] * weights[:, None]
    with Table.open(tmp_path / "m") as t:
        assert t.shape == (len(TOKENS), 5) and np.array_equal(t.weight(), want)
        assert any("vocabulary-quantised" in n for n in t.notes)
    r = invoke("load-pretrained", tmp_path / "m", tmp_path / "t.safetensors")
    assert r.code == 0, r.err
    with Table.open(tmp_path / "t.safetensors") as t:
        assert np.array_equal(t.weight(), want) and t.vocab.find("queen") == TOKENS.index("queen")
    bad = {"embeddings": emb, "mapping": np.full(len(TOKENS), 9, np.int32)}
    model2vec_folder(tmp_path / "bad", TOKENS, bad)
    assert_single_error_line(invoke("info", tmp_path / "bad", "--stats"), "mapping[0] = 9 is outside the 4 rows")


@pytest.mark.model2vec
@pytest.mark.parametrize("layout", ["float32", "float16", "int8", "vocabulary-quantised"])
def test_model2vec_static_model_vectors_live(tmp_path, model2vec, layout):
    """Each row equals model2vec's own token vector (StaticModel's encoding of that token id)."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    rng = np.random.default_rng(4)
    tok_file = write_json(tmp_path / "tok.json", tokenizer_json("WordPiece", TOKENS))
    tokenizer = Tokenizer.from_file(str(tok_file))
    emb = rng.standard_normal((len(TOKENS), 6)).astype(np.float32)
    kw = {}
    if layout == "float16":
        emb = emb.astype(np.float16)
    elif layout == "int8":
        from model2vec.quantization import quantize_embeddings

        emb = quantize_embeddings(emb, "int8")
    elif layout == "vocabulary-quantised":
        emb = emb[:5]
        kw = {"token_mapping": rng.integers(0, 5, len(TOKENS)), "weights": rng.random(len(TOKENS)).astype(np.float32)}
    model = StaticModel(emb, tokenizer, **kw)
    model.save_pretrained(str(tmp_path / "m"))
    loaded = StaticModel.from_pretrained(str(tmp_path / "m"))
    want = np.stack([loaded._encode_helper([i])[0] for i in range(len(TOKENS))]).astype(np.float32)
    with Table.open(tmp_path / "m") as t:
        got = t.weight()
        assert np.array_equal(got.astype(np.float32), want)
        assert [t.vocab.word(i) for i in range(len(TOKENS))] == list(loaded.tokens)


# -- refusals ---------------------------------------------------------------------------------------

def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch unpickled-marker",))


@pytest.mark.parametrize("command", [["info"], ["lookup", "{p}", "0"], ["similar", "{p}", "king"],
                                     ["export", "{p}", "out.vec"]])
@pytest.mark.parametrize("make,what", [
    (lambda p: p.write_text("2 3\nking 1 2 3\nqueen 1 2 4\n"), "this is a word2vec text file, not a safetensors table; make a table of it with `embtool load-pretrained` first"),
    (lambda p: p.write_text("king 1 2 3\nqueen 1 2 4\n"), "this is a GloVe text file"),
    (lambda p: p.write_bytes(_npy_bytes(np.zeros((2, 2)))), "this is a .npy array"),
    (lambda p: __import__("gzip").open(p, "wt").write("2 3\nking 1 2 3\nqueen 1 2 4\n"),
     "this is a gzip-compressed word2vec text file"),
    (lambda p: p.write_bytes(pickle.dumps(_Boom(), protocol=4)), "this is a Python pickle"),
    (lambda p: write_json(p, {"weight_map": {"a": "../x.safetensors"}}), "not a file next to the index"),
    (lambda p: write_json(p, {"shards": []}), "this is a JSON file"),
])
def test_not_a_table_says_what_the_file_is(tmp_path, monkeypatch, command, make, what):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "input.json"
    make(p)
    args = [a.format(p=p) for a in command] if len(command) > 1 else [command[0], p]
    r = invoke(*args)
    assert_single_error_line(r, str(p), what)
    assert not (tmp_path / "unpickled-marker").exists()


@pytest.mark.parametrize("name", ["vectors.kv", "model.model", "model.model.gz"])
def test_gensim_pickles_are_refused_with_the_conversion_hint(tmp_path, monkeypatch, name):
    """gensim's .kv / .model pickles, also gzipped as gensim saves them when asked (``.gz``)."""
    import gzip

    monkeypatch.chdir(tmp_path)
    p = tmp_path / name
    data = pickle.dumps(_Boom(), protocol=4)
    p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert sniff(p).name == ("gzip" if name.endswith(".gz") else "pickle")
    for args in (["load-pretrained", p, "t.safetensors"], ["info", p]):
        r = invoke(*args)
        assert_single_error_line(r, str(p), "gensim native model", "save_word2vec_format", "never unpickles")
    assert not (tmp_path / "unpickled-marker").exists() and not (tmp_path / "t.safetensors").exists()


def test_sniff_tells_an_hf_index_from_other_index_files(tmp_path):
    hf = write_json(tmp_path / "model.safetensors.index.json", {"metadata": {}, "weight_map": {"w": "a.safetensors"}})
    other = write_json(tmp_path / "table.index.json", {"format_version": "1", "shards": []})
    assert sniff(hf).name == "hf-index" and sniff(other).name == "json"
    assert sniff(write_json(tmp_path / "tokenizer.json", tokenizer_json("BPE", TOKENS))).name == "tokenizer"
    assert sniff(tmp_path).name == "folder"


def test_sample_static_model_folder_in_one_command(tmp_path):
    """sample_data/static-model: the README's tour loads it with its tokenizer in one command."""
    import gzip
    from pathlib import Path

    samples = Path(__file__).parent.parent / "sample_data"
    with gzip.open(samples / "glove.6B.50d.10k.txt.gz", "rt", encoding="utf-8") as f:
        lines = [f.readline().split(" ") for _ in range(1000)]
    out = tmp_path / "static.safetensors"
    r = invoke("load-pretrained", samples / "static-model", out)
    assert r.code == 0, r.err
    assert "tensor 'embedding.weight'" in r.err and "1002 rows named" in r.err
    with Table.open(out) as t:
        assert t.vocab.head(1002) == ["[PAD]", "[UNK]"] + [ln[0] for ln in lines]
        want = np.array([ln[1:] for ln in lines], np.float32).astype(np.float16).astype(np.float32)
        assert np.array_equal(t.weight()[2:], want)
