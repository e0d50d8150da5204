"""Numba kernels, one module per domain; twins of ``embtool.kernels._numpy``.

Importing this package imports Numba: only ``embtool.kernels.numba_kernels`` should do it.

Every fresh install compiles each kernel on its first use (then loads it from Numba's disk cache),
so the kernels are written to compile fast (``benchmarks/bench_cold.py --kernels`` shows where the
time goes):

* no ``parallel=True``: a parallel loop is a serial kernel over a slice, run on threads
  (``threads.py``); compiling a ``prange`` loop cost 1.5-12 s per kernel;
* helpers (functions only kernels call) are compiled with ``HELPER``: no cache entry or Python
  wrappers of their own;
* ``inline="always"`` only for helpers of a few lines: Numba copies the callee's whole IR at
  every call site, which cost seconds for the number scanner; a hot loop is written once, in the
  function that runs it (``_scan_values`` in ``parse.py``, ``_format_slice``);
* no compiled sorts, reductions along an axis, ``reshape`` or ``min()`` of tuples (each pulls in
  Numba library code of its own);
* a kernel compiles one specialisation per argument types, so callers pass the same types (int64
  scalars, C-contiguous arrays, tables and text read-only: ``readonly``), and code a call does
  not need lives in a separate kernel that compiles only when needed (the text parser's general
  rule, norms other than the 2-norm).

Where the compiled kernels are cached: ``NUMBA_CACHE_DIR`` if set, else next to the sources
(``__pycache__``), else the user's cache folder (``$XDG_CACHE_HOME/numba``, ``~/.cache/numba``
on Linux): Numba's own order, which serves a read-only install.  When none of those is
writable (a read-only install run by a user without a writable home, as in many containers),
Numba would refuse to compile cached kernels at all; they are then cached in a private folder
of the temporary directory, or not cached.
"""
from __future__ import annotations

import os
import sys
import tempfile

import numba


def _writable(folder: str) -> bool:
    """Whether files can be created in ``folder`` (made if missing), as Numba checks it."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def _private_folder(folder: str) -> bool:
    """Whether ``folder`` exists (made if missing) as ours alone: a cache holds pickles, which
    must not come from another user."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return False
    return st.st_uid == os.getuid() and (st.st_mode & 0o777) == 0o700 and _writable(folder)


def _cache_location() -> bool:
    """Choose where kernels are cached (module docstring); False if nowhere."""
    if numba.config.CACHE_DIR or numba.config.DISABLE_JIT:
        return True
    from numba.misc.appdirs import AppDirs  # the user cache folder Numba itself uses

    user = AppDirs(appname="numba", appauthor=False).user_cache_dir
    if _writable(os.path.join(os.path.dirname(__file__), "__pycache__")) or _writable(user):
        return True
    fallback = os.path.join(tempfile.gettempdir(), f"embtool-numba-{os.getuid()}")
    if _private_folder(fallback):
        numba.config.CACHE_DIR = fallback
        return True
    return False


def _import_array_support_without_blas_probe() -> None:
    """Import Numba's array implementations (the first kernel call would) without their probe for
    scipy's BLAS: ``numba.np.arraymath`` imports ``scipy.linalg`` to see whether ``np.dot`` & co
    may call BLAS, which costs 0.25-0.5 s on every command that runs a kernel wherever scipy is
    installed, and no kernel uses them.  The probe then finds no BLAS (``np.correlate`` would use
    Numba's own inner product); ``np.dot`` still imports scipy itself when code compiles it."""
    probe = "scipy.linalg.cython_blas"
    if "numba.np.arraymath" in sys.modules or probe in sys.modules:
        return
    sys.modules[probe] = None  # an import of it raises ImportError
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules[probe]


_import_array_support_without_blas_probe()

#: JIT options shared by every kernel (stumpy keeps them in one constant too): cached on disk,
#: callable without the GIL (threads run slices in parallel), IEEE division (inf/nan, never
#: ZeroDivisionError).
JIT = dict(cache=_cache_location(), nogil=True, error_model="numpy")
#: JIT options of a helper: a function called only by kernels.  Its code is compiled into each
#: kernel that calls it and cached with the kernel, so it needs no cache entry of its own, nor
#: the wrappers that let Python call it (compiling those cost ~0.1-0.3 s per helper).
HELPER = dict(JIT, cache=False, no_cpython_wrapper=True, no_cfunc_wrapper=True)


def readonly(a):
    """``a`` as a read-only array.  Numba compiles a kernel once per argument type, and an
    array's writability is part of its type: a kernel that only reads a table gets it read-only
    from every caller (a map of a table file is; a block in memory is made so), so it compiles
    once."""
    if not a.flags.writeable:
        return a
    view = a.view()
    view.flags.writeable = False
    return view
