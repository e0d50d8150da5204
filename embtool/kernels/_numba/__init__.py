"""Numba kernels, one module per domain; twins of ``embtool.kernels._numpy``.

Importing this package imports Numba: only ``embtool.kernels.get`` should do it.
"""
