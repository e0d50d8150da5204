"""Pure-numpy kernels, one module per domain; twins of ``embtool.kernels._numba``."""
