"""LLVM intrinsics the Numba kernels use, each with a plain-Python fallback.

With ``NUMBA_DISABLE_JIT=1`` the kernels run as Python (coverage, debugging): an ``@intrinsic``
cannot be called from Python, so each one is replaced by a function computing the same bits.

* ``fma32(a, b, c)``: correctly rounded float32 ``a*b + c`` through ``llvm.fma.f32``, a hardware
  FMA where the CPU has one and a correctly rounded libm ``fmaf`` otherwise, so results never
  depend on whether LLVM chose to contract ``a*b + c``.
* ``prefetch(arr, i)``: ``llvm.prefetch`` of ``arr.flat[i]`` (read, high locality; a C-contiguous
  array of any shape), which hides the latency of random row reads behind the copy of earlier
  rows; a no-op in Python.  ``prefetch_l2(arr, i)`` asks for the line in the second-level cache
  only (``prefetcht1``): the bag reductions keep more rows in flight that way, as the first-level
  cache tracks few outstanding misses (measured: EmbeddingBag sum 41 ms with ``prefetch``,
  30-32 ms with ``prefetch_l2`` 24 rows ahead, on 1M random rows of 512 bytes).
* ``load_u64(buf, i)``: the 8 bytes ``buf[i:i+8]`` as a little-endian uint64, one unaligned load.
* ``ctz64(x)``: the number of trailing zero bits of a uint64 (64 for 0), one ``tzcnt``.
"""
from __future__ import annotations

import llvmlite.ir as ir
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from embtool.kernels import common
from embtool.kernels._numba import JIT


@intrinsic
def _fma32(typingctx, a, b, c):
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f], ir.FunctionType(f, [f, f, f]))
        return builder.call(fn, args)

    return sig, codegen


def _prefetch(locality: int):
    """An intrinsic prefetching ``arr.flat[idx]`` for reading with LLVM's ``locality`` (3: all
    cache levels, 2: the second level and beyond)."""
    @intrinsic
    def prefetch(typingctx, arr, idx):
        sig = types.void(arr, types.intp)

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            i8p = ir.IntType(8).as_pointer()
            ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
            builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, locality), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen

    return prefetch


prefetch = _prefetch(3)
prefetch_l2 = _prefetch(2)


@intrinsic
def load_u64(typingctx, arr, idx):
    sig = types.uint64(arr, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)

    return sig, codegen


@intrinsic
def ctz64(typingctx, x):
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(i64, [i64, ir.IntType(1)])
        fn = builder.module.declare_intrinsic("llvm.cttz", [i64], fnty)
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 0)])  # defined for 0: 64

    return sig, codegen


if numba.config.DISABLE_JIT:  # the kernels run as Python: the same bits, slowly
    def _fma32(a, b, c):  # noqa: F811
        return np.float32(common.fma32(a, b, c).item())

    def prefetch(arr, idx):  # noqa: F811
        pass

    prefetch_l2 = prefetch  # noqa: F811

    def load_u64(arr, idx):  # noqa: F811
        return np.uint64(int.from_bytes(arr[idx:idx + 8].tobytes(), "little"))

    def ctz64(x):  # noqa: F811
        x = int(x)
        return np.uint64((x & -x).bit_length() - 1 if x else 64)


@numba.njit(inline="always", **JIT)
def fma32(a, b, c):
    """Correctly rounded float32 ``a*b + c``."""
    return _fma32(numba.float32(a), numba.float32(b), numba.float32(c))


@numba.njit(**JIT)
def fma32_array(a, b, c):
    """Elementwise ``fma32`` over 1-D float32 arrays (a kernel: the twin of ``common.fma32``)."""
    out = np.empty(a.shape[0], np.float32)
    for i in range(a.shape[0]):
        out[i] = fma32(a[i], b[i], c[i])
    return out
