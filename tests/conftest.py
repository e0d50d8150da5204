"""Shared fixtures: optional oracles, an isolated environment.

Tests run once, on the default kernel backend; tests/test_kernels*.py check that every kernel of
the other backend gives the same bits.
"""
from __future__ import annotations

import itertools
import os

import pytest

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


def _oracle(name):
    try:
        return pytest.importorskip(name) if not os.environ.get("CI") else __import__(name)
    except ImportError:  # pragma: no cover - in CI the oracles must be installed
        raise


@pytest.fixture
def torch():
    """PyTorch as a live oracle. Skipped when absent locally; required in CI (.ci/run installs it)."""
    return _oracle("torch")


@pytest.fixture(scope="session")
def gensim():
    """gensim as a live oracle. Skipped when absent locally; required in CI.  Session-wide, so
    that module fixtures (a model trained with gensim) can use it."""
    return _oracle("gensim")
