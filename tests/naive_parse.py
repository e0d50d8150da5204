"""Slow, obviously correct references for the vector-file parser and writer.

Lines are split on b"\\n", stripped of trailing ``bytes.isspace()`` bytes, blank lines skipped,
fields split on b" "; the last ``dim`` fields are the vector (each ``dtype(float(token))``) and
the rest, joined by spaces, is the word.  Values are written as ``str(numpy.float32(v))``.
"""
from __future__ import annotations

import numpy as np

WS = b" \t\r\x0b\x0c"


def rows(data: bytes):
    """(line number, stripped line) of every non-blank line."""
    out = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for no, line in enumerate(lines, 1):
        line = line.rstrip(WS)
        if line:
            out.append((no, line))
    return out


def parse_rows(lines, dim, dtype=np.float32):
    """Words (bytes) and a (rows x dim) array of ``dtype(float(token))``."""
    words, values = [], []
    for _, line in lines:
        fields = line.split(b" ")
        assert len(fields) > dim, line
        words.append(b" ".join(fields[:-dim]))
        values.append([float(t) for t in fields[-dim:]])
    with np.errstate(over="ignore"):
        arr = np.array(values, dtype=np.float64).reshape(len(values), dim).astype(dtype)
    return words, arr


def parse_glove(data: bytes, dtype=np.float32):
    lines = rows(data)
    dim = len(lines[0][1].split(b" ")) - 1
    return parse_rows(lines, dim, dtype)


def parse_word2vec(data: bytes, dtype=np.float32):
    lines = rows(data)
    count, dim = (int(x) for x in lines[0][1].split())
    return parse_rows(lines[1:1 + count], dim, dtype)


def parse_binary(data: bytes):
    """word2vec binary: header, then (optional newlines, word, space, dim float32) records."""
    end = data.index(b"\n")
    count, dim = (int(x) for x in data[:end].split())
    pos = end + 1
    words, values = [], []
    for _ in range(count):
        while data[pos:pos + 1] == b"\n" or data[pos:pos + 2] == b"\r\n":
            pos += 1 if data[pos:pos + 1] == b"\n" else 2
        sp = data.index(b" ", pos)
        words.append(data[pos:sp])
        values.append(np.frombuffer(data[sp + 1:sp + 1 + 4 * dim], "<f4"))
        pos = sp + 1 + 4 * dim
    return words, np.array(values, np.float32).reshape(count, dim)


def format_text(words, vectors, header: bool) -> bytes:
    out = []
    if header:
        out.append(f"{len(words)} {vectors.shape[1]}\n")
    for w, row in zip(words, vectors):
        out.append(w + " " + " ".join(str(np.float32(v)) for v in row) + "\n")
    return "".join(out).encode("utf-8")


def tokens_value(token: bytes) -> float:
    """The reference for one token: ``float(token)``."""
    return float(token)
