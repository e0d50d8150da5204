"""Commands on the table itself: init, info, lookup, renorm, freeze, unfreeze."""
from __future__ import annotations

import click

from . import cli
from .common import (DTYPES, NoneOrFloat, NoneOrInt, config_options, dtype_option, info,
                     output_options, progress, read_stdin_allowed, scheduler_option, shards_options,
                     tensor_option)

TABLE = click.argument("table", type=click.Path())  # a folder: a model folder (read-only)


def config_overrides(**opts) -> dict:
    keys = ("padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse")
    return {k: opts.get(k) for k in keys}


@cli.command()
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
@click.option("--force", is_flag=True, help="Replace TABLE if it exists.")
@shards_options
def init(table, num_embeddings, embedding_dim, init_, scale, seed, dtype, frozen, force, shards,
         rows_per_shard, **opts):
    """Create a new table, as nn.Embedding(N, D) initialises one (padding row zeroed)."""
    from ..ops import init_table
    from ..table import Config

    cfg = Config(frozen=frozen).with_overrides(num_embeddings, **config_overrides(**opts))
    with progress(num_embeddings, "init") as advance:
        done = init_table(table, num_embeddings, embedding_dim, init=init_, scale=scale, seed=seed,
                          dtype=DTYPES[dtype.lower()], config=cfg, force=force, progress=advance,
                          shards=shards, rows_per_shard=rows_per_shard)
    info(f"Created {table}: {num_embeddings} x {embedding_dim} {done['dtype']}, "
         f"{init_} init (seed {done['seed']})")


@cli.command("info")
@TABLE
@tensor_option
@scheduler_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--stats", is_flag=True, help="Row-norm summary, histogram, zero/non-finite/duplicate rows.")
def info_cmd(table, tensor, as_json, stats):
    """Describe a safetensors file: tensors, and for a table its shape, config, vocab, optimizer."""
    from ..inspect import describe
    from ..render import Output, render_object

    facts = describe(table, tensor)
    if stats:
        facts["stats"] = _stats(table, tensor, facts)
    if as_json:
        render_object(facts, Output())
        return
    click.echo(_human_info(facts, stats), nl=False)


def _stats(path, tensor, facts):
    if facts["table"] is None:
        from ..errors import FormatError

        raise FormatError(facts.get("table_error", f"{path}: no table"))
    from ..sharded import open_table
    from ..stats import table_stats

    with open_table(path, tensor=tensor) as t, progress(t.num_embeddings, "stats") as advance:
        stats = table_stats(t.weight(), progress=advance)
        if t.vocab is not None:  # name the sampled rows and their neighbours by their words
            for item in stats["neighbours"]:
                item["word"] = t.vocab.word(item["row"])
                item["neighbour_words"] = t.vocab.words([r for r, _ in item["neighbours"]])
        return stats


def _human_info(facts: dict, stats: bool) -> str:
    lines = [f"{facts['path']}  ({facts['size_bytes']:,} bytes, {len(facts['tensors'])} tensors)"]
    model = facts.get("model")
    if model is not None:
        lines.append(f"model      {model['kind']}: weights {model['weights']}, tokenizer "
                     f"{model['tokenizer'] or 'none'}")
    t = facts["table"]
    if t is not None:
        lines.append(f"table      {t['tensor']}: {t['num_embeddings']:,} x {t['embedding_dim']} {t['dtype']}"
                     + ("" if t["embtool_format"] else "  (not written by embtool: defaults shown)"))
        cfg = ", ".join(f"{k}={t[k]}" for k in ("padding_idx", "max_norm", "norm_type",
                                                   "scale_grad_by_freq", "sparse"))
        lines.append(f"config     {cfg}")
        lines.append(f"frozen     {str(t['frozen']).lower()}")
        v = t["vocab"]
        lines.append("vocab      none" if v is None else
                     f"vocab      {v['size']:,} words: " + " ".join(v["sample"]) +
                     (" ..." if v["size"] > len(v["sample"]) else "") +
                     (f" ({v['rows_without_word']:,} rows have no word)" if v.get("rows_without_word") else ""))
        for note in t.get("notes", []):
            lines.append(f"note       {note}")
        o = t["optimizer"]
        lines.append("optimizer  none" if o is None else
                     f"optimizer  {o['name']} step {o['step']} {o['hparams']} state: {', '.join(o['state'])}")
    elif "table_error" in facts:
        lines.append(f"table      none ({facts['table_error']})")
    if "shards" in facts:
        sh = facts["shards"]
        lines.append(f"shards     {len(sh)} files: {sh[0]['file']} rows [{sh[0]['rows'][0]}, {sh[0]['rows'][1]})"
                     + (f" ... {sh[-1]['file']} rows [{sh[-1]['rows'][0]}, {sh[-1]['rows'][1]})" if len(sh) > 1 else ""))
    lines.append("tensors")
    for x in facts["tensors"]:
        lines.append(f"  {x['name']:<24} {x['dtype']:<5} {str(x['shape']):<20} {x['bytes']:,} bytes"
                     + (f"  {x['file']}" if "file" in x else ""))
    other = {k: v for k, v in facts["metadata"].items() if not k.startswith("embtool.")}
    if other:
        lines.append("metadata")
        lines += [f"  {k} = {v}" for k, v in sorted(other.items())]
    if stats:
        from ..stats import format_stats

        words = {}
        for item in facts["stats"]["neighbours"]:
            if "word" in item:
                words[item["row"]] = item["word"]
                words.update(zip((r for r, _ in item["neighbours"]), item["neighbour_words"]))
        lines.append(format_stats(facts["stats"], name=words.get if words else None))
    return "\n".join(lines) + "\n"


def read_index_input(ids, input_path, words: bool = False):
    """Indices (or words) from arguments, -i FILE / -i -, or piped stdin.

    Commands taking ids accept unknown options as arguments so that ``lookup T 1 -1`` reaches the
    index check (a negative index is an input error, exit 1); a real unknown option is still a
    usage error here.
    """
    for a in ids:
        if a.startswith("-") and not a[1:].isdigit():
            raise click.NoSuchOption(a.split("=")[0])
    if ids and input_path:
        raise click.UsageError("give indices as arguments or with -i, not both")
    if not ids and not input_path:
        if not read_stdin_allowed():
            raise click.UsageError("no indices: give them as arguments, with -i FILE, or on stdin")
        input_path = "-"
    if words:
        from ..inputs import read_words

        return read_words(ids, input_path)
    from ..inputs import ids_from_args, read_ids

    return read_ids(input_path) if input_path else ids_from_args(ids)


@cli.command(context_settings={"ignore_unknown_options": True})
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
              help="IDS are words of the table's vocabulary (JSON nested lists keep their shape).")
@click.option("--words-file", metavar="FILE", help="Words from FILE (or -), one per line.")
@click.option("--unknown", type=click.Choice(["error", "skip", "unk", "subword"]),
              help="A word not in the vocabulary: an error, dropped, the unk row, or its fastText "
                   "subword vector (id -1). Default: subword for tables with n-grams, else error.")
@click.option("--offsets", metavar="OFFSETS",
              help="EmbeddingBag: bag start offsets into the 1-D ids (JSON list, integers, or FILE).")
@click.option("--mode", type=click.Choice(["sum", "mean", "max"]),
              help="EmbeddingBag reduction (default mean); with 2-D ids and no --offsets each row is a bag.")
@click.option("--per-sample-weights", "psw", metavar="FILE|JSON",
              help="EmbeddingBag (mode sum): a weight per id, same shape as the ids.")
@click.option("--include-last-offset", is_flag=True,
              help="EmbeddingBag: OFFSETS has one more entry, the end of the last bag (CSR).")
@output_options()
@scheduler_option
def lookup(table, ids, input_path, tensor, max_norm, norm_type, padding_idx, write_back, use_words,
           words_file, unknown, offsets, mode, psw, include_last_offset, fmt, output, force):
    """Rows of TABLE for IDS (row numbers, or words with --words) of any shape (F.embedding):
    output shape (*, D). With --offsets or --mode, bags of rows reduced as nn.EmbeddingBag:
    output shape (B, D)."""
    from ..ops import lookup as do_lookup
    from ..render import Output, render_array
    from ..sharded import open_table

    out = Output(output, force, binary=fmt == "npy")
    words = None
    if words_file:
        from ..inputs import read_words

        if ids or input_path:
            raise click.UsageError("give words with --words-file or as arguments/-i, not both")
        raw = read_words((), words_file, lines=True)
    elif use_words:
        raw = read_index_input(ids, input_path, words=True)
    else:
        raw = None
    with open_table(table, tensor=tensor, write=write_back) as t:
        t.config.with_overrides(t.num_embeddings, padding_idx=padding_idx)  # validates it
        bag = offsets is not None or mode is not None or psw is not None or include_last_offset
        if raw is not None and not bag:
            from ..pretrained import lookup_words

            rows, idx, words = lookup_words(t, raw, unknown=unknown, max_norm=max_norm,
                                            norm_type=norm_type, write_back=write_back)
        elif raw is not None:
            from ..pretrained import words_to_ids

            idx, words = words_to_ids(t, raw, unknown=unknown or "error")
        else:
            idx = read_index_input(ids, input_path)
        if bag:
            from ..ops import lookup_bag

            rows = lookup_bag(t, idx, _small_array(offsets, "offsets", ints=True), mode=mode or "mean",
                              per_sample_weights=_small_array(psw, "per-sample weights"),
                              include_last_offset=include_last_offset, padding_idx=padding_idx,
                              max_norm=max_norm, norm_type=norm_type, write_back=write_back)
            render_array(rows, fmt, out)
            return
        if raw is None:
            rows = do_lookup(t, idx, max_norm=max_norm, norm_type=norm_type, write_back=write_back)
    flat = idx.ndim <= 1
    render_array(rows, fmt, out, ids=idx if flat else None, words=words if flat else None)


def _small_array(value, what, ints=False):
    """An option's array: inline JSON / integers, or a file (path or -) of JSON/.npy/..."""
    if value is None:
        return None
    import os

    from ..inputs import parse_ids_text, read_array, read_ids

    if value == "-" or os.path.isfile(value):
        return read_ids(value) if ints else read_array(value, what=what)
    if ints:
        return parse_ids_text(value.replace(",", " ") if not value.lstrip().startswith("[") else value,
                              f"--{what}")
    from ..inputs import _json_array

    return _json_array(value, f"--{what}", what)


@cli.command()
@TABLE
@click.argument("ids", nargs=-1)
@click.option("-i", "--input", "input_path", metavar="FILE", help="Ids to renorm from FILE or -.")
@tensor_option
@click.option("--max-norm", type=float, metavar="X", help="Use X instead of the table's max_norm.")
@click.option("--norm-type", type=float, metavar="P", help="Use P instead of the table's norm_type.")
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@scheduler_option
def renorm(table, ids, input_path, tensor, max_norm, norm_type, dry_run, as_json):
    """Apply max_norm renormalisation (PyTorch's formula) to the whole table or to IDS."""
    from ..inputs import ids_from_args, read_ids
    from ..ops import renorm as do_renorm
    from ..render import Output, render_object
    from ..sharded import open_table

    idx = read_ids(input_path) if input_path else (ids_from_args(ids) if ids else None)
    with open_table(table, tensor=tensor, write=not dry_run) as t, \
            progress(t.num_embeddings if idx is None else None, "renorm") as advance:
        report = do_renorm(t, idx, max_norm=max_norm, norm_type=norm_type, dry_run=dry_run,
                           progress=advance)
    verb = "would change" if dry_run else "changed"
    info(f"{table}: {verb} {report.rows_changed} of {report.rows_checked} rows checked "
         f"(max_norm={report.max_norm}, norm_type={report.norm_type})")
    if as_json:
        render_object(report.to_dict(), Output())


def _set_frozen(table, tensor, frozen: bool) -> None:
    from ..shardindex import set_frozen

    changed = set_frozen(table, frozen, tensor)
    info(f"{table}: {'frozen' if frozen else 'trainable'}" + ("" if changed else " (unchanged)"))


@cli.command()
@TABLE
@tensor_option
@scheduler_option
def freeze(table, tensor):
    """Mark the table frozen (requires_grad=False): train-step refuses it. O(1), in place."""
    _set_frozen(table, tensor, True)


@cli.command()
@TABLE
@tensor_option
@scheduler_option
def unfreeze(table, tensor):
    """Mark the table trainable again. O(1), in place."""
    _set_frozen(table, tensor, False)
