"""The numpy backend: every kernel, as a plain attribute (the twin of ``numba_kernels``).

Each kernel's contract is the docstring of its numpy implementation.
"""
from __future__ import annotations

from embtool.kernels._numpy.backward import group_rows, scatter_rows
from embtool.kernels._numpy.bag import bag_max, bag_sum, bag_weighted_sum
from embtool.kernels._numpy.binary import scan_records
from embtool.kernels._numpy.formatting import format_rows
from embtool.kernels._numpy.lookup import gather, renorm_ids, renorm_rows, row_norms
from embtool.kernels._numpy.optim import (
    adagrad_rows, adam_rows, sgd_rows, sgd_segment_rows, sparse_adam_rows,
)
from embtool.kernels._numpy.parse import count_rows, parse_rows, parse_tokens
from embtool.kernels._numpy.topk import select
from embtool.kernels.common import fma32

NAME = "numpy"
