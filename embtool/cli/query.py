"""similar and evaluate: querying a table."""
from __future__ import annotations

import click

from . import cli
from .common import output_options, progress, scheduler_option, tensor_option


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("table", type=click.Path())
@click.argument("query", nargs=-1)
@click.option("-k", "--topn", "k", type=int, default=10, show_default=True, help="How many neighbours.")
@click.option("-n", "--negative", multiple=True, metavar="QUERY",
              help="Subtract this word/row (analogies: king -n man woman). Repeatable.")
@click.option("--ids", "as_ids", is_flag=True, help="QUERY items are row numbers even if the table has words.")
@click.option("--vector", "vectors", multiple=True, metavar="FILE",
              help="A raw query vector (.npy, .safetensors or JSON), used unnormalised as gensim. Repeatable.")
@click.option("--restrict-vocab", type=click.IntRange(min=0), metavar="N",
              help="Search only the first N rows (gensim's restrict_vocab).")
@click.option("--unknown", type=click.Choice(["error", "subword"]),
              help="A word not in the vocabulary: an error, or its fastText subword vector. "
                   "Default: subword for tables with n-grams, else error.")
@tensor_option
@output_options(formats=("json", "jsonl", "csv", "tsv", "table"))
@scheduler_option
def similar(table, query, k, negative, as_ids, vectors, restrict_vocab, unknown, tensor, fmt, output,
            force):
    """Top-k cosine neighbours of words, row numbers or vectors (gensim most_similar: unit vectors,
    weighted mean, input rows excluded)."""
    from ..inputs import read_array
    from ..render import Output, render_records
    from ..sharded import open_table
    from ..similar import most_similar

    for a in query:
        if a.startswith("--"):
            raise click.NoSuchOption(a.split("=")[0])
    if not query and not negative and not vectors:
        raise click.UsageError("give at least one QUERY, --negative or --vector")
    out = Output(output, force)
    with open_table(table, tensor=tensor) as t:
        vocab = t.vocab

        def resolve(items):
            if vocab is not None and not as_ids:
                from ..pretrained import query_items

                return query_items(t, items, unknown=unknown)
            rows = []
            for item in items:
                try:
                    row = int(item)
                except ValueError:
                    hint = " (the table has no vocabulary)" if vocab is None else ""
                    raise click.BadParameter(f"{item!r} is not a row number{hint}") from None
                rows.append(_check_row(row, t.num_embeddings))
            return rows

        positive = resolve(query) + [_vector(read_array(v, what="query vector")) for v in vectors]
        results = most_similar(t.weight(), vocab, positive, resolve(negative), topn=k,
                               restrict_vocab=restrict_vocab)
        names = vocab.words([r for r, _ in results]) if vocab is not None else None
    records = []
    for i, (row, score) in enumerate(results):
        rec = {"id": int(row)}
        if names is not None:
            rec["word"] = names[i]
        rec["score"] = float(score)
        records.append(rec)
    render_records(records, fmt, out)


def _check_row(row: int, n: int) -> int:
    from ..errors import IndexRangeError

    if not 0 <= row < n:
        raise IndexRangeError(f"row {row} is out of range for a table of {n} rows")
    return row


def _vector(arr):
    return arr.reshape(-1) if arr.ndim == 2 and arr.shape[0] == 1 else arr


@cli.command()
@click.argument("table", type=click.Path())
@click.option("--analogies", metavar="FILE", help="questions-words file (': section' lines, then 4 words).")
@click.option("--pairs", metavar="FILE", help="Word pairs with a gold score (word1 TAB word2 TAB score).")
@click.option("--restrict-vocab", type=click.IntRange(min=0), default=300000, show_default=True,
              help="Only the first N rows count as known (gensim's default).")
@click.option("--case-sensitive", is_flag=True, help="Do not upper-case words and questions (gensim folds case).")
@click.option("--dummy4unknown", is_flag=True,
              help="Count questions with unknown words as incorrect / pairs as similarity 0 (gensim's option).")
@click.option("--delimiter", default="\t", show_default=repr("\t"), help="Field separator of --pairs.")
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of --pairs.")
@tensor_option
@click.option("-f", "--format", "fmt", type=click.Choice(["json", "table"]), default="json", show_default=True)
@scheduler_option
def evaluate(table, analogies, pairs, restrict_vocab, case_sensitive, dummy4unknown, delimiter,
             encoding, tensor, fmt):
    """Score the table on word analogies (3CosAdd accuracy) and/or word-pair similarity
    (Pearson, Spearman), with gensim's rules."""
    import os

    from ..errors import ConfigError
    from ..evaluate import evaluate_analogies, evaluate_pairs
    from ..render import Output, render_object, render_rows
    from ..sharded import open_table

    if not analogies and not pairs:
        raise click.UsageError("give --analogies FILE and/or --pairs FILE")
    result = {}
    with open_table(table, tensor=tensor) as t:
        if t.vocab is None:
            raise ConfigError(f"{table}: evaluation needs a table with a vocabulary")
        if analogies:
            size = os.path.getsize(analogies) if os.path.isfile(analogies) else None
            with progress(size, "analogies", unit="bytes") as advance:
                result["analogies"] = evaluate_analogies(
                    t.weight(), t.vocab, analogies, restrict_vocab=restrict_vocab,
                    case_insensitive=not case_sensitive, dummy4unknown=dummy4unknown, progress=advance)
        if pairs:
            result["pairs"] = evaluate_pairs(t.weight(), t.vocab, pairs, delimiter=delimiter,
                                             encoding=encoding, restrict_vocab=restrict_vocab,
                                             case_insensitive=not case_sensitive,
                                             dummy4unknown=dummy4unknown)
    if fmt == "table":
        rows = []
        if "analogies" in result:
            a = result["analogies"]
            rows += [[s["section"], s["correct"], s["incorrect"], f"{s['accuracy']:.4f}"] for s in a["sections"]]
        if "pairs" in result:
            p = result["pairs"]
            rows.append(["pairs: pearson / spearman", f"{p['pearson']:.4f}", f"{p['spearman']:.4f}",
                         f"oov {p['oov_ratio']:.2f}%"])
        render_rows(["section", "correct", "incorrect", "accuracy"], rows, "table", Output())
        return
    render_object(result if len(result) > 1 else next(iter(result.values())), Output())
