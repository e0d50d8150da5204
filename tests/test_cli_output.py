"""One set of output options for every command (-f/--format, --json, -o, --force, --strict-json,
--full), in-process: formats of lookup, similar, info, renorm, train-step and evaluate; tables
that fit the terminal; JSON that never shortens a list; every --help ending with examples;
--tensor completion."""
from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from embtool.table import Table

from helpers import assert_single_error_line, invoke, make_table

SAMPLES = Path(__file__).parent.parent / "sample_data"


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """A small table with words (sample_data/small.glove.txt)."""
    p = tmp_path_factory.mktemp("words") / "w.safetensors"
    assert invoke("load-pretrained", SAMPLES / "small.glove.txt", p).code == 0
    with Table.open(p) as t:
        return p, np.array(t.weight()), list(t.vocab)


def ok(*args, **kw):
    r = invoke(*args, **kw)
    assert r.code == 0, r.err
    return r


# -- lookup --------------------------------------------------------------------------------

def test_word_lookup_rows_carry_their_word(words):
    p, w, vocab = words
    ids = [vocab.index("of"), vocab.index("the")]
    got = json.loads(ok("lookup", p, "-w", "of", "the").out)
    assert [(g["id"], g["word"]) for g in got] == [(ids[0], "of"), (ids[1], "the")]
    assert np.array_equal(np.array([g["vector"] for g in got], np.float32), w[ids])  # exact text
    lines = ok("lookup", p, "-w", "of", "the", "-f", "jsonl").out.splitlines()
    assert [json.loads(x)["word"] for x in lines] == ["of", "the"]
    rows = ok("lookup", p, "-w", "of", "the", "-f", "csv").out.splitlines()
    assert rows[0].startswith("id,word,v0,") and rows[1].startswith(f"{ids[0]},of,")
    assert np.array_equal(np.array(rows[2].split(",")[2:], np.float32), w[ids[1]])
    # ids keep SPEC's nested lists; a nested list of words keeps its shape
    assert np.array(json.loads(ok("lookup", p, "1", "2").out)).shape == (2, 10)
    assert np.array(json.loads(ok("lookup", p, "-w", '[["of"], ["the"]]').out)).shape == (2, 1, 10)


def test_unknown_skip_names_the_skipped_words(words):
    p, _, vocab = words
    r = ok("lookup", p, "-w", "the", "xyzzy", "of", "qwerty", "--unknown", "skip", "-f", "jsonl")
    assert [json.loads(x)["word"] for x in r.out.splitlines()] == ["the", "of"]
    assert r.err.strip() == "skipped 2 unknown words: 'xyzzy', 'qwerty'"
    r = invoke("lookup", p, "-w", "teh")
    assert_single_error_line(r, "word 'teh' is not in the vocabulary", "did you mean 'the'")


def test_formats_files_and_alias(words, tmp_path):
    p, w, _ = words
    assert ok("lookup", p, "3", "--json").out == ok("lookup", p, "3", "-f", "json").out
    r = invoke("lookup", p, "3", "--json", "-f", "csv")
    assert r.code == 2 and "--json is the same as -f json" in r.err
    got = np.load(io.BytesIO(ok("lookup", p, "3", "4", "-f", "npy").stdout_bytes))
    assert np.array_equal(got, w[[3, 4]])
    out = tmp_path / "rows.tsv"
    ok("lookup", p, "3", "-f", "tsv", "-o", out)
    assert out.read_text().splitlines()[1].split("\t")[0] == "3"
    assert_single_error_line(invoke("lookup", p, "3", "-o", out), "already exists", "--force")
    ok("lookup", p, "4", "-o", out, "--force")
    assert np.array_equal(np.array(json.loads(out.read_text()), np.float32), w[[4]])
    assert invoke("lookup", p, "3", "-f", "text").code == 2  # not a format of lookup


def test_strict_json_writes_null(tmp_path):
    w = np.array([[np.nan, np.inf, -np.inf, 1.5], [0, 0, 0, 0], [1, 0, 0, 0]], np.float32)
    p = make_table(tmp_path / "n.safetensors", w)
    assert ok("lookup", p, "0").out.strip() == "[[NaN,Infinity,-Infinity,1.5]]"
    assert ok("lookup", p, "0", "--strict-json").out.strip() == "[[null,null,null,1.5]]"
    assert ok("lookup", p, "0", "-f", "jsonl", "--strict-json").out.strip() == "[null,null,null,1.5]"
    scores = ok("similar", p, "2", "-k", 2, "--strict-json").out
    assert "NaN" not in scores and json.loads(scores)[-1]["score"] is None  # the zero row: no score
    assert "NaN" in ok("similar", p, "2", "-k", 2).out


# -- tables at any width -----------------------------------------------------------------------

@pytest.mark.parametrize("dim", [4, 16, 50, 300])
@pytest.mark.parametrize("columns", [40, 80, 132])
def test_table_fits_the_terminal(tmp_path, dim, columns):
    rng = np.random.default_rng(dim)
    w = rng.standard_normal((3, dim)).astype(np.float32)
    p = make_table(tmp_path / "t.safetensors", w)
    out = ok("lookup", p, "0", "1", "2", "-f", "table", env={"COLUMNS": str(columns)}).out
    lines = out.splitlines()
    assert max(map(len, lines)) <= columns
    header = lines[1]
    assert "v0" in header and f"v{dim - 1}" in header
    shown = re.findall(r"v(\d+)", header)
    assert ("…" in header) == (len(shown) < dim)
    first = re.findall(r"-?\d+\.\d{4}\b", lines[3])  # four decimals
    assert first and float(first[0]) == pytest.approx(w[0, 0], abs=5e-5)
    full = ok("lookup", p, "0", "1", "2", "-f", "table", "--full", env={"COLUMNS": str(columns)}).out
    assert len(re.findall(r"v(\d+)", full.splitlines()[1])) == dim and "…" not in full.splitlines()[1]


def test_table_scientific_for_tiny_values_and_words(words, tmp_path):
    p = make_table(tmp_path / "t.safetensors", np.full((1, 3), 2.5e-6, np.float32))
    assert "2.500e-06" in ok("lookup", p, "0", "-f", "table").out
    table = ok("lookup", words[0], "-w", "the", "of", "-f", "table", env={"COLUMNS": "60"}).out
    assert "word" in table and "the" in table and max(map(len, table.splitlines())) <= 60
    out = tmp_path / "t.txt"
    ok("lookup", words[0], "1", "-f", "table", "-o", out)
    assert "v0" in out.read_text()


# -- reports and descriptions ------------------------------------------------------------------

def test_info_formats_and_optimizer_line(tmp_path):
    p = make_table(tmp_path / "t.safetensors", np.ones((5, 3), np.float32))
    np.save(tmp_path / "g.npy", np.ones((2, 3), np.float32))
    ok("train-step", p, "-i", "-", "--grad", tmp_path / "g.npy", "--optimizer", "adam", "--lr", "0.01",
       input="[1, 2]")
    text = ok("info", p).out
    line = next(x for x in text.splitlines() if x.startswith("optimizer"))
    assert line.startswith("optimizer  adam, step 1: ") and "lr=0.01" in line and "betas=(0.9, 0.999)" in line
    assert "{" not in text and "'lr'" not in text  # no Python dict repr
    facts = json.loads(ok("info", p, "-f", "json").out)
    assert facts == json.loads(ok("info", p, "--json").out)
    assert facts["table"]["optimizer"]["step"] == 1
    line = ok("info", p, "-f", "jsonl").out
    assert line.count("\n") == 1 and json.loads(line) == facts
    assert invoke("info", p, "--json", "-f", "text").code == 2


def test_renorm_report_lists_every_changed_id(tmp_path):
    w = (np.random.default_rng(1).standard_normal((300, 8)) * 3).astype(np.float32)
    p = make_table(tmp_path / "r.safetensors", w)
    r = ok("renorm", p, "--max-norm", "0.5", "--dry-run")
    assert r.out == "" and "would change 300 of 300" in r.err
    report = json.loads(ok("renorm", p, "--max-norm", "0.5", "--dry-run", "-f", "json").out)
    assert report["rows_changed"] == 300 and report["changed_ids"] == list(range(300))
    assert json.loads(ok("renorm", p, "--max-norm", "0.5", "--dry-run", "-f", "jsonl").out) == report
    ok("renorm", p, "--max-norm", "0.5", "--dry-run", "-o", tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text()) == report
    r = invoke("renorm", p, "--max-norm", "0.5", "1", "-i", tmp_path / "report.json")
    assert r.code == 2 and "not both" in r.err


def test_train_step_formats(tmp_path):
    p = make_table(tmp_path / "t.safetensors", np.ones((5, 3), np.float32))
    np.save(tmp_path / "g.npy", np.ones((2, 3), np.float32))
    line = ok("train-step", p, "-i", "-", "--grad", tmp_path / "g.npy", "-f", "jsonl", input="[1, 2]").out
    assert line.count("\n") == 1 and json.loads(line)["step"] == 1
    assert json.loads(ok("train-step", p, "-i", "-", "--grad", tmp_path / "g.npy", "--json",
                         input="[1, 2]").out)["step"] == 2


def test_evaluate_formats(words):
    p = words[0]
    pairs = SAMPLES / "wordsim353.tsv"
    full = json.loads(ok("evaluate", p, "--pairs", pairs).out)
    assert json.loads(ok("evaluate", p, "--pairs", pairs, "-f", "jsonl").out) == full
    rows = ok("evaluate", p, "--pairs", pairs, "-f", "csv").out.splitlines()
    assert rows[0] == "section,pearson,spearman,oov_ratio" and rows[1].startswith("pairs,")
    assert "spearman" in ok("evaluate", p, "--pairs", pairs, "-f", "table").out


# -- help, completion, option choices ----------------------------------------------------------

def test_every_command_ends_its_help_with_examples():
    from embtool.cli import cli

    for name, command in cli.commands.items():
        text = ok(name, "--help").out
        assert "Examples:" in text, name
        lines = [x.strip() for x in text.split("Examples:")[-1].strip().splitlines()]
        assert 2 <= len(lines) <= 4, (name, lines)
        for line in lines:
            calls = [shlex.split(c) for c in re.split(r"\s*(?:\||&&|>>)\s*", line)]
            own = [c[2:] for c in calls if c[:2] == ["embtool", name]]
            assert own, (name, line)  # every example runs this command ...
            for args in own:  # ... with options it has, in an order click accepts
                command.make_context(name, list(args))


def test_tensor_names_complete_from_the_file(tmp_path):
    from click.shell_completion import ShellComplete
    from safetensors.numpy import save_file

    from embtool.cli import cli

    p = tmp_path / "model.safetensors"
    save_file({"model.embed_tokens.weight": np.zeros((4, 2), np.float32),
               "lm_head.weight": np.zeros((4, 2), np.float32)}, str(p))
    complete = ShellComplete(cli, {}, "embtool", "_EMBTOOL_COMPLETE")
    for command in ("info", "lookup", "similar", "export", "freeze", "train-step"):
        got = [c.value for c in complete.get_completions([command, str(p), "--tensor"], "")]
        assert got == ["lm_head.weight", "model.embed_tokens.weight"], command
    got = [c.value for c in complete.get_completions(["load-pretrained", str(p), "o.safetensors", "--tensor"], "mod")]
    assert got == ["model.embed_tokens.weight"]
    assert complete.get_completions(["info", str(tmp_path / "nope"), "--tensor"], "") == []


def test_cli_choices_are_the_librarys():
    from embtool.cli import pretrained as cli_pretrained
    from embtool.formats.loaded import DUPLICATE_POLICIES, UNICODE_ERRORS
    from embtool.formats.write import WRITE_FORMATS
    from embtool.pretrained import SOURCE_FORMATS

    assert cli_pretrained.LOAD_FORMATS == SOURCE_FORMATS
    assert cli_pretrained.EXPORT_FORMATS == WRITE_FORMATS
    assert cli_pretrained.UNICODE_ERRORS == UNICODE_ERRORS
    assert cli_pretrained.DUPLICATE_POLICIES == DUPLICATE_POLICIES
