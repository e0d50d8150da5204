"""Which format a vector file is in, from its first bytes.

``--format auto`` (docs/semantics.md §7.7):

1. fastText ``.bin`` models (magic ``BA 16 4F 2F``) are refused (``load_pretrained`` reads them
   with ``formats.fasttext``); a ``.npy`` array (``\\x93NUMPY``) is ``npy``; safetensors files,
   checkpoint indexes, tokenizer.json files and pickles are refused naming what they are
   (``embtool.sniff``).
2. A UTF-8 BOM is skipped (and reported) when the encoding is UTF-8.
3. A header is a first line of exactly two non-negative integers ``count dim`` (separated by
   ASCII whitespace, as gensim's ``split()``; ``dim`` 0 for zero-width rows, as gensim writes
   them; ``count`` and ``dim`` at most ``MAX_COUNT`` and ``MAX_DIM``: in auto mode larger ones
   make no header).  With a header, the file is ``word2vec`` text when the next non-blank line
   is a word and ``dim`` numbers (or there is no next line), ``word2vec-binary`` when binary
   bytes follow (control bytes other than tab, LF, VT, FF, CR, or bytes that are not UTF-8) or
   the bytes fit the binary record layout, and otherwise the first line is taken as a GloVe row.
4. Without a header the file is ``glove``; NUL bytes without a header (binary data, UTF-16
   text) are an error.
"""
from __future__ import annotations

from dataclasses import dataclass

from embtool import sniff
from embtool.errors import ConfigError, FormatError
from embtool.formats.source import text_encoding
from embtool.sniff import BOM, NPY_MAGIC, is_fasttext_head  # the one home of magic bytes

FORMATS = ("auto", "glove", "word2vec", "word2vec-binary", "npy")
#: bytes.isspace() minus the line feed: what a line's end is stripped of (gensim's rstrip()).
LINE_WS = b" \t\r\x0b\x0c"
_CONTROL = frozenset(range(0, 9)) | frozenset(range(14, 32))
#: bytes of the data after the header inspected for binary content.
SNIFF = 1 << 16
#: non-blank lines of the first block used to infer a GloVe file's dimension.
DIM_SAMPLE_LINES = 1000
#: the widest dimension a word2vec header may give: far above any real embedding (the widest
#: have some thousands of values), and one row (4 MiB of float32) is always allocatable, where a
#: damaged header would otherwise ask for terabytes before the first row is read.
MAX_DIM = 1 << 20
#: the most rows a header may announce (a table has at most 2**63 - 1 rows).
MAX_COUNT = 2**63 - 1
#: header numbers have at most this many digits (int64; a longer number is not converted).
_MAX_DIGITS = 19


@dataclass
class Detected:
    format: str
    bom: bool = False
    header: tuple[int, int] | None = None
    start: int = 0        #: byte offset of the first row (after BOM and header line)
    header_lines: int = 0


def is_utf8(encoding: str) -> bool:
    """Whether ``encoding`` is UTF-8 (ConfigError when it is no text encoding at all)."""
    return text_encoding(encoding).name in ("utf-8", "utf-8-sig")


def parse_header(line: bytes) -> tuple[int, int] | None:
    """``(count, dim)`` when ``line`` is exactly two non-negative ASCII integers (a number of
    more than 19 digits is given as ``2**63``, beyond every limit, without converting it)."""
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        count, dim = (int(p) if len(p.lstrip(b"0")) <= _MAX_DIGITS else 2**63 for p in parts)
        return count, dim
    return None


def _shown(number: bytes) -> str:
    return number.decode() if len(number) <= 30 else f"{number[:12].decode()}... ({len(number)} digits)"


def looks_binary(sample: bytes) -> bool:
    """Control bytes, or bytes that are not UTF-8 (a multibyte character cut at the end of the
    sample is allowed)."""
    if any(b in _CONTROL for b in sample):
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(sample) - 3
    return False


def _binary_records_fit(head: bytes, pos: int, count: int, dim: int, whole: bool) -> bool:
    """The bytes from ``pos`` are word2vec binary records (word, space, ``4 * dim`` bytes): two
    complete records, or exactly ``count`` records up to the end when ``head`` is the whole file."""
    for k in range(count):
        while head[pos:pos + 1] == b"\n" or head[pos:pos + 2] == b"\r\n":
            pos += 1 if head[pos:pos + 1] == b"\n" else 2
        space = head.find(b" ", pos)
        end = space + 1 + 4 * dim
        if space <= pos or b"\n" in head[pos:space] or end > len(head):
            return False
        pos = end
        if k == 1 and not whole:
            return True
    return whole and not head[pos:].strip(b"\r\n")


def number(token: bytes, encoding: str = "utf-8") -> float | None:
    """The value of a field, or None when it is not a number: the one number rule of vector
    text.  A field is a number exactly when Python ``float()`` accepts it (as gensim's
    ``numpy.float32(str)`` does): ``1_000``, ``+1``, ``.5``, ``nan``, ``Infinity``, ``1e50``, a
    tab or other whitespace around it, and non-ASCII digits in the file's encoding included;
    ``0x1p3`` and ``1,5`` are not numbers."""
    try:
        return float(token)
    except ValueError:
        try:
            return float(token.decode(encoding))
        except (ValueError, UnicodeError, LookupError):
            return None


def _is_row(line: bytes, dim: int, encoding: str = "utf-8") -> bool:
    """``line`` is a word followed by ``dim`` numbers (for ``dim`` 0: a word without spaces, as
    gensim writes zero-width rows)."""
    if dim == 0:
        return b" " not in line
    fields = line.split(b" ")
    if len(fields) < dim + 1:
        return False
    return all(number(tok, encoding) is not None for tok in fields[len(fields) - dim:])


def _first_line(head: bytes, start: int) -> tuple[bytes, int]:
    """The line starting at ``start`` (without ``\\n``) and the offset after it."""
    end = head.find(b"\n", start)
    if end < 0:
        return head[start:], len(head)
    return head[start:end], end + 1


def _next_nonblank(head: bytes, start: int) -> bytes | None:
    while start < len(head):
        line, start = _first_line(head, start)
        if line.rstrip(LINE_WS):
            return line.rstrip(LINE_WS)
    return None


def detect(head: bytes, name: str, fmt: str, encoding: str, whole: bool = False) -> Detected:
    """Detect (``fmt == "auto"``) or check the format of a source whose data starts with
    ``head`` (a few lines at least, or the whole data when ``whole``)."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not head:
        raise FormatError(f"{name}: empty file")
    if is_fasttext_head(head):
        raise FormatError(f"{name}: this is a fastText .bin model, not a vector text file; "
                          "`embtool load-pretrained` reads it with --format auto or fasttext")
    if head.startswith(NPY_MAGIC):
        if fmt not in ("auto", "npy"):
            raise FormatError(f"{name}: this is a .npy array, not {fmt} text")
        return Detected("npy")
    if fmt == "npy":
        raise FormatError(f"{name}: not a .npy file (no \\x93NUMPY magic)")
    kind = sniff.sniff_head(head, name)
    if kind.name in ("safetensors", "hf-index", "sharded-table", "tokenizer", "pickle", "npz"):
        hint = "" if kind.hint.startswith(sniff.LOAD_FIRST) else f"; {kind.hint}"
        raise FormatError(f"{name}: this is {kind.what}, not a vector file{hint}")
    bom = is_utf8(encoding) and head.startswith(BOM)
    start = len(BOM) if bom else 0
    line, after = _first_line(head, start)
    header = parse_header(line)
    if header is not None and (header[0] > MAX_COUNT or header[1] > MAX_DIM):
        if fmt in ("word2vec", "word2vec-binary"):
            what, k, most = (("count", 0, MAX_COUNT) if header[0] > MAX_COUNT
                             else ("dimension", 1, MAX_DIM))
            raise FormatError(f"{name}, line 1: the header's {what} {_shown(line.split()[k])} is "
                              f"larger than {most} (a damaged header?)")
        header = None  # auto: not a header, a GloVe row
    if fmt in ("word2vec", "word2vec-binary") and header is None:
        shown = line[:60].decode("utf-8", "replace")
        raise FormatError(f"{name}, line 1: expected a header 'count dim' (two integers) for "
                          f"{fmt}, found {shown!r}")
    if fmt == "glove":
        return Detected("glove", bom, None, start)
    if fmt in ("word2vec", "word2vec-binary"):
        return Detected(fmt, bom, header, after, 1)
    if header is not None:
        nxt = _next_nonblank(head, after)
        if nxt is None or _is_row(nxt, header[1], encoding):
            return Detected("word2vec", bom, header, after, 1)
        if looks_binary(head[after:after + SNIFF]) or _binary_records_fit(
                head, after, header[0], header[1], whole):
            return Detected("word2vec-binary", bom, header, after, 1)
    elif b"\0" in head[start:start + SNIFF]:
        raise FormatError(f"{name}: binary data without a word2vec header (not a GloVe/word2vec "
                          "text file, a word2vec binary file or a .npy array)")
    return Detected("glove", bom, None, start)


def infer_dim(block: bytes, name: str, line_base: int = 0, partial: bool = False) -> int | None:
    """A GloVe file's dimension: the most common number of fields minus one over the first
    ``DIM_SAMPLE_LINES`` non-blank lines (ties go to the smaller dimension, since a longer row may
    be a key with spaces while a shorter one is always an error).  One damaged or 840B-style
    line among the first rows therefore does not decide the dimension.  At most the first
    ``4 * DIM_SAMPLE_LINES`` lines are looked at.

    ``partial``: ``block`` is only the start of the sample (whole lines); None when it ends
    before the lines the rule looks at (a longer sample may decide otherwise)."""
    counts: dict[int, int] = {}
    first_line = {}
    pieces = block.split(b"\n", 4 * DIM_SAMPLE_LINES)
    seen = 0
    for no, raw in enumerate(pieces[:4 * DIM_SAMPLE_LINES], line_base + 1):
        line = raw.rstrip(LINE_WS)
        if not line:
            continue
        nf = line.count(b" ") + 1
        counts[nf] = counts.get(nf, 0) + 1
        first_line.setdefault(nf, no)
        seen += 1
        if seen == DIM_SAMPLE_LINES:
            break
    if partial and seen < DIM_SAMPLE_LINES and len(pieces) <= 4 * DIM_SAMPLE_LINES:
        return None
    if not counts:
        raise FormatError(f"{name}: no vectors found (only blank lines)")
    usable = {k: c for k, c in counts.items() if k >= 2}
    if not usable:
        raise FormatError(f"{name}, line {first_line[1]}: a word without vector values "
                          "(fields must be separated by single spaces)")
    return max(usable, key=lambda k: (usable[k], -k)) - 1
