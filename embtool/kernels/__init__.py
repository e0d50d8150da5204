"""The hot loops, written twice: a numpy backend and a Numba backend.

``numpy_kernels`` and ``numba_kernels`` are the two backends: modules whose attributes are the
kernels, with the same names, the same arguments and bit-identical results (tests/test_kernels*.py
check every kernel on both).  Kernels are internal: arrays and scalars in, no validation (the
public functions in ``ops`` and friends check inputs first).  ``common`` holds what both share.

A caller asks for the backend suited to its job and calls the kernel by name::

    K = kernels.choose(ids.size * dim)
    K.gather(weight, ids, out)

``choose`` is the one backend rule:

* ``EMBTOOL_BACKEND=numpy`` or ``=numba`` forces a backend;
* otherwise (``auto``) a job below ``NUMBA_MIN_WORK`` runs on numpy, so that a three-word lookup
  never pays for importing Numba (~0.3 s) and loading its cached kernels, and larger jobs run on
  Numba.

Work is counted in *elements*: the float values a kernel reads or writes when it gathers, reduces,
norms, scores or scatters rows.  Jobs whose numpy kernel is slower or faster per item than that
convert their size with the factors below, so that each kind of job switches to Numba where
numpy stops being the faster end to end.

A call that runs many small jobs (the steps of ``train-step --batches``) states its whole work
once, ``with kernels.call_work(total): ...``: inside, every job counts as at least that much, so
the call starts Numba once instead of paying numpy's per-element cost at every step.

The environment is read at each call so that a test can switch backends with ``monkeypatch``.

``prepare(work, warm)`` starts loading the Numba backend (and the kernels ``warm`` calls) on a
background thread, for a job that knows early that it will run on Numba and has other work to do
meanwhile: a process pays about 0.4 s for importing Numba and for its first kernel call, nearly
all of it Python holding the GIL on one core, while reading a file's first block, sizing the
output and faulting in its memory need the other core and little of the GIL.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from types import ModuleType

BACKENDS = ("numpy", "numba")
#: the kernels, by name: both backend modules have each as an attribute.
KERNELS = (
    "fma32",
    "row_norms", "renorm_rows", "renorm_ids", "gather",
    "bag_sum", "bag_weighted_sum", "bag_max",
    "group_rows", "scatter_rows",
    "sgd_rows", "adagrad_rows", "sparse_adam_rows", "adam_rows", "sgd_segment_rows",
    "select",
    "count_rows", "parse_rows", "parse_tokens", "scan_records", "format_rows",
)
#: jobs of fewer elements run on numpy.
NUMBA_MIN_WORK = 1 << 18

#: elements per byte of vector text parsed (the numpy parser reads ~15 MB/s: files from ~8 MB up
#: are parsed by Numba).
PER_TEXT_BYTE = 1 / 32
#: elements per value formatted as text (numpy's ``str`` costs ~0.45 us a value: Numba from
#: ~1M values).
PER_FORMATTED_VALUE = 1 / 4
#: elements per float32 value of an optimizer or gradient row update: the numpy row kernels do a
#: few vector operations per value and stay ahead of Numba's import and cache load for 16x more
#: values than a gather (a sparse step of 10k ids x 128 takes 0.1-0.17 s on numpy, 0.45 s on
#: Numba end to end).
PER_ROW_UPDATE = 1 / 16


#: the work of the whole call being run (``call_work``): no job of it counts as less
_CALL_WORK: contextvars.ContextVar[float] = contextvars.ContextVar("embtool_call_work", default=0.0)


@contextlib.contextmanager
def call_work(work: float):
    """Within the block, choose backends as for jobs of at least ``work`` elements."""
    token = _CALL_WORK.set(max(_CALL_WORK.get(), float(work)))
    try:
        yield
    finally:
        _CALL_WORK.reset(token)


def backend_name(work: float | None = None) -> str:
    """``"numpy"`` or ``"numba"``: the backend a job of ``work`` elements runs on (``None``:
    a large job)."""
    choice = os.environ.get("EMBTOOL_BACKEND", "auto").strip().lower() or "auto"
    if choice in BACKENDS:
        return choice
    if choice != "auto":
        from embtool.errors import ConfigError

        raise ConfigError(f"EMBTOOL_BACKEND must be numpy, numba or auto, not {choice!r}")
    if work is not None and max(work, _CALL_WORK.get()) < NUMBA_MIN_WORK:
        return "numpy"
    return "numba"


def choose(work: float | None = None) -> ModuleType:
    """The kernels (``numpy_kernels`` or ``numba_kernels``) for a job of ``work`` elements."""
    return backend(backend_name(work))


def backend(name: str) -> ModuleType:
    """The kernels of the backend called ``name`` (``"numpy"`` or ``"numba"``)."""
    if name == "numba":
        from embtool.kernels import numba_kernels  # imports Numba: only when a job needs it

        return numba_kernels
    from embtool.kernels import numpy_kernels

    return numpy_kernels


def prepare(work: float | None, warm=None) -> threading.Thread | None:
    """Start importing the backend ``choose(work)`` will give, and calling ``warm(kernels)`` (tiny
    calls that load the compiled kernels a job will use from Numba's cache), on a background
    thread; ``choose`` then finds the module imported, or waits for its import to end, and the
    kernels loaded.  Returns the thread (alive while Numba starts), or None: nothing happens for
    a job that runs on numpy (small jobs never import Numba), nor when the Numba backend is
    imported already (the process paid its start-up).  A failure on the thread is ignored: the
    job's own import or call reports it."""
    if backend_name(work) != "numba" or "embtool.kernels.numba_kernels" in sys.modules:
        return None

    def load():
        try:
            from embtool.kernels import numba_kernels

            if warm is not None:
                warm(numba_kernels)
        except BaseException:  # noqa: BLE001 - reported by the job itself, on its own thread
            pass

    # Not a daemon: the interpreter's exit waits for it (an early error of the job), rather
    # than stopping a thread in the middle of loading LLVM.
    thread = threading.Thread(target=load, name="embtool-numba-start")
    thread.start()
    return thread
