"""The Numba backend: every kernel, as a plain attribute (the twin of ``numpy_kernels``).

Importing this module imports Numba (~0.3 s); ``embtool.kernels.choose`` does it only for jobs
large enough to pay for it.  Kernels compile on first use, for the argument types of that call
only, and are cached on disk (see ``_numba/__init__.py`` for where).
"""
from __future__ import annotations

from embtool.kernels._numba.backward import group_rows, scatter_rows
from embtool.kernels._numba.bag import bag_max, bag_sum, bag_weighted_sum
from embtool.kernels._numba.binary import scan_records
from embtool.kernels._numba.formatting import format_rows
from embtool.kernels._numba.intrinsics import fma32_array as fma32
from embtool.kernels._numba.lookup import gather, renorm_ids, renorm_rows, row_norms
from embtool.kernels._numba.optim import (
    adagrad_rows, adam_rows, sgd_rows, sgd_segment_rows, sparse_adam_rows,
)
from embtool.kernels._numba.parse import count_rows, parse_rows, parse_tokens
from embtool.kernels._numba.topk import select

NAME = "numba"
