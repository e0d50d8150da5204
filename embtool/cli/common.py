"""Options shared by many commands, the argument rule for words, progress bars and messages.

Modules of ``embtool.cli`` import only click (and the numpy-free ``embtool.render`` names) at
module level: ``embtool --help`` and ``freeze`` must not pay for numpy, rich or Numba.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys

import click

from ..dtypes import ALIASES as DTYPES  # no numpy: the one dtype table
from ..render import FORMATS

CONFIG_KEYS = ("padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse")


# -- commands with free-form arguments ---------------------------------------------------------

class ArgsCommand(click.Command):
    """A command whose variadic arguments may look like options (``-1``, ``-lrb-``, ``--``).

    click passes unknown options through as arguments (``ignore_unknown_options``); this class
    remembers how many raw arguments followed the first bare ``--`` so that ``free_args`` can
    tell a word that was meant (``lookup T -w -- -lrb-``) from a mistyped option (exit 2).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("context_settings", {})["ignore_unknown_options"] = True
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx, args):
        ctx.meta["embtool.verbatim"] = len(args) - args.index("--") - 1 if "--" in args else 0
        return super().parse_args(ctx, args)


def free_args(values) -> tuple:
    """``values`` of a variadic argument of an ``ArgsCommand``, checked.

    An item starting with ``-`` given before ``--`` is an option: unknown ones are usage errors
    (exit 2) naming the rule for words that begin with ``-``; ``-`` alone is refused with a hint
    (it does not mean stdin here).  A negative integer (``-1``) is a value (an index that the
    library refuses with exit 1, or a word).
    """
    ctx = click.get_current_context()
    verbatim = min(ctx.meta.get("embtool.verbatim", 0), len(values))
    for a in values[:len(values) - verbatim]:
        if a == "-":
            raise click.UsageError("'-' is not read as stdin here: pipe without arguments or give "
                                   "-i - / --words-file -; the word '-' goes after '--' (... -- -)")
        if a.startswith("-") and not a[1:].isdigit():
            raise click.NoSuchOption(a.split("=")[0], message=(
                f"No such option: {a.split('=')[0]} (a word or value that begins with '-' goes "
                f"after '--', as in: -- {a})"))
    return tuple(values)


# -- shared options ----------------------------------------------------------------------------

def tensor_option(f=None, *, help="The 2-D tensor to use in a file with several (default: "
                                   "'weight', or the only 2-D tensor)."):
    """``--tensor NAME``; the shell completes it from the file given as the first argument."""
    deco = click.option("--tensor", metavar="NAME", help=help, shell_complete=_complete_tensor)
    return deco(f) if f is not None else deco


def _complete_tensor(ctx, param, incomplete):
    from click.shell_completion import CompletionItem

    # the file is the first argument; while the option still lacks its value click has not
    # assigned the arguments yet and leaves them in ctx.args
    path = ctx.params.get("source") or ctx.params.get("table") or next(iter(ctx.args), None)
    if path is None:
        return []
    try:
        from ..store import read_header

        tensors = read_header(path).tensors
    except Exception:  # completion must never fail loudly: no file, not safetensors, ...
        return []
    return [CompletionItem(name, help=f"{t.dtype} {list(t.shape)}")
            for name, t in sorted(tensors.items()) if name.startswith(incomplete)]


def force_option(what: str):
    return click.option("--force", is_flag=True, help=f"Replace {what} if it exists.")


def output_options(formats, default: str | None = "json", *, full: bool = False):
    """``-f/--format`` (``--json`` its alias), ``-o/--output``, ``--force`` and ``--strict-json``
    for every command that writes data; the command receives them as one ``out`` (a
    ``render.Output``: where the data goes and how).  ``default=None``: without ``-f`` the command
    writes no data (only its summary line on stderr) unless ``-o`` is given (then JSON).
    ``full`` adds ``--full`` (every component in ``-f table``)."""
    unknown = set(formats) - set(FORMATS)
    assert not unknown, unknown

    def deco(f):
        @functools.wraps(f)
        def command(*args, fmt, as_json, output, force, strict_json, full_table=False, **kwargs):
            from ..render import Output

            given = click.get_current_context().get_parameter_source("fmt")
            if as_json:
                if given is not click.core.ParameterSource.DEFAULT and fmt != "json":
                    raise click.UsageError(f"--json is the same as -f json; it contradicts -f {fmt}")
                fmt = "json"
            if fmt is None and output:
                fmt = "json"
            return f(*args, out=Output(output, force, fmt=fmt, full=full_table,
                                       strict_json=strict_json), **kwargs)

        opts = [
            click.option("-f", "--format", "fmt", type=click.Choice(formats), default=default,
                         show_default=default is not None,
                         help="Output format." if default else
                              "Write the report in this format (default: none, only the summary "
                              "line on stderr; json with -o)."),
            click.option("--json", "as_json", is_flag=True, help="Same as -f json."),
            click.option("-o", "--output", metavar="FILE", type=click.Path(dir_okay=False),
                         help="Write the data to FILE instead of stdout."),
            force_option("the -o file"),
            click.option("--strict-json", is_flag=True,
                         help="RFC 8259 JSON: write NaN and infinities as null (default: NaN, "
                              "Infinity, -Infinity, which Python's json module and pandas read)."),
        ]
        if full:
            opts.append(click.option("--full", "full_table", is_flag=True,
                                     help="-f table: every component, however wide."))
        for opt in reversed(opts):
            command = opt(command)
        return command
    return deco


def config_options(f):
    """nn.Embedding's options under PyTorch's names, given to the command as one ``config`` dict
    of the options that were set (``Config.with_overrides`` takes it as it is)."""
    @functools.wraps(f)
    def command(*args, **kwargs):
        config = {k: kwargs.pop(k) for k in CONFIG_KEYS}
        return f(*args, config={k: v for k, v in config.items() if v is not None}, **kwargs)

    for opt in reversed([
        click.option("--padding-idx", metavar="I", type=NoneOrInt(),
                     help="Row that gets no gradient; negative counts from the end ('none' clears)."),
        click.option("--max-norm", metavar="X", type=NoneOrFloat(),
                     help="Renormalise looked-up rows whose norm exceeds X ('none' clears)."),
        click.option("--norm-type", type=float, metavar="P", help="p of the p-norm for --max-norm (default 2)."),
        click.option("--scale-grad-by-freq/--no-scale-grad-by-freq", default=None,
                     help="Scale gradients by the inverse frequency of the ids in the batch."),
        click.option("--sparse/--no-sparse", default=None,
                     help="Row-sparse gradients (nn.Embedding sparse=True)."),
    ]):
        command = opt(command)
    return command


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


def examples(*lines: str) -> str:
    """The epilog of a command's ``--help``: 2 to 4 examples, kept as written (click's ``\\b``)."""
    assert 2 <= len(lines) <= 4, lines
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


# -- messages and progress ---------------------------------------------------------------------

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
