"""The ``embtool`` command: click commands over the library, and the one error boundary.

Every command module registers its commands on ``cli``; ``main`` turns library errors into one
``Error: ...`` line and exit code 1, usage errors into exit code 2, and never shows a traceback
(set ``EMBTOOL_DEBUG=1`` to see one for an unexpected internal error).
"""
from __future__ import annotations

import os
import sys

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    def list_commands(self, ctx):
        return list(self.commands)  # in registration order, not alphabetical


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(package_name="embtool", prog_name="embtool")
def cli():
    """Build, inspect, query and train embedding tables stored as safetensors files.

    Semantics are PyTorch's nn.Embedding / nn.EmbeddingBag / torch.optim and gensim's for
    pretrained word vectors. Data goes to stdout (JSON by default), messages to stderr.
    """


from . import tables  # noqa: E402,F401  (registers the commands)
for _module in ("pretrained", "train", "query", "shards"):
    try:
        __import__(f"{__name__}.{_module}")
    except ModuleNotFoundError as _exc:  # a command group not present in this build
        if _exc.name != f"{__name__}.{_module}":
            raise


def _fail(message: str, code: int = 1) -> int:
    click.echo(f"Error: {message}", err=True)
    return code


def main(argv=None) -> None:
    """The ``embtool`` entry point: run the command line and exit with its status."""
    sys.exit(run(argv))


def run(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    The one error boundary: library errors become one ``Error: ...`` line and status 1, usage
    errors status 2.  Tests call this in-process (``tests/helpers.invoke``).
    """
    from ..errors import EmbtoolError

    try:
        rv = cli.main(args=argv, prog_name="embtool", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        return _fail("aborted")
    except EmbtoolError as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours; keep Python from complaining.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        click.echo("Interrupted", err=True)
        return 130
    except MemoryError:
        return _fail("out of memory")
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")
    except Exception as exc:  # pragma: no cover - a bug: say so in one line
        if os.environ.get("EMBTOOL_DEBUG"):
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (set EMBTOOL_DEBUG=1 for a traceback)")
    return rv if isinstance(rv, int) else 0
