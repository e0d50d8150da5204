"""Shared fixtures: both kernel backends, optional oracles, an isolated environment."""
from __future__ import annotations

import itertools
import os

import pytest

from embtool import kernels

_TEST_NUMBER = itertools.count()


@pytest.fixture(scope="session")
def _cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, _cache_root):
    """Every test starts with the default backend selection, no colour, and an empty cache
    directory of its own (the row-norms cache, ``embtool.norms``), also for its subprocesses."""
    monkeypatch.delenv("EMBTOOL_BACKEND", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("EMBTOOL_CACHE_DIR", str(_cache_root / str(next(_TEST_NUMBER))))


@pytest.fixture(params=kernels.BACKENDS)
def backend(request, monkeypatch):
    """Run the test once per kernel backend (numpy, numba); both must give the same numbers."""
    monkeypatch.setenv("EMBTOOL_BACKEND", request.param)
    return request.param


def _oracle(name):
    try:
        return pytest.importorskip(name) if not os.environ.get("CI") else __import__(name)
    except ImportError:  # pragma: no cover - in CI the oracles must be installed
        raise


@pytest.fixture
def torch():
    """PyTorch as a live oracle. Skipped when absent locally; required in CI (.ci/run installs it)."""
    return _oracle("torch")


@pytest.fixture
def gensim():
    """gensim as a live oracle. Skipped when absent locally; required in CI."""
    return _oracle("gensim")
