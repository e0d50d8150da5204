"""Numba kernels, one module per domain; twins of ``embtool.kernels._numpy``.

Importing this package imports Numba: only ``embtool.kernels.numba_kernels`` should do it.
"""
from __future__ import annotations

#: JIT options shared by every kernel (stumpy keeps them in one constant too): cached on disk,
#: callable without the GIL (threads run chunks in parallel), IEEE division (inf/nan, never
#: ZeroDivisionError).
JIT = dict(cache=True, nogil=True, error_model="numpy")
