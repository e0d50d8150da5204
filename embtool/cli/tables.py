"""Commands on the table itself: init, info, lookup, renorm, freeze, unfreeze, checkpoint."""
from __future__ import annotations

import click

from . import cli
from .common import (DTYPES, ArgsCommand, NoneOrFloat, NoneOrInt, config_options, dtype_option,
                     examples, force_option, free_args, info, output_options, progress,
                     read_stdin_allowed, scheduler_option, shards_options, tensor_option)

TABLE = click.argument("table", type=click.Path())  # a folder: a model folder (read-only)
#: the formats of an array of rows
ARRAY_FORMATS = ("json", "jsonl", "csv", "tsv", "npy", "table")


@cli.command(epilog=examples(
    "embtool init emb.safetensors -n 10000 -d 64 --seed 0",
    "embtool init emb.safetensors -n 50000 -d 128 --padding-idx 0 --sparse --dtype bfloat16",
    "embtool init big.index.json -n 100000000 -d 128 --shards 32 --sparse",
))
@TABLE
@click.option("-n", "--num-embeddings", type=click.IntRange(min=0), required=True, help="Rows.")
@click.option("-d", "--embedding-dim", type=click.IntRange(min=0), required=True, help="Columns.")
@click.option("--init", "init_", type=click.Choice(["normal", "uniform", "zeros"]), default="normal",
              show_default=True, help="N(0,1) as nn.Embedding, U(-1,1), or zeros.")
@click.option("--scale", type=float, default=1.0, show_default=True, help="Multiply the values by this.")
@click.option("--seed", type=int, help="Seed for reproducible values (recorded in the table).")
@dtype_option()
@config_options
@click.option("--frozen/--no-frozen", default=False, show_default=True, help="Start frozen.")
@force_option("TABLE")
@shards_options
def init(table, num_embeddings, embedding_dim, init_, scale, seed, dtype, config, frozen, force, shards,
         rows_per_shard):
    """Create a new table, as nn.Embedding(N, D) initialises one (padding row zeroed)."""
    from ..config import Config
    from ..ops import init_table

    cfg = Config(frozen=frozen).with_overrides(num_embeddings, **config)
    with progress(num_embeddings, "init") as advance:
        done = init_table(table, num_embeddings, embedding_dim, init=init_, scale=scale, seed=seed,
                          dtype=DTYPES[dtype.lower()], config=cfg, force=force, progress=advance,
                          shards=shards, rows_per_shard=rows_per_shard)
    info(f"Created {table}: {num_embeddings} x {embedding_dim} {done['dtype']}, "
         f"{init_} init (seed {done['seed']})")


@cli.command("info", epilog=examples(
    "embtool info glove.safetensors",
    "embtool info model.safetensors --tensor embeddings.word_embeddings.weight -f json",
    "embtool info glove.safetensors --stats",
    "embtool info big.index.json --stats --scheduler tcp://10.0.0.1:8786",
))
@TABLE
@tensor_option
@click.option("--stats", is_flag=True, help="Row-norm summary, histogram, zero/non-finite/duplicate rows.")
@output_options(("text", "json", "jsonl"), default="text")
@scheduler_option
def info_cmd(table, tensor, stats, out):
    """Describe a safetensors file: tensors, and for a table its shape, config, vocab, optimizer."""
    from ..inspect import describe
    from ..render import info_text, render_object

    if stats:
        with progress(None, "stats") as advance:
            facts = describe(table, tensor, stats=True, progress=advance)
    else:
        facts = describe(table, tensor)
    render_object(facts, out, text=info_text)


def read_index_input(ids, input_path, *, words: bool = False, json_input: bool = False):
    """Indices (or words) from arguments, -i FILE / -i -, or piped stdin."""
    if ids and input_path:
        raise click.UsageError("give indices as arguments or with -i, not both")
    if not ids and not input_path:
        if not read_stdin_allowed():
            raise click.UsageError("no indices: give them as arguments, with -i FILE, or on stdin")
        input_path = "-"
    if words:
        from ..inputs import read_words

        return read_words(ids, input_path, json_input=json_input)
    from ..inputs import ids_from_args, read_ids

    return read_ids(input_path) if input_path else ids_from_args(ids)


@cli.command(cls=ArgsCommand, epilog=examples(
    "embtool lookup emb.safetensors '[[1, 2], [3, 4]]' -f npy -o rows.npy",
    "embtool lookup glove.safetensors -w king queen -f table",
    "echo '[CLS] hello [SEP]' | embtool lookup bert.safetensors -w -f jsonl",
    "embtool lookup glove.safetensors -f tsv -w -- -lrb- --",
))
@TABLE
@click.argument("ids", nargs=-1)
@click.option("-i", "--input", "input_path", metavar="FILE",
              help="Indices from FILE or - (stdin): JSON nested lists, whitespace integers or .npy.")
@tensor_option
@click.option("--max-norm", metavar="X", type=NoneOrFloat(),
              help="Override the table's max_norm for this call ('none' clears).")
@click.option("--norm-type", type=float, metavar="P", help="Override the table's norm_type.")
@click.option("--padding-idx", metavar="I", type=NoneOrInt(),
              help="Override the table's padding_idx ('none' clears).")
@click.option("--write-back", is_flag=True,
              help="Persist max_norm renormalisation in the table, as PyTorch mutates weight.")
@click.option("-w", "--words", "use_words", is_flag=True,
              help="IDS are words of the table's vocabulary. One argument, or all of stdin, that "
                   "parses as a JSON list of strings is one (its nesting is the shape); anything "
                   "else is words ([CLS], <s>, '-'); words that begin with '-' go after '--'.")
@click.option("--json-input", is_flag=True, help="With --words: the words must be a JSON list.")
@click.option("--words-file", metavar="FILE", help="Words from FILE (or -), one per line.")
@click.option("--unknown", type=click.Choice(["error", "skip", "unk", "subword"]),
              help="A word not in the vocabulary: an error, dropped (named on stderr), the unk row, "
                   "or its fastText subword vector (id -1). Default: subword for tables with "
                   "n-grams, else error.")
@click.option("--offsets", metavar="OFFSETS",
              help="EmbeddingBag: bag start offsets into the 1-D ids (JSON list, integers, or FILE).")
@click.option("--mode", type=click.Choice(["sum", "mean", "max"]),
              help="EmbeddingBag reduction (default mean); with 2-D ids and no --offsets each row is a bag.")
@click.option("--per-sample-weights", "psw", metavar="FILE|JSON",
              help="EmbeddingBag (mode sum): a weight per id, same shape as the ids.")
@click.option("--include-last-offset", is_flag=True,
              help="EmbeddingBag: OFFSETS has one more entry, the end of the last bag (CSR).")
@output_options(ARRAY_FORMATS, full=True)
@scheduler_option
def lookup(table, ids, input_path, tensor, max_norm, norm_type, padding_idx, write_back, use_words,
           json_input, words_file, unknown, offsets, mode, psw, include_last_offset, out):
    """Rows of TABLE for IDS (row numbers, or words with --words) of any shape (F.embedding):
    output shape (*, D); a flat list of words gives one record (word, id, vector) per word.
    With --offsets or --mode, bags of rows reduced as nn.EmbeddingBag: output shape (B, D)."""
    from ..inputs import read_words
    from ..ops import lookup as do_lookup, lookup_bag
    from ..render import render_array

    ids = free_args(ids)
    words = None
    if words_file:
        if ids or input_path:
            raise click.UsageError("give words with --words-file or as arguments/-i, not both")
        words = read_words((), words_file, lines=True)
    elif use_words:
        words = read_index_input(ids, input_path, words=True, json_input=json_input)
    elif json_input:
        raise click.UsageError("--json-input applies to --words")
    else:
        idx = read_index_input(ids, input_path)
    bag = offsets is not None or mode is not None or psw is not None or include_last_offset
    if bag:
        offsets, psw = _small_array(offsets, "offsets", ints=True), _small_array(psw, "per-sample weights")
    found = None
    with _open_table(table, tensor, write_back) as t:
        if words is not None and not bag:
            from ..pretrained import lookup_words

            rows, found = lookup_words(t, words, unknown=unknown, max_norm=max_norm, norm_type=norm_type,
                                       padding_idx=padding_idx, write_back=write_back)
            idx = found.ids
        elif words is not None:
            from ..keys import rows_for_words

            found = rows_for_words(t, words, unknown=unknown or "error")
            idx = found.ids
        if bag:
            rows = lookup_bag(t, idx, offsets, mode=mode or "mean", per_sample_weights=psw,
                              include_last_offset=include_last_offset, padding_idx=padding_idx,
                              max_norm=max_norm, norm_type=norm_type, write_back=write_back)
        elif words is None:
            rows = do_lookup(t, idx, max_norm=max_norm, norm_type=norm_type, padding_idx=padding_idx,
                             write_back=write_back)
    if found is not None and found.skipped:
        from ..keys import skipped_message

        info(skipped_message(found.skipped))
    if bag or idx.ndim > 1:  # bags, or nested ids: the shape of the output tells the rows apart
        render_array(rows, out)
    elif found is not None:
        render_array(rows, out, labels={"id": idx.tolist(), "word": found.words}, records=True)
    else:
        render_array(rows, out, labels={"id": idx.reshape(-1).tolist()})


def _small_array(value, what, ints=False):
    """An option's array: inline, or a file (path or -)."""
    if value is None:
        return None
    from ..inputs import read_option_array

    return read_option_array(value, what, integers=ints)


def _open_table(path, tensor, write=False):
    from ..sharded import open_table

    return open_table(path, tensor=tensor, write=write)


@cli.command(cls=ArgsCommand, epilog=examples(
    "embtool renorm emb.safetensors --max-norm 1 --dry-run -f json",
    "embtool renorm emb.safetensors 3 7 42",
))
@TABLE
@click.argument("ids", nargs=-1)
@click.option("-i", "--input", "input_path", metavar="FILE", help="Ids to renorm from FILE or -.")
@tensor_option
@click.option("--max-norm", type=float, metavar="X", help="Use X instead of the table's max_norm.")
@click.option("--norm-type", type=float, metavar="P", help="Use P instead of the table's norm_type.")
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@output_options(("json", "jsonl"), default=None)
@scheduler_option
def renorm(table, ids, input_path, tensor, max_norm, norm_type, dry_run, out):
    """Apply max_norm renormalisation (PyTorch's formula) to the whole table or to IDS.

    The summary goes to stderr; -f json gives the report (every changed id) on stdout."""
    from ..inputs import ids_from_args, read_ids
    from ..ops import renorm as do_renorm
    from ..render import render_object

    ids = free_args(ids)
    if ids and input_path:
        raise click.UsageError("give ids as arguments or with -i, not both")
    idx = read_ids(input_path) if input_path else (ids_from_args(ids) if ids else None)
    with _open_table(table, tensor, not dry_run) as t, \
            progress(t.num_embeddings if idx is None else None, "renorm") as advance:
        report = do_renorm(t, idx, max_norm=max_norm, norm_type=norm_type, dry_run=dry_run,
                           progress=advance)
    verb = "would change" if dry_run else "changed"
    info(f"{table}: {verb} {report.rows_changed} of {report.rows_checked} rows checked "
         f"(max_norm={report.max_norm}, norm_type={report.norm_type})")
    render_object(report.to_dict(), out)


def _set_frozen(table, tensor, frozen: bool) -> None:
    from ..shardindex import set_frozen

    changed = set_frozen(table, frozen, tensor)
    info(f"{table}: {'frozen' if frozen else 'trainable'}" + ("" if changed else " (unchanged)"))


def _frozen_command(name: str, frozen: bool, help_text: str, *example_lines: str) -> None:
    """``freeze`` and ``unfreeze``: one flag of the table's config, set in place."""

    @cli.command(name, help=help_text, epilog=examples(*example_lines))
    @TABLE
    @tensor_option
    def command(table, tensor):
        _set_frozen(table, tensor, frozen)


_frozen_command(
    "freeze", True, "Mark the table frozen (requires_grad=False): train-step refuses it. O(1), in place.",
    "embtool freeze glove.safetensors",
    "embtool freeze model.safetensors --tensor model.embed_tokens.weight")
_frozen_command(
    "unfreeze", False, "Mark the table trainable again. O(1), in place.",
    "embtool unfreeze glove.safetensors",
    "embtool unfreeze glove.safetensors && embtool train-step glove.safetensors -i ids.json --grad grad.npy")


@cli.command(epilog=examples(
    "embtool checkpoint emb.safetensors",
    "embtool checkpoint emb.safetensors && cp emb.safetensors backup/",
    "embtool checkpoint big.index.json",
))
@TABLE
def checkpoint(table):
    """Make TABLE durable and fold its write-ahead log (TABLE-wal) into it.

    Writes are logged and applied at once; the log is checkpointed by size (EMBTOOL_CHECKPOINT_BYTES)
    or by this command, e.g. before copying the table file alone."""
    from ..shardindex import checkpoint as do_checkpoint

    done = do_checkpoint(table)
    info(f"{table}: checkpointed ({done['transactions']} logged transactions, {done['log_bytes']:,} log bytes)"
         if done["log_bytes"] else f"{table}: no log to checkpoint")
