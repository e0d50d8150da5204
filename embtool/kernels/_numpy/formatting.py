"""Vectors as text, ``str(numpy.float32(v))`` per value (numpy twin of ``_numba/formatting.py``)."""
from __future__ import annotations

import numpy as np


def format_rows(vec, key_data, key_off, out):
    """Write ``key v1 .. vdim\\n`` for each row into ``out`` (uint8, large enough for
    ``key bytes + rows * (dim * MAX_VALUE_CHARS + 2)``); return the bytes written.  Values are
    ``str(numpy.float32(v))`` -- the shortest repr that round-trips float32, as gensim writes --
    or ``str(numpy.float64(v))`` for float64 rows."""
    lines = []
    for r in range(len(vec)):
        key = key_data[key_off[r]:key_off[r + 1]].tobytes()
        lines.append(key + b" " + " ".join(map(str, vec[r])).encode("ascii") + b"\n")
    data = b"".join(lines)
    out[:len(data)] = np.frombuffer(data, np.uint8)
    return len(data)
