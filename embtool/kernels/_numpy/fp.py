"""Exactly rounded float32 primitives in numpy.

PyTorch's CPU kernels use fused multiply-add (one rounding) in many places
(docs/semantics.md §3.2, §5.1, §6.2).  numpy has no fma, so ``fma32`` computes it exactly:
the float64 product of two float32 values is exact (48-bit significand); the float64 sum rounded
to float32 is the fma except when it double-rounds, which can only happen when the float64 sum is
exactly a float32 midpoint (or subnormal): those values are redone with round-to-odd.
"""
from __future__ import annotations

import numpy as np

f32 = np.float32
f64 = np.float64


def fma32(a, b, c):
    """Correctly rounded float32 ``a*b + c`` (broadcasting, float32 inputs)."""
    p = np.multiply(np.asarray(a, f32), np.asarray(b, f32), dtype=f64)  # exact
    s = p + np.asarray(c, f32)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.atleast_1d(s.astype(f32))
    # Rounding the float64 sum to float32 can only go wrong (double rounding) when the sum landed
    # exactly halfway between two float32 values (the 29 bits float32 drops are 1000...0), or in
    # float32's subnormal range where fewer bits are kept: only those few values take the exact path.
    s1 = np.atleast_1d(s)
    bits = s1.view(np.int64)
    suspect = ((bits & 0x1FFFFFFF) == 0x10000000) | (np.abs(s1) < 2.0**-125)
    if suspect.any():
        pa, cb = np.broadcast_arrays(np.atleast_1d(p), np.atleast_1d(np.asarray(c, f32)))
        out = out.copy() if not out.flags.writeable else out
        out[suspect] = _fma32_exact(pa[suspect], cb[suspect].astype(f64))
    return out.reshape(np.shape(s))


def _fma32_exact(p, c64):
    """float32(p + c64) correctly rounded, for exact float64 products ``p``: the float64 sum is made
    round-to-odd with a TwoSum error term, and rounding a round-to-odd float64 to float32 is
    correct because 53 >= 24 + 2."""
    s = p + c64
    with np.errstate(invalid="ignore", over="ignore"):
        bb = s - p
        e = (p - (s - bb)) + (c64 - bb)
        bits = s.view(np.int64).copy()
        inexact = np.isfinite(e) & (e != 0) & ((bits & 1) == 0)
        away = (e > 0) == (s > 0)
        bits[inexact] += np.where(away[inexact], 1, -1)  # one float64 ulp towards the exact value
        return bits.view(f64).astype(f32)


def round32(x) -> np.float32:
    """A Python float (double) rounded to float32, as ATen converts scalar arguments."""
    return f32(x)


def _load_powf():
    import ctypes
    import ctypes.util

    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        fn = libm.powf
    except (OSError, AttributeError):  # pragma: no cover - every Linux/macOS libc has powf
        return None
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float, ctypes.c_float]
    return fn


_powf = _load_powf()


def powf(x, p):
    """The C library's ``powf`` elementwise (torch's non-2 norms use it; numpy's float32 power is a
    SIMD routine that differs in the last bit for ~20% of inputs).

    float64 ``pow`` rounded to float32 agrees with glibc's powf except where the exact value lies
    very near a float32 rounding boundary (about 0.07% of inputs); those few elements are
    recomputed by calling ``powf`` itself through ctypes.
    """
    x = np.asarray(x, f32)
    p = f32(p)
    with np.errstate(all="ignore"):
        r64 = np.power(x.astype(f64), f64(p))
        r = r64.astype(f32)
        if _powf is None:
            return r
        # Distance to the nearest float32 rounding boundary (midpoint), relative to the value.
        up = np.nextafter(r, f32(np.inf)).astype(f64)
        down = np.nextafter(r, f32(-np.inf)).astype(f64)
        r_64 = r.astype(f64)
        gap = np.minimum(np.abs(r64 - (r_64 + up) / 2), np.abs(r64 - (r_64 + down) / 2))
        near = np.isfinite(r64) & (gap <= np.abs(r64) * 2.0**-28)
    if near.any():
        flat_r = r.reshape(-1)
        for i in np.flatnonzero(near.reshape(-1)):
            flat_r[i] = _powf(float(x.reshape(-1)[i]), float(p))
    return r


fma32_array = fma32
