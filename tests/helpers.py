"""Helpers shared by the tests: running the real command line, making tables."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Result:
    code: int
    out: str
    err: str
    stdout_bytes: bytes


def run(*args, input: bytes | str | None = None, env: dict | None = None, cwd=None) -> Result:
    """Run ``python -m embtool ARGS`` as a user would (real entry point, real exit code)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    if isinstance(input, str):
        input = input.encode()
    proc = subprocess.run([sys.executable, "-m", "embtool", *map(str, args)], input=input,
                          capture_output=True, env=full_env, cwd=cwd,
                          stdin=None if input is not None else subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                  proc.stderr.decode("utf-8", "replace"), proc.stdout)


def invoke(*args, input: bytes | str | None = None, env: dict | None = None) -> Result:
    """Run ``embtool ARGS`` in this process (click's isolation: captured stdin/stdout/stderr and
    environment) through the same error boundary as the real entry point: the same exit code and
    the same ``Error:`` line as ``run``, without the cost of a new interpreter."""
    from click.testing import CliRunner

    from embtool.cli import run as run_cli

    with CliRunner().isolation(input=input, env=env) as (out, err, _):
        code = run_cli([str(a) for a in args])
        sys.stdout.flush()
        sys.stderr.flush()
        stdout_bytes, stderr_bytes = out.getvalue(), err.getvalue()
    return Result(code, stdout_bytes.decode("utf-8", "replace"), stderr_bytes.decode("utf-8", "replace"),
                  stdout_bytes)


def make_table(path: Path, weight: np.ndarray, **config) -> Path:
    """Write a table with the given weight (values) and nn.Embedding config."""
    from embtool.table import Config, create

    dtype = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("float16"): "F16"}[weight.dtype]
    create(path, {"weight": weight}, Config(**config), weight_dtype=config.pop("dtype", dtype), force=True)
    return path


def assert_single_error_line(result: Result, *needles: str, code: int = 1) -> None:
    assert result.code == code, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("Error: "), result.err
    assert "Traceback" not in result.err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def kill_at_random_instants(start, prepare, state, before, after, duration, *, seed, trials=16):
    """Run ``prepare()`` then ``start()`` (a Popen), SIGKILL it after a random delay, and require
    ``state()`` to equal ``before`` or ``after``; ``trials`` times.  Returns the outcome counts and
    how many kills landed while the process was still running (must be some).

    The delays are drawn from the last three quarters of a full run (``duration``): the first
    quarter is the interpreter starting and importing, before any file is opened, where a kill
    can only find the state before (every write operation is also killed deterministically, in
    test_store_processes and test_store_powerloss).  A run that finished before its kill was
    faster than ``duration`` (the measured run compiled kernels or filled caches the later ones
    find ready), so later delays are drawn from its length; trials continue, up to twice as
    many, until a kill has landed while a command ran."""
    import random
    import signal
    import time

    outcomes = {"before": 0, "after": 0}
    killed_running = 0
    rnd = random.Random(seed)
    done = 0
    while done < trials or (killed_running == 0 and done < 2 * trials):
        done += 1
        prepare()
        proc = start()
        delay = rnd.uniform(duration / 4, duration)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        if proc.wait(timeout=120) == -signal.SIGKILL:
            killed_running += 1
        else:
            duration = delay  # it took less than that
        now = state()
        assert now in (before, after), "the table is neither the state before nor after the command"
        outcomes["before" if now == before else "after"] += 1
    assert killed_running > 0  # the kills did land while the command was running
    return outcomes, killed_running
