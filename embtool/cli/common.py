"""Options shared by many commands, progress bars and messages.

Modules of ``embtool.cli`` import only click at module level: ``embtool --help`` must not pay for
numpy, rich or Numba.
"""
from __future__ import annotations

import contextlib
import os
import sys

import click

FORMATS = ("json", "jsonl", "csv", "tsv", "npy", "table")
from ..dtypes import ALIASES as DTYPES  # noqa: E402  (no numpy: the one dtype table)


def output_options(formats=FORMATS, default="json"):
    """``--format``, ``-o/--output`` and ``--force``: every data command speaks the same formats."""
    def deco(f):
        f = click.option("--force", is_flag=True, help="Replace the -o file if it exists.")(f)
        f = click.option("-o", "--output", metavar="FILE", type=click.Path(dir_okay=False),
                         help="Write the data to FILE instead of stdout.")(f)
        f = click.option("-f", "--format", "fmt", type=click.Choice(formats), default=default,
                         show_default=True, help="Output format.")(f)
        return f
    return deco


def tensor_option(f):
    return click.option("--tensor", metavar="NAME",
                        help="The 2-D tensor to use in a file with several (default: 'weight', "
                             "or the only 2-D tensor).")(f)


def config_options(f):
    """nn.Embedding's options under PyTorch's names."""
    f = click.option("--sparse/--no-sparse", default=None,
                     help="Row-sparse gradients (nn.Embedding sparse=True).")(f)
    f = click.option("--scale-grad-by-freq/--no-scale-grad-by-freq", default=None,
                     help="Scale gradients by the inverse frequency of the ids in the batch.")(f)
    f = click.option("--norm-type", type=float, metavar="P",
                     help="p of the p-norm for --max-norm (default 2).")(f)
    f = click.option("--max-norm", metavar="X", type=NoneOrFloat(),
                     help="Renormalise looked-up rows whose norm exceeds X ('none' clears).")(f)
    f = click.option("--padding-idx", metavar="I", type=NoneOrInt(),
                     help="Row that gets no gradient; negative counts from the end ('none' clears).")(f)
    return f


class NoneOrFloat(click.ParamType):
    name = "float|none"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value == "none":
            return value
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number or 'none'", param, ctx)


class NoneOrInt(click.ParamType):
    name = "int|none"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "none":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is not an integer or 'none'", param, ctx)


def dtype_option(default="float32"):
    return click.option("--dtype", type=click.Choice(sorted(DTYPES), case_sensitive=False),
                        default=default, show_default=True, help="Stored dtype of the table.")


def shards_options(f):
    """``--shards K`` / ``--rows-per-shard N`` of the commands that make a table: TABLE is then a
    sharded table's index (NAME.index.json) and its shards are written directly."""
    f = click.option("--rows-per-shard", type=click.IntRange(min=1), metavar="N",
                     help="Write a sharded table (TABLE: NAME.index.json) of shards of N rows.")(f)
    return click.option("--shards", type=click.IntRange(min=1), metavar="K",
                        help="Write a sharded table (TABLE: NAME.index.json) of K shards.")(f)


def scheduler_option(f):
    """``--scheduler ADDRESS``: a sharded table's per-shard tasks run on that Dask cluster
    (default: ``EMBTOOL_SCHEDULER``, else threads of this process)."""
    def use(ctx, param, value):
        from ..execute import set_default

        set_default(value)  # also None: a command run in-process after another starts afresh
        return value

    return click.option("--scheduler", metavar="ADDRESS", expose_value=False, callback=use,
                        help="Run a sharded table's per-shard work on this Dask scheduler "
                             "(host:port; default: $EMBTOOL_SCHEDULER, else threads here).")(f)


def info(message: str) -> None:
    """A human message on stderr (stdout stays clean for data)."""
    click.echo(message, err=True)


def use_color() -> bool:
    return "NO_COLOR" not in os.environ and sys.stderr.isatty()


@contextlib.contextmanager
def progress(total: int | None, description: str, unit: str = "rows"):
    """A rich progress bar on stderr when stderr is a terminal; yields ``advance(n)``."""
    if not sys.stderr.isatty():
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress,
                               TextColumn, TimeRemainingColumn)

    counter = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    console = Console(stderr=True, no_color=not use_color())
    with Progress(TextColumn("{task.description}"), BarColumn(), counter, TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def read_stdin_allowed() -> bool:
    """stdin is read implicitly only when it is not a terminal (so CI, without stdin, never hangs)."""
    try:
        return not sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False
