"""Words are words: the special tokens of BERT, RoBERTa and Llama vocabularies and GloVe's
punctuation entries, through every way of giving words (arguments, after '--', stdin, a JSON list,
--words-file), for lookup and similar; JSON only when the text is a JSON list of strings."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import assert_single_error_line, invoke

BERT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused98]", "##s", "##ing"]
ROBERTA = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "Ġthe", "Ċ", "âĢĻ"]
LLAMA = ["<unk>", "<s>", "</s>", "▁the", "<0x0A>", "<|begin_of_text|>", "<|end_of_text|>",
         "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|reserved_special_token_0|>"]
# every entry of sample_data/glove.6B.50d.10k.txt.gz that does not begin with a letter or digit,
# and the Penn Treebank bracket tokens of the full GloVe 6B vocabulary
GLOVE = [",", ".", '"', "'s", "-", "(", ")", "''", "``", ":", "'", "--", "$", ";", "_", "?", "–", "%",
         "'re", "/", "...", "'ve", "'m", "&amp;", "'ll", "’s", "!", "`", "'d", "&", "=", "—", "“", "”",
         "#", ".....", "[", "------", "’", "+", "¥", "___", "‘", "£", "|", "]", "~", "__", "....",
         "\\", ",000", "{", "-0", "-lrb-", "-rrb-", "-lsb-", "-rsb-", "-lcb-", "-rcb-", "[1]", "null"]
TOKENS = list(dict.fromkeys(BERT + ROBERTA + LLAMA + GLOVE + ["king", "queen", "new york"]))
PLAIN = [w for w in TOKENS if not w.startswith("-") and " " not in w]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    from embtool.config import Config
    from embtool.table import create
    from embtool.vocab import encode_vocab

    rng = np.random.default_rng(3)
    weight = rng.standard_normal((len(TOKENS), 4)).astype(np.float32)
    path = tmp_path_factory.mktemp("words") / "tokens.safetensors"
    create(path, {"weight": weight, **encode_vocab(TOKENS)}, Config())
    return path


def records(r):
    assert r.code == 0, r.err
    return [json.loads(line) for line in r.out.splitlines()]


def test_every_token_as_arguments_after_double_dash(table):
    got = records(invoke("lookup", table, "-f", "jsonl", "-w", "--", *TOKENS))
    assert [g["word"] for g in got] == TOKENS and [g["id"] for g in got] == list(range(len(TOKENS)))


def test_every_token_alone_as_the_one_argument(table):
    """One argument is where JSON is detected: each token on its own is still a word."""
    for row, word in enumerate(TOKENS):
        dash = ["--"] if word.startswith("-") else []
        got = records(invoke("lookup", table, "-f", "jsonl", "-w", *dash, word))
        assert [(g["id"], g["word"]) for g in got] == [(row, word)], word


def test_tokens_without_double_dash_and_on_stdin(table):
    got = records(invoke("lookup", table, "-w", *PLAIN, "-f", "jsonl"))
    assert [g["word"] for g in got] == PLAIN
    got = records(invoke("lookup", table, "-w", "-f", "jsonl", input=" ".join(PLAIN) + "\n"))
    assert [g["word"] for g in got] == PLAIN
    for word in [w for w in PLAIN if w.startswith(("[", "{", "null"))]:  # one token, all of stdin
        assert [g["word"] for g in records(invoke("lookup", table, "-w", "-f", "jsonl", input=word + "\n"))] == [word]


def test_json_lists_and_words_file(table, tmp_path):
    got = records(invoke("lookup", table, "-w", json.dumps(TOKENS), "-f", "jsonl"))
    assert [g["word"] for g in got] == TOKENS
    got = records(invoke("lookup", table, "-w", "--json-input", "-f", "jsonl", input=json.dumps(TOKENS)))
    assert [g["word"] for g in got] == TOKENS
    nested = invoke("lookup", table, "-w", json.dumps([TOKENS[:2], TOKENS[2:4]]))
    assert np.array(json.loads(nested.out)).shape == (2, 2, 4)  # a nested list keeps its shape
    (tmp_path / "words.txt").write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    got = records(invoke("lookup", table, "--words-file", tmp_path / "words.txt", "-f", "jsonl"))
    assert [g["word"] for g in got] == TOKENS


def test_similar_takes_every_token(table):
    for word in TOKENS:
        dash = ["--"] if word.startswith("-") else []
        r = invoke("similar", table, "-k", 2, *dash, word)
        got = json.loads(r.out)
        assert r.code == 0 and len(got) == 2 and word not in [g["word"] for g in got], (word, r.err)


@pytest.mark.parametrize("args,code,needles", [
    (["-w", "-lrb-"], 2, ["No such option: -lrb-", "goes after '--'", "-- -lrb-"]),
    (["-w", "king", "-"], 2, ["'-' is not read as stdin", "-- -"]),
    (["-w", "king", "--fromat", "tsv"], 2, ["No such option: --fromat"]),
    (["-w", '["king", 1]'], 1, ["word '[\"king\", 1]' is not in the vocabulary"]),
    (["-w", "--json-input", '["king", 1]'], 1, ["argument: words must be a nested list of strings"]),
    (["-w", "--json-input", "king"], 1, ["argument: not a JSON list of words"]),
    (["-w", "--json-input", '["king"'], 1, ["argument: invalid JSON"]),
    (["-w", '[["king"], ["queen", "king"]]'], 1, ["rectangular"]),
    (["--json-input", "1"], 2, ["--json-input applies to --words"]),
])
def test_words_errors(table, args, code, needles):
    r = invoke("lookup", table, *args)
    assert r.code == code and "Traceback" not in r.err, r.err
    if code == 1:
        assert_single_error_line(r, *needles)
    else:
        assert all(n in r.err for n in needles), r.err


def test_similar_unknown_option_is_a_usage_error(table):
    r = invoke("similar", table, "-i", "words.txt")
    assert r.code == 2 and "No such option: -i" in r.err


def test_glove_dashes_and_bert_brackets_as_in_the_shell(table):
    """`lookup glove -f tsv -w -- --` and `echo "[CLS] [SEP]" | lookup mini -w`."""
    r = invoke("lookup", table, "-f", "tsv", "-w", "--", "--")
    lines = r.out.splitlines()
    assert r.code == 0 and lines[0].split("\t")[:2] == ["id", "word"]
    assert lines[1].split("\t")[:2] == [str(TOKENS.index("--")), "--"]
    r = invoke("lookup", table, "-w", "-f", "jsonl", input="[CLS] [SEP]\n")
    assert [g["word"] for g in records(r)] == ["[CLS]", "[SEP]"]
