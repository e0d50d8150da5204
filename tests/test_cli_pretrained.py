"""load-pretrained / export / lookup --words through the command line (in-process), on the sample
files and on generated ones, against gensim when it is importable."""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest

from embtool.table import Table

from helpers import assert_single_error_line, invoke

SAMPLES = Path(__file__).parent.parent / "sample_data"


def table_state(path):
    with Table.open(path) as t:
        return np.array(t.weight()), (list(t.vocab) if t.vocab is not None else None), dict(t.config.__dict__)


@pytest.mark.parametrize("name,fmt,rows,dim", [
    ("small.glove.txt", "glove", 200, 10), ("small.w2v.txt", "word2vec", 200, 10),
    ("small.vec", "word2vec", 100, 10), ("small.w2v.bin", "word2vec-binary", 200, 10),
    ("glove.6B.50d.10k.txt.gz", "glove", 10_000, 50),
])
def test_load_samples_like_gensim(tmp_path, gensim, name, fmt, rows, dim):
    from gensim.models import KeyedVectors

    out = tmp_path / "t.safetensors"
    r = invoke("load-pretrained", SAMPLES / name, out)
    assert r.code == 0, r.err
    assert f"loaded {rows} x {dim}" in r.err and f"({fmt}" in r.err
    w, words, cfg = table_state(out)
    kv = KeyedVectors.load_word2vec_format(str(SAMPLES / name), binary=fmt == "word2vec-binary",
                                           no_header=fmt == "glove")
    assert words == kv.index_to_key
    assert np.array_equal(w.view(np.uint32), kv.vectors.view(np.uint32))  # bit-identical
    assert cfg["frozen"] is True  # from_pretrained's default


def test_npy_with_vocab_and_model_tensor(tmp_path):
    out = tmp_path / "t.safetensors"
    r = invoke("load-pretrained", SAMPLES / "small.npy", out, "--vocab", SAMPLES / "small.vocab.txt", "--no-freeze")
    assert r.code == 0, r.err
    w, words, cfg = table_state(out)
    assert np.array_equal(w, np.load(SAMPLES / "small.npy")) and words[:3] == ["the", ",", "."]
    assert cfg["frozen"] is False
    r = invoke("load-pretrained", SAMPLES / "small-model.safetensors", out, "--force",
            "--tensor", "model.embed_tokens.weight", "--vocab", SAMPLES / "small.vocab.txt")
    assert r.code == 0, r.err
    from safetensors import safe_open

    with safe_open(SAMPLES / "small-model.safetensors", "numpy") as f:
        pass  # numpy cannot read BF16: compare through the widened bits instead
    w2, words2, _ = table_state(out)
    assert w2.shape == (200, 16) and words2 == words
    # bf16 -> f32 widening is exact: the low 16 bits of every value are zero
    assert not (w2.view(np.uint32) & 0xFFFF).any()


def test_quirks_file(tmp_path):
    out = tmp_path / "q.safetensors"
    r = invoke("load-pretrained", SAMPLES / "quirks.txt", out)
    assert r.code == 0, r.err
    assert "skipped 1 duplicate rows (kept first), 1 blank lines" in r.err
    assert "repaired BOM, 2 CRLF, 1 trailing spaces, 1 words with spaces" in r.err
    w, words, _ = table_state(out)
    assert words == ["the", "of", ". . .", "new\u00a0york", "and"]
    r = invoke("load-pretrained", SAMPLES / "quirks.txt", out, "--force", "--on-duplicate", "last")
    w_last, _, _ = table_state(out)
    assert not np.array_equal(w_last[1], w[1])
    before = out.read_bytes()
    r = invoke("load-pretrained", SAMPLES / "quirks.txt", out, "--force", "--on-duplicate", "error")
    assert_single_error_line(r, "duplicate", "'of'")
    assert out.read_bytes() == before


def test_stdin_and_limit_and_dtype(tmp_path):
    out = tmp_path / "t.safetensors"
    data = (SAMPLES / "small.glove.txt").read_bytes()
    r = invoke("load-pretrained", "-", out, "--limit", 7, "--dtype", "float16", input=data)
    assert r.code == 0, r.err
    with Table.open(out) as t:
        assert t.shape == (7, 10) and t.dtype == "F16"


def test_padding_and_unk_tokens(tmp_path):
    out = tmp_path / "t.safetensors"
    r = invoke("load-pretrained", SAMPLES / "small.glove.txt", out, "--padding-token", "<pad>",
            "--unk-token", "the")
    assert r.code == 0, r.err
    w, words, cfg = table_state(out)
    assert words[-1] == "<pad>" and cfg["padding_idx"] == 200 and not w[200].any()
    r = invoke("lookup", out, "-w", "of", "zzzz", "--unknown", "unk", "-f", "npy")
    got = np.load(io.BytesIO(r.stdout_bytes))
    assert np.array_equal(got, w[[words.index("of"), 0]])
    r = invoke("lookup", out, "-w", "of", "zzzz", "--unknown", "skip")
    assert len(json.loads(r.out)) == 1
    assert_single_error_line(invoke("lookup", out, "-w", "of", "zzzz"), "'zzzz' is not in the vocabulary")


def test_lookup_words_shapes_and_sources(tmp_path):
    out = tmp_path / "t.safetensors"
    invoke("load-pretrained", SAMPLES / "small.glove.txt", out)
    w, words, _ = table_state(out)
    r = invoke("lookup", out, "--words", '[["the", "of"], ["and", "the"]]', "-f", "npy")
    ids = [[words.index(x) for x in row] for row in [["the", "of"], ["and", "the"]]]
    assert np.array_equal(np.load(io.BytesIO(r.stdout_bytes)), w[np.array(ids)])
    r = invoke("lookup", out, "--words", "-f", "csv", input="the of\n")
    assert r.out.splitlines()[1].startswith("0,the,")
    (tmp_path / "words.txt").write_text("of\nthe\n")
    r = invoke("lookup", out, "--words-file", tmp_path / "words.txt", "-f", "npy")
    assert np.array_equal(np.load(io.BytesIO(r.stdout_bytes)), w[[words.index("of"), 0]])
    no_vocab = tmp_path / "nv.safetensors"
    invoke("init", no_vocab, "-n", 3, "-d", 2)
    assert_single_error_line(invoke("lookup", no_vocab, "-w", "the"), "no vocabulary")


@pytest.mark.parametrize("fmt,suffix", [("glove", ".txt"), ("word2vec", ".vec"),
                                        ("word2vec-binary", ".bin"), ("npy", ".npy")])
def test_export_round_trip_is_bit_identical(tmp_path, fmt, suffix):
    t1 = tmp_path / "t1.safetensors"
    invoke("load-pretrained", SAMPLES / "glove.6B.50d.10k.txt.gz", t1, "--limit", 2000)
    out = tmp_path / f"out{suffix}"
    r = invoke("export", t1, out)
    assert r.code == 0 and f"as {fmt}" in r.err, r.err
    t2 = tmp_path / "t2.safetensors"
    extra = ["--vocab", tmp_path / "out.vocab.txt"] if fmt == "npy" else []
    assert invoke("load-pretrained", out, t2, *extra).code == 0
    a, b = table_state(t1), table_state(t2)
    assert np.array_equal(a[0].view(np.uint32), b[0].view(np.uint32)) and a[1] == b[1]


def test_export_compressed_and_errors(tmp_path):
    t1 = tmp_path / "t1.safetensors"
    invoke("load-pretrained", SAMPLES / "quirks.txt", t1)
    r = invoke("export", t1, tmp_path / "q.vec")
    assert_single_error_line(r, "row 2", "contains a space")
    assert not (tmp_path / "q.vec").exists()
    t2 = tmp_path / "t2.safetensors"
    invoke("load-pretrained", SAMPLES / "small.glove.txt", t2)
    gz = tmp_path / "s.txt.gz"
    assert invoke("export", t2, gz).code == 0
    assert gzip.decompress(gz.read_bytes()).splitlines()[0].startswith(b"the ")
    assert_single_error_line(invoke("export", t2, gz), "already exists")
    assert_single_error_line(invoke("export", t2, tmp_path / "x.dat"), "give --format")


def test_load_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2 3\nb 1 2\nc 1 2 3\n")
    out = tmp_path / "t.safetensors"
    r = invoke("load-pretrained", bad, out)
    assert_single_error_line(r, "bad.txt", "line 2")
    assert not out.exists()
    bad.write_text("a 1 2 3\nb 1 x 3\n")
    assert_single_error_line(invoke("load-pretrained", bad, out), "bad.txt", "line 2")
    bad.write_text("a 1 nan 3\n")
    assert_single_error_line(invoke("load-pretrained", bad, out), "line 1")
    assert invoke("load-pretrained", bad, out, "--allow-nonfinite").code == 0
    fasttext_bin = tmp_path / "model.bin"
    fasttext_bin.write_bytes(bytes.fromhex("ba164f2f") + b"\x0c\x00\x00\x00" + b"\0" * 64)
    assert_single_error_line(invoke("load-pretrained", fasttext_bin, tmp_path / "f.safetensors"), "fastText")
    (tmp_path / "v.txt").write_text("".join(f"w{i}\n" for i in range(201)))
    r = invoke("load-pretrained", SAMPLES / "small.npy", tmp_path / "n.safetensors", "--vocab", tmp_path / "v.txt")
    assert_single_error_line(r, "v.txt, line 201: token 'w200' names row 200, past the tensor's 200 rows")
    existing = tmp_path / "e.safetensors"
    invoke("init", existing, "-n", 2, "-d", 2)
    before = existing.read_bytes()
    assert_single_error_line(invoke("load-pretrained", SAMPLES / "small.glove.txt", existing), "already exists")
    assert existing.read_bytes() == before


def test_info_shows_vocab(tmp_path):
    out = tmp_path / "t.safetensors"
    invoke("load-pretrained", SAMPLES / "small.glove.txt", out)
    facts = json.loads(invoke("info", out, "--json").out)
    assert facts["table"]["vocab"]["size"] == 200 and facts["table"]["vocab"]["sample"][:2] == ["the", ","]
    assert "200 words: the , ." in invoke("info", out).out
    stats = invoke("info", out, "--stats")  # the neighbour sample is named by words
    assert stats.code == 0 and "row 0 the: " in stats.out
    facts = json.loads(invoke("info", out, "--stats", "--json").out)
    assert facts["stats"]["neighbours"][0]["word"] == "the"
