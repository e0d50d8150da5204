"""The ``embtool`` command: click commands over the library, and the one error boundary.

Every command module registers its commands on ``cli``; ``run`` turns library errors into one
``Error: ...`` line and exit code 1, usage errors into exit code 2, and never shows a traceback
(set ``EMBTOOL_DEBUG=1`` to see one for an unexpected internal error).

A closed pipe (``embtool export T - | head``) ends a command as it ends ``cat``: killed by
SIGPIPE, silently, status 141 in the shell (``main`` restores the signal's default action, which
Python replaces by an exception); in-process (``run``) the same case returns 141.
"""
from __future__ import annotations

import gc
import os
import signal
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


from . import tables, pretrained, train, query, shards  # noqa: E402,F401  (register the commands, in order)

#: the shell's status for a process killed by SIGPIPE (128 + 13)
SIGPIPE_STATUS = 141


#: characters that end a line for str.splitlines(); a message quoting a word or a file name
#: shows them escaped, so that an error is always one line
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def _fail(message: str, code: int = 1) -> int:
    click.echo(f"Error: {message.translate(_LINE_BREAKS)}", err=True)
    return code


def main(argv=None) -> None:
    """The ``embtool`` entry point: run the command line and exit with its status."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    status = run(argv)
    # The interpreter's exit collects garbage over every object still alive, again and again as
    # it clears the modules: after a command that used Numba (some 100,000 objects) that took
    # 0.1-0.2 s, a fifth of a whole `load-pretrained`.  The command is done (its files written
    # and closed), so nothing left needs the collector: the objects alive now are exempted from
    # it; the exit still runs atexit handlers, flushes the streams and frees the modules.
    gc.freeze()
    sys.exit(status)


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
        # The reader went away (`| head`) where SIGPIPE is ignored: status as if killed by it;
        # stdout goes nowhere so that Python's final flush does not complain.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is no file (in-process runs)
            pass
        return SIGPIPE_STATUS
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
