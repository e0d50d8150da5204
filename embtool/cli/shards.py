"""shard and unshard: a table file <-> a sharded table (NAME.index.json and its shard files)."""
from __future__ import annotations

import click

from . import cli
from .common import examples, force_option, info, scheduler_option, tensor_option


@cli.command(epilog=examples(
    "embtool shard glove.safetensors glove.index.json --shards 8",
    "embtool shard big.safetensors big.index.json --rows-per-shard 1000000 --scheduler tcp://10.0.0.1:8786",
    "embtool shard big.index.json big16.index.json --shards 16",
))
@click.argument("table", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("-k", "--shards", type=click.IntRange(min=1), metavar="K", help="Split into K shards of nearly equal rows.")
@click.option("--rows-per-shard", type=click.IntRange(min=1), metavar="N", help="Split into shards of N rows.")
@tensor_option
@force_option("OUT")
@scheduler_option
def shard(table, out, shards, rows_per_shard, tensor, force):
    """Split TABLE by rows into the sharded table OUT (NAME.index.json, its shard files and
    vocabulary file beside it), bit for bit: rows, optimizer state, words and metadata. TABLE may
    itself be a sharded table (re-shard it)."""
    from ..sharded import shard_table

    if (shards is None) == (rows_per_shard is None):
        raise click.UsageError("give the number of shards (--shards K) or --rows-per-shard N")
    done = shard_table(table, out, shards=shards, rows_per_shard=rows_per_shard, tensor=tensor, force=force)
    info(f"wrote {out}: {done['rows']} x {done['dim']} in {done['shards']} shards"
         + (f", words in {done['vocab']}" if done["vocab"] else ""))


@cli.command(epilog=examples(
    "embtool unshard glove.index.json glove.safetensors",
    "embtool unshard big.index.json big.safetensors --force",
))
@click.argument("index", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@force_option("OUT")
def unshard(index, out, force):
    """Join the sharded table INDEX into the one table file OUT, bit for bit (for a table embtool
    wrote, the same bytes as before it was sharded)."""
    from ..sharded import unshard_table

    done = unshard_table(index, out, force=force)
    info(f"wrote {out}: {done['rows']} x {done['dim']} from {done['shards']} shards")
