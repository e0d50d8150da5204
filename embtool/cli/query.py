"""similar and evaluate: querying a table."""
from __future__ import annotations

import click

from . import cli
from .common import ArgsCommand, examples, free_args, output_options, progress, scheduler_option, tensor_option

#: evaluate's ``--unknown`` choices: evaluate.UNKNOWN_POLICIES, which imports numpy (a test keeps
#: them equal)
EVALUATE_UNKNOWN = ("skip", "subword", "error")


@cli.command(cls=ArgsCommand, epilog=examples(
    "embtool similar glove.safetensors king -k 5",
    "embtool similar glove.safetensors king woman -n man -f table",
    "embtool similar emb.safetensors --ids 42 -f csv",
    "embtool similar glove.safetensors -k 3 -- -lrb-",
))
@click.argument("table", type=click.Path())
@click.argument("query", nargs=-1)
@click.option("-k", "--topn", "k", type=int, default=10, show_default=True, help="How many neighbours.")
@click.option("-n", "--negative", multiple=True, metavar="QUERY",
              help="Subtract this word/row (analogies: king -n man woman). Repeatable.")
@click.option("--ids", "as_ids", is_flag=True, help="QUERY items are row numbers even if the table has words.")
@click.option("--vector", "vectors", multiple=True, metavar="JSON|FILE",
              help="A raw query vector: a JSON list, or a file (.npy, .safetensors or JSON); used "
                   "unnormalised as gensim. Repeatable.")
@click.option("--restrict-vocab", type=click.IntRange(min=0), metavar="N",
              help="Search only the first N rows (gensim's restrict_vocab).")
@click.option("--unknown", type=click.Choice(["error", "subword"]),
              help="A word not in the vocabulary: an error, or its fastText subword vector. "
                   "Default: subword for tables with n-grams, else error.")
@tensor_option
@output_options(("json", "jsonl", "csv", "tsv", "table"))
@scheduler_option
def similar(table, query, k, negative, as_ids, vectors, restrict_vocab, unknown, tensor, out):
    """Top-k cosine neighbours of words, row numbers or vectors (gensim most_similar: unit vectors,
    weighted mean, input rows excluded). Words that begin with '-' go after '--'."""
    from ..inputs import read_option_array
    from ..pretrained import query_items
    from ..render import render_rows
    from ..sharded import open_table
    from ..similar import most_similar

    query = free_args(query)
    if not query and not negative and not vectors:
        raise click.UsageError("give at least one QUERY, --negative or --vector")
    raw = [_vector(read_option_array(v, "vector")) for v in vectors]
    with open_table(table, tensor=tensor) as t:
        positive = query_items(t, query, unknown=unknown, as_ids=as_ids) + raw
        negative = query_items(t, negative, unknown=unknown, as_ids=as_ids)
        results = most_similar(t.weight(), t.vocab, positive, negative, topn=k,
                               restrict_vocab=restrict_vocab, norms=t.norms)
        rows = [int(r) for r, _ in results]
        columns = {"id": rows}
        if t.vocab is not None:
            columns["word"] = t.vocab.words(rows)
        columns["score"] = [float(s) for _, s in results]
    render_rows(columns, out)


def _vector(arr):
    return arr.reshape(-1) if arr.ndim == 2 and arr.shape[0] == 1 else arr


@cli.command(epilog=examples(
    "embtool evaluate glove.safetensors --analogies questions-words.txt",
    "embtool evaluate glove.safetensors --pairs wordsim353.tsv -f table",
    "embtool evaluate glove.safetensors --analogies questions-words.txt --restrict-vocab 30000 -f jsonl",
))
@click.argument("table", type=click.Path())
@click.option("--analogies", metavar="FILE", help="questions-words file (': section' lines, then 4 words).")
@click.option("--pairs", metavar="FILE", help="Word pairs with a gold score (word1 TAB word2 TAB score).")
@click.option("--restrict-vocab", type=click.IntRange(min=0), default=300000, show_default=True,
              help="Only the first N rows count as known (gensim's default).")
@click.option("--case-sensitive", is_flag=True, help="Do not upper-case words and questions (gensim folds case).")
@click.option("--dummy4unknown", is_flag=True,
              help="Count questions with unknown words as incorrect / pairs as similarity 0 (gensim's option).")
@click.option("--unknown", type=click.Choice(EVALUATE_UNKNOWN),
              help="A word outside the first --restrict-vocab words: its question or pair is skipped "
                   "(gensim's rule), it gets its fastText vector (its own row past --restrict-vocab, "
                   "else its subword vector; a question whose expected answer is unknown is still "
                   "skipped), or it is an error. Default: subword for tables with n-grams, else skip.")
@click.option("--delimiter", default="\t", show_default=repr("\t"), help="Field separator of --pairs.")
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of --pairs.")
@tensor_option
@output_options(("json", "jsonl", "csv", "tsv", "table"))
@scheduler_option
def evaluate(table, analogies, pairs, restrict_vocab, case_sensitive, dummy4unknown, unknown,
             delimiter, encoding, tensor, out):
    """Score the table on word analogies (3CosAdd accuracy) and/or word-pair similarity
    (Pearson, Spearman), with gensim's rules."""
    import os

    from ..errors import ConfigError
    from ..evaluate import evaluate_analogies, evaluate_pairs
    from ..pretrained import evaluation_unknown
    from ..render import render_object
    from ..sharded import open_table

    if not analogies and not pairs:
        raise click.UsageError("give --analogies FILE and/or --pairs FILE")
    result = {}
    with open_table(table, tensor=tensor) as t:
        if t.vocab is None:
            raise ConfigError(f"{table}: evaluation needs a table with a vocabulary")
        policy, subwords = evaluation_unknown(t, unknown)
        if analogies:
            size = os.path.getsize(analogies) if os.path.isfile(analogies) else None
            with progress(size, "analogies", unit="bytes") as advance:
                result["analogies"] = evaluate_analogies(
                    t.weight(), t.vocab, analogies, restrict_vocab=restrict_vocab,
                    case_insensitive=not case_sensitive, dummy4unknown=dummy4unknown, norms=t.norms,
                    progress=advance, unknown=policy, subwords=subwords)
        if pairs:
            result["pairs"] = evaluate_pairs(t.weight(), t.vocab, pairs, delimiter=delimiter,
                                             encoding=encoding, restrict_vocab=restrict_vocab,
                                             case_insensitive=not case_sensitive,
                                             dummy4unknown=dummy4unknown, unknown=policy,
                                             subwords=subwords)
    render_object(result if len(result) > 1 else next(iter(result.values())), out,
                  rows=lambda _: _score_rows(result))


def _score_rows(result: dict) -> dict:
    """One row per analogy section, and one for the word pairs (csv, tsv, table)."""
    rows = {"section": [], "correct": [], "incorrect": [], "accuracy": [], "pearson": [], "spearman": [],
            "oov_ratio": []}

    def add(**values):
        for key, column in rows.items():
            column.append(values.get(key, ""))

    for s in result.get("analogies", {}).get("sections", []):
        add(section=s["section"], correct=s["correct"], incorrect=s["incorrect"], accuracy=s["accuracy"])
    if "pairs" in result:
        p = result["pairs"]
        add(section="pairs", pearson=p["pearson"], spearman=p["spearman"], oov_ratio=p["oov_ratio"])
    if "pairs" not in result:
        for key in ("pearson", "spearman", "oov_ratio"):
            del rows[key]
    if "analogies" not in result:
        for key in ("correct", "incorrect", "accuracy"):
            del rows[key]
    return rows
