"""Every dtype a safetensors header can name, and what embtool does with each: the one table.

safetensors names its dtypes by strings (``F32``, ``BF16``, ``F8_E4M3`` ...).  Each known name has
an element size in bits and, where numpy has a matching type, the numpy dtype of a zero-copy view
of the stored bytes (BF16 and the float8 types are viewed as unsigned integers: their bits).

Roles:

* ``TABLE_DTYPES``: the dtypes a table is stored and trained in (F32, F64, F16, BF16); values are
  computed in ``value_dtype`` (BF16 in float32: widened exactly, rounded to nearest even back).
* ``WIDENED``: dtypes a read-only command uses as a float32 table, widened on read: integer
  tensors (a model2vec ``quantize_to="int8"`` model stores its vectors as I8) and the float8
  types (exact: every float8 value is a float32).  Integers above 2**24 in magnitude round to
  the nearest float32.  Writing commands refuse them (load the table first).
* every other name (BOOL, C64, sub-byte floats, and any dtype a later safetensors adds) is listed
  by ``info`` and never blocks the file; only a tensor of it cannot be used as a table.

No numpy at module level: ``freeze`` / ``unfreeze`` read headers through this table and must not
pay for numpy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: safetensors dtype -> (bits per element, numpy dtype of the raw view or None when numpy has
#: none).  The sub-byte float types come from the OCP microscaling formats safetensors lists.
SAFETENSORS: dict[str, tuple[int, str | None]] = {
    "BOOL": (8, "?"),
    "U8": (8, "u1"), "I8": (8, "i1"),
    "F8_E4M3": (8, "u1"), "F8_E5M2": (8, "u1"), "F8_E8M0": (8, "u1"),
    "I16": (16, "<i2"), "U16": (16, "<u2"), "F16": (16, "<f2"), "BF16": (16, "<u2"),
    "I32": (32, "<i4"), "U32": (32, "<u4"), "F32": (32, "<f4"),
    "I64": (64, "<i8"), "U64": (64, "<u8"), "F64": (64, "<f8"), "C64": (64, "<c8"),
    "F4": (4, None), "F6_E2M3": (6, None), "F6_E3M2": (6, None),
}

#: stored and trained table dtypes, and the numpy dtype their values are computed in
TABLE_DTYPES = ("F32", "F64", "F16", "BF16")
_VALUE = {"F32": "float32", "F64": "float64", "F16": "float16", "BF16": "float32"}
#: read as float32 tables (widened on read)
INTEGERS = ("I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64")
FLOAT8 = ("F8_E4M3", "F8_E5M2", "F8_E8M0")
WIDENED = INTEGERS + FLOAT8
READABLE_AS_TABLE = TABLE_DTYPES + WIDENED

#: user-facing names (CLI ``--dtype``, library ``dtype=``) of the table dtypes
NAMES = {"F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16"}
ALIASES = {"float32": "F32", "f32": "F32", "float64": "F64", "f64": "F64", "float16": "F16",
           "f16": "F16", "half": "F16", "bfloat16": "BF16", "bf16": "BF16"}
#: numpy dtype name -> safetensors dtype, for arrays written as they are
FROM_NUMPY = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16",
    "uint8": "U8", "bool": "BOOL", "complex64": "C64",
}


def code(name: str) -> str:
    """The safetensors code of a user-facing table dtype name (``float32``, ``bf16``, ``F16``...)."""
    from .errors import ConfigError

    if name in TABLE_DTYPES:
        return name
    try:
        return ALIASES[name.lower()]
    except (KeyError, AttributeError):
        raise ConfigError(f"dtype must be one of {', '.join(NAMES.values())}, not {name!r}") from None


def bits(dtype: str) -> int | None:
    """Bits per element, None for a dtype this table does not know."""
    known = SAFETENSORS.get(dtype)
    return known[0] if known else None


def nbytes(dtype: str, shape) -> int | None:
    """Bytes of a tensor (sub-byte types rounded up), None for an unknown dtype."""
    b = bits(dtype)
    if b is None:
        return None
    n = 1
    for s in shape:
        n *= s
    return (n * b + 7) // 8


def raw_numpy(dtype: str) -> str | None:
    """numpy dtype of a zero-copy view of the stored bytes, or None."""
    known = SAFETENSORS.get(dtype)
    return known[1] if known else None


def value_dtype(dtype: str) -> "np.dtype":
    """The numpy dtype a table's values are computed in (widened dtypes: float32)."""
    import numpy as np

    return np.dtype(_VALUE.get(dtype, "float32"))


def describe_widening(dtype: str) -> str | None:
    """A note for summaries when a tensor of ``dtype`` is used as float32, else None."""
    if dtype in INTEGERS:
        return f"{dtype} values used as float32 (widened)"
    if dtype in FLOAT8:
        return f"{dtype} values widened exactly to float32"
    return None


# --------------------------------------------------------------------------------------------
# Conversions (numpy imported on use)


def bf16_to_f32(raw: "np.ndarray") -> "np.ndarray":
    """Exact widening: a bfloat16 is the top half of a float32."""
    import numpy as np

    return (np.asarray(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values: "np.ndarray") -> "np.ndarray":
    """Round float32 to bfloat16 bits, to nearest even (as torch's ``.to(torch.bfloat16)``)."""
    import numpy as np

    u = np.ascontiguousarray(values, np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.ascontiguousarray(values, np.float32))
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)


_FLOAT8_TABLES: dict[str, "np.ndarray"] = {}


def _float8_table(dtype: str) -> "np.ndarray":
    """float32 value of each of the 256 bit patterns (OCP FP8: E4M3 "fn" has no infinity and
    one NaN pattern per sign; E5M2 is IEEE-like; E8M0 is an unsigned power of two, 0xFF NaN)."""
    import numpy as np

    if dtype not in _FLOAT8_TABLES:
        b = np.arange(256, dtype=np.int64)
        if dtype == "F8_E8M0":
            v = np.ldexp(1.0, b - 127)
            v[255] = np.nan
        else:
            ebits, mbits, bias = (4, 3, 7) if dtype == "F8_E4M3" else (5, 2, 15)
            sign = np.where(b >> 7, -1.0, 1.0)
            e = (b >> mbits) & ((1 << ebits) - 1)
            m = b & ((1 << mbits) - 1)
            normal = np.ldexp(1.0 + m / (1 << mbits), e - bias)
            sub = np.ldexp(m / (1 << mbits), 1 - bias)
            v = sign * np.where(e == 0, sub, normal)
            top = e == (1 << ebits) - 1
            if dtype == "F8_E4M3":
                v[top & (m == 7)] = np.nan
            else:
                v[top] = np.where(m[top] == 0, sign[top] * np.inf, np.nan)
        _FLOAT8_TABLES[dtype] = v.astype(np.float32)
    return _FLOAT8_TABLES[dtype]


def widen(raw: "np.ndarray", dtype: str) -> "np.ndarray":
    """Stored bits/values of ``dtype`` as the values a table computes with: F32/F64/F16 as they
    are (no copy), BF16 and float8 widened exactly to float32, integers converted to float32."""
    import numpy as np

    if dtype in ("F32", "F64", "F16"):
        return raw
    if dtype == "BF16":
        return bf16_to_f32(raw)
    if dtype in FLOAT8:
        return _float8_table(dtype)[np.asarray(raw, np.uint8)]
    if dtype in INTEGERS:
        return np.asarray(raw).astype(np.float32)
    from .errors import FormatError

    raise FormatError(f"dtype {dtype} cannot be used as a table")


def to_storage(values: "np.ndarray", dtype: str) -> "np.ndarray":
    """Values (computed in ``value_dtype(dtype)``) as the bits stored for a table dtype."""
    import numpy as np

    if dtype == "BF16":
        return f32_to_bf16(values)
    return np.ascontiguousarray(values, value_dtype(dtype))
