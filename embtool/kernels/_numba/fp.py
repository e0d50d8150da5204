"""Exactly rounded float32 primitives for Numba kernels.

``fma32`` emits LLVM's ``llvm.fma.f32`` intrinsic: a hardware FMA where the CPU has one and a
correctly rounded libm ``fmaf`` otherwise, so results never depend on whether LLVM chose to
contract ``a*b + c``.  Arguments must already be float32.
"""
from __future__ import annotations

import llvmlite.ir as ir
import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

#: JIT options shared by every kernel (stumpy keeps them in one constant too).
JIT = dict(cache=True, nogil=True, error_model="numpy")  # IEEE inf/nan, no ZeroDivisionError
PJIT = dict(JIT, parallel=True)


@intrinsic
def _fma32(typingctx, a, b, c):
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f], ir.FunctionType(f, [f, f, f]))
        return builder.call(fn, args)

    return sig, codegen


@numba.njit(inline="always", **JIT)
def fma32(a, b, c):
    """Correctly rounded float32 ``a*b + c``."""
    return _fma32(numba.float32(a), numba.float32(b), numba.float32(c))


@numba.njit(**JIT)
def fma32_array(a, b, c):
    """Elementwise ``fma32`` over 1-D float32 arrays (the twin of ``_numpy.fp.fma32``)."""
    out = np.empty(a.shape[0], np.float32)
    for i in range(a.shape[0]):
        out[i] = fma32(a[i], b[i], c[i])
    return out


@intrinsic
def _prefetch(typingctx, arr, idx):
    """llvm.prefetch of ``arr.flat[idx]`` (read, high locality): hides the latency of the random
    row reads of a gather behind the copy of earlier rows."""
    sig = types.void(arr, types.intp)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p = ir.IntType(8).as_pointer()
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen
