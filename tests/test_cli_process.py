"""What only a real process shows: the entry point's exit codes, a closed pipe (every command ends
as ``cat`` does: killed by SIGPIPE, status 141 in the shell, nothing on stderr), the permissions of
the files written under a umask, and the modules a small command does not import."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_single_error_line, make_table, run

SAMPLES = Path(__file__).parent.parent / "sample_data"
EMBTOOL = [sys.executable, "-m", "embtool"]


def test_entry_point_exit_codes(tmp_path):
    r = run("--version")
    assert r.code == 0 and "embtool" in r.out
    assert run("nonsense").code == 2
    assert run("lookup").code == 2
    assert_single_error_line(run("info", tmp_path / "nope.safetensors"), "nope.safetensors", "No such file")
    r = run("lookup", tmp_path / "nope.safetensors", "-w", "-lrb-")
    assert r.code == 2 and "-- -lrb-" in r.err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    glove = d / "g.safetensors"
    assert run("load-pretrained", SAMPLES / "small.glove.txt", glove, "--no-freeze").code == 0
    np.save(d / "grad.npy", np.ones((2, 10), np.float32))
    (d / "ids.json").write_text("[1, 2]")
    return d, glove


COMMANDS = {
    "lookup": lambda d, g: ["lookup", g, "-w", "the", "of", "-f", "csv"],
    "similar": lambda d, g: ["similar", g, "the", "-k", 3],
    "info": lambda d, g: ["info", g],
    "export": lambda d, g: ["export", g, "-", "--format", "glove"],
    "evaluate": lambda d, g: ["evaluate", g, "--pairs", SAMPLES / "wordsim353.tsv"],
    "renorm": lambda d, g: ["renorm", g, "--max-norm", "1", "--dry-run", "-f", "json"],
    "train-step": lambda d, g: ["train-step", g, "-i", d / "ids.json", "--grad", d / "grad.npy", "-f", "json"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_closed_pipe_ends_every_command_as_cat(files, command):
    """The reader is gone before the command writes: SIGPIPE, silently, as `cat` under pipefail."""
    d, glove = files
    proc = subprocess.Popen([*EMBTOOL, *map(str, COMMANDS[command](d, glove))], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == -signal.SIGPIPE, err
    assert "Error" not in err and "Traceback" not in err and "Exception" not in err


def test_closed_pipe_status_in_the_shell(files):
    d, glove = files
    big = d / "big.safetensors"
    assert run("init", big, "-n", 50000, "-d", 16, "--seed", 0).code == 0
    script = (f"set -o pipefail; {sys.executable} -m embtool export {big} - --format glove | head -c 100 >/dev/null;"
              " echo $?")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "141" and out.stderr == ""


def _umask(mask):
    return lambda: os.umask(mask)


def test_files_get_0666_minus_umask(tmp_path):
    mask, mode = 0o027, 0o640  # neither mkstemp's 0600 nor a fixed 0644
    g = tmp_path / "g.safetensors"
    outputs = {
        g: ["load-pretrained", SAMPLES / "small.glove.txt", g],
        tmp_path / "e.safetensors": ["init", tmp_path / "e.safetensors", "-n", 3, "-d", 2],
        tmp_path / "o.vec": ["export", g, tmp_path / "o.vec"],
        tmp_path / "o.npy": ["export", g, tmp_path / "o.npy"],
        tmp_path / "o.vocab.txt": None,
        tmp_path / "rows.json": ["lookup", g, "1", "-o", tmp_path / "rows.json"],
        tmp_path / "report.json": ["renorm", g, "--max-norm", 1, "--dry-run", "-o", tmp_path / "report.json"],
    }
    for args in outputs.values():
        if args:
            r = subprocess.run([*EMBTOOL, *map(str, args)], capture_output=True, preexec_fn=_umask(mask))
            assert r.returncode == 0, r.stderr
    for path in outputs:
        assert path.stat().st_mode & 0o777 == mode, path.name


def test_replaced_file_keeps_its_mode(tmp_path):
    p = make_table(tmp_path / "t.safetensors", np.ones((3, 2), np.float32))
    out = tmp_path / "rows.json"
    out.write_text("old")
    out.chmod(0o640)
    r = subprocess.run([*EMBTOOL, "lookup", str(p), "1", "-o", str(out), "--force"], capture_output=True,
                       preexec_fn=_umask(0o077))
    assert r.returncode == 0 and out.stat().st_mode & 0o777 == 0o640
    assert json.loads(out.read_text()) == [[1.0, 1.0]]


def test_help_and_freeze_import_no_numpy(tmp_path):
    p = make_table(tmp_path / "t.safetensors", np.ones((3, 2), np.float32))
    for argv in (["--help"], ["lookup", "--help"], ["freeze", str(p)]):
        code = ("import sys, runpy; sys.argv = ['embtool', *%r]\n"
                "try:\n    runpy.run_module('embtool', run_name='__main__')\n"
                "except SystemExit:\n    pass\n"
                "print(sorted(m for m in ('numpy', 'rich', 'numba') if m in sys.modules), file=sys.stderr)") % (argv,)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.stderr.strip().splitlines()[-1] == "[]", (argv, r.stderr)
