"""A read-only install: a command that compiles Numba kernels works for a user whose cache is
empty, without a warning, and its second run loads the kernels from the cache instead of compiling.

The package is laid out as pip installs it (its folder, with compiled bytecode, on ``sys.path``)
and made read-only.  The commands run in fresh processes with ``NUMBA_DEBUG_CACHE=1``, which
makes Numba print on stdout each kernel it saves to or loads from its cache.  Root ignores file
permissions, so as root the commands run without the capabilities that let it (the interpreter
may not be reachable for another uid).
"""
from __future__ import annotations

import compileall
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import make_table

ROOT = Path(__file__).resolve().parents[1]
AS_A_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"] \
    if os.geteuid() == 0 else []

pytestmark = pytest.mark.slow


@pytest.fixture
def read_only_install(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(ROOT / "embtool", site / "embtool", ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(site, quiet=1)
    for path in [site, *site.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    yield site
    for path in [site, *site.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def lookup_twice(tmp_path, site, home):
    table = make_table(tmp_path / "t.safetensors", np.ones((50, 8), np.float32))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_"))}
    (tmp_path / "tmp").mkdir()
    env.update(PYTHONPATH=str(site), HOME=str(home), TMPDIR=str(tmp_path / "tmp"),
               NUMBA_DEBUG_CACHE="1", EMBTOOL_BACKEND="numba")
    runs = []
    for _ in range(2):
        out = tmp_path / "out.npy"
        out.unlink(missing_ok=True)
        proc = subprocess.run([*AS_A_USER, sys.executable, "-m", "embtool", "lookup", table, "1", "2",
                               "-f", "npy", "-o", out], env=env, capture_output=True, text=True,
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""  # no warning
        assert np.load(out).tolist() == [[1.0] * 8] * 2
        runs.append(proc.stdout)
    return runs


def test_user_cache_serves_a_read_only_install(tmp_path, read_only_install):
    home = tmp_path / "home"
    home.mkdir()
    first, second = lookup_twice(tmp_path, read_only_install, home)
    assert "data saved to" in first and str(home / ".cache" / "numba") in first
    assert "data loaded from" in second and "data saved" not in second


def test_no_writable_home_caches_in_a_private_temporary_folder(tmp_path, read_only_install):
    home = tmp_path / "nohome"
    home.mkdir(mode=0o555)
    first, second = lookup_twice(tmp_path, read_only_install, home)
    assert "data saved to" in first and str(tmp_path / "tmp" / "embtool-numba-") in first
    assert "data loaded from" in second and "data saved" not in second
