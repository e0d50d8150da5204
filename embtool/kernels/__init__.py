"""Backend selection for the hot loops.

Every kernel exists twice with the same name and signature: a pure-numpy version in
``embtool.kernels._numpy.<domain>`` and a Numba version in ``embtool.kernels._numba.<domain>``.
Kernels are private: arrays and scalars in, no validation (the public functions in ``ops`` and
friends check inputs first), results bit-identical between the two backends.

``get("domain.name", work)`` picks one:

* ``EMBTOOL_BACKEND=numpy`` or ``=numba`` forces a backend (the tests run both);
* otherwise (``auto``) small jobs (``work`` below ``NUMBA_MIN_WORK`` elements) use numpy so that
  a three-word lookup never pays for importing Numba (~0.3 s) or loading its cache, and large
  jobs use Numba when it is importable.

The environment is read at each call so a test can switch backends with ``monkeypatch``.
"""
from __future__ import annotations

import importlib
import os

BACKENDS = ("numpy", "numba")
#: below this many elements of work, numpy is faster end to end than importing Numba.
NUMBA_MIN_WORK = 1 << 18

_numba_ok: bool | None = None


def numba_available() -> bool:
    global _numba_ok
    if _numba_ok is None:
        try:
            importlib.import_module("numba")
            _numba_ok = True
        except Exception:  # pragma: no cover - numba is a runtime dependency
            _numba_ok = False
    return _numba_ok


def backend_for(work: int | None = None) -> str:
    """The backend a job of ``work`` elements runs on."""
    choice = os.environ.get("EMBTOOL_BACKEND", "auto").strip().lower() or "auto"
    if choice in BACKENDS:
        return choice
    if choice != "auto":
        from embtool.errors import ConfigError

        raise ConfigError(f"EMBTOOL_BACKEND must be numpy, numba or auto, not {choice!r}")
    if work is not None and work < NUMBA_MIN_WORK:
        return "numpy"
    return "numba" if numba_available() else "numpy"


def get(name: str, work: int | None = None, backend: str | None = None):
    """The kernel ``domain.name`` of the chosen backend."""
    domain, _, func = name.partition(".")
    backend = backend or backend_for(work)
    module = importlib.import_module(f"embtool.kernels._{backend}.{domain}")
    return getattr(module, func)
