"""load-pretrained and export: vector files <-> tables."""
from __future__ import annotations

import click

from . import cli
from .common import (DTYPES, config_options, dtype_option, examples, force_option, info, progress,
                     scheduler_option, shards_options, tensor_option)

#: the choices of ``--format`` and of the loading policies; the library's own lists
#: (pretrained.SOURCE_FORMATS, formats.write.WRITE_FORMATS, formats.loaded.DUPLICATE_POLICIES and
#: UNICODE_ERRORS) import numpy, which `embtool --help` must not pay for: a test keeps them equal
LOAD_FORMATS = ("auto", "glove", "word2vec", "word2vec-binary", "npy", "safetensors", "fasttext")
EXPORT_FORMATS = ("glove", "word2vec", "word2vec-binary", "npy")
UNICODE_ERRORS = ("strict", "replace", "ignore")
DUPLICATE_POLICIES = ("first", "last", "error")


@cli.command("load-pretrained", epilog=examples(
    "embtool load-pretrained glove.6B.50d.txt.gz glove.safetensors",
    "embtool load-pretrained model.safetensors bert.safetensors "
    "--tensor embeddings.word_embeddings.weight --vocab vocab.txt",
    "zcat crawl-300d-2M.vec.gz | embtool load-pretrained - crawl.index.json --shards 8",
    "embtool load-pretrained glove.txt glove.safetensors --padding-token '<pad>' --unk-token '<unk>' --no-freeze",
))
@click.argument("source")
@click.argument("table", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(LOAD_FORMATS),
              help="Input format; auto detects it (a word2vec header is two integers that agree "
                   "with the next row; safetensors covers model folders and *.index.json).")
@tensor_option(help="The 2-D tensor of a safetensors SOURCE, model folder or index.")
@click.option("--vocab", "vocab_file", metavar="FILE",
              help="Names the rows of a tensor or .npy: a tokenizer.json, a {token: id} JSON map or "
                   "one token per line (vocab.txt). A folder's own tokenizer is the default.")
@click.option("--limit", type=click.IntRange(min=0), help="Read at most this many rows.")
@dtype_option()
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of the words.")
@click.option("--unicode-errors", type=click.Choice(UNICODE_ERRORS), default="strict",
              show_default=True, help="What to do with words that do not decode.")
@click.option("--on-duplicate", type=click.Choice(DUPLICATE_POLICIES), default="first",
              show_default=True, help="Which row a repeated word keeps (gensim: first; torchtext: last).")
@click.option("--allow-nonfinite", is_flag=True, help="Accept nan/inf and float overflow values.")
@click.option("--padding-token", metavar="WORD", help="Padding row: this word's row, or a new zero row.")
@click.option("--unk-token", metavar="WORD", help="Row for unknown words: this word's row, or a new zero row.")
@click.option("--freeze/--no-freeze", default=True, show_default=True,
              help="Frozen, as nn.Embedding.from_pretrained(freeze=True).")
@config_options
@force_option("TABLE")
@shards_options
def load_pretrained(source, table, fmt, tensor, vocab_file, limit, dtype, encoding, unicode_errors,
                    on_duplicate, allow_nonfinite, padding_token, unk_token, freeze, config, force,
                    shards, rows_per_shard):
    """Make TABLE from SOURCE: GloVe text, word2vec text / fastText .vec, word2vec binary, .npy,
    a fastText .bin model (with its subword n-grams), or a tensor of a safetensors file, model
    folder or sharded checkpoint with its tokenizer (from_pretrained). .gz/.bz2/.xz and - (stdin)
    are read."""
    import os

    from ..pretrained import DTYPE_NAMES
    from ..pretrained import load_pretrained as load

    total = None if source == "-" else (os.path.getsize(source) if os.path.isfile(source) else None)
    with progress(total, "load", unit="bytes") as advance:
        done = load(source, table, format=fmt, tensor=tensor, vocab_file=vocab_file, limit=limit,
                    dtype=DTYPE_NAMES[DTYPES[dtype.lower()]],
                    encoding=encoding, unicode_errors=unicode_errors, on_duplicate=on_duplicate,
                    allow_nonfinite=allow_nonfinite, padding_token=padding_token,
                    unk_token=unk_token, freeze=freeze, overrides=config,
                    force=force, progress=lambda nbytes, rows=0: advance(nbytes), shards=shards,
                    rows_per_shard=rows_per_shard)
    extra = []
    if done["added_rows"]:
        extra.append("added rows for " + ", ".join(repr(w) for w in done["added_rows"]))
    if done["padding_idx"] is not None:
        extra.append(f"padding_idx {done['padding_idx']}")
    if done["unk_idx"] is not None:
        extra.append(f"unk row {done['unk_idx']}")
    info(done["summary"])
    info(f"wrote {table}: {done['rows']} x {done['dim']} {done['dtype']}"
         f"{', vocabulary' if done['vocab'] else ''}, {'frozen' if done['frozen'] else 'trainable'}"
         + (f" ({'; '.join(extra)})" if extra else ""))


@cli.command(epilog=examples(
    "embtool export glove.safetensors glove.vec",
    "embtool export emb.safetensors emb.npy",
    "embtool export glove.safetensors - --format glove | head -3",
))
@click.argument("table", type=click.Path())
@click.argument("out")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS),
              help="Output format (default: from OUT's suffix: .txt glove, .vec word2vec, "
                   ".bin word2vec-binary, .npy).")
@click.option("--vocab-out", metavar="FILE", help="With npy: where the words go (default OUT.vocab.txt).")
@tensor_option
@force_option("OUT")
@scheduler_option
def export(table, out, fmt, vocab_out, tensor, force):
    """Write TABLE as GloVe text, word2vec text, word2vec binary or .npy (+ vocab file); text
    round-trips float32 exactly. OUT may end in .gz/.bz2/.xz, or be - (stdout)."""
    from ..pretrained import export as do_export
    from ..sharded import open_table

    with open_table(table, tensor=tensor) as t, progress(t.num_embeddings, "export") as advance:
        done = do_export(t, out, fmt=fmt, vocab_out=vocab_out, force=force,
                         progress=lambda nbytes, rows: advance(rows))
    note = " (no vocabulary: rows are named by their numbers)" if done["row_numbers_as_words"] else ""
    vocab = f", words in {done['vocab_file']}" if done["vocab_file"] else ""
    info(f"wrote {out}: {done['rows']} x {done['dim']} as {done['format']}{vocab}{note}")
