"""The index of a sharded table (``NAME.index.json``): its format, reading and writing it, and
the few things done with the index alone.  No numpy: ``freeze`` and ``unfreeze`` of a sharded
table change only the index's metadata and stay as fast as on one file; the sharded table itself
is ``embtool.sharded``.  The format is in docs/file-format.md §11."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from . import store as st
from . import vfs
from .config import PREFIX, TABLE_DTYPES, Config
from .errors import ConfigError, FormatError
from .sniff import SHARDED_TABLE_FORMAT, sniff

FORMAT = SHARDED_TABLE_FORMAT
FORMAT_VERSION = 1
SUFFIX = ".index.json"
#: in a shard's metadata: "LO:HI/N" (its rows of the table's N) and the index's file name
SHARD_ROWS_KEY = PREFIX + "shard.rows"
SHARD_INDEX_KEY = PREFIX + "shard.index"
#: the largest index file read (a million shards fit in less)
MAX_INDEX_BYTES = 100 << 20
#: an index is padded with spaces to a multiple of this, with at least ``INDEX_SLACK`` spare
#: bytes, so that a write changing its metadata or a shard's size rewrites it in place
INDEX_ALIGN, INDEX_SLACK = 4096, 1024
#: how every index written here starts (``format`` first): ``is_index`` knows one by it even
#: while a writer rewrites it in place (the bytes it begins with never change)
INDEX_HEAD = b'{\n "format": "' + SHARDED_TABLE_FORMAT.encode() + b'",'


# --------------------------------------------------------------------------------------------
# The index


def is_index(path) -> bool:
    """Whether ``path`` names a sharded table's index (``embtool.sniff`` tells it from a Hugging
    Face ``*.safetensors.index.json`` and every other file; ``Index.read`` validates it, under the
    table's lock)."""
    try:
        with open(path, "rb") as f:
            if f.read(len(INDEX_HEAD)) == INDEX_HEAD:
                return True
        return sniff(path).name == "sharded-table"
    except OSError:
        return False


@dataclass(frozen=True)
class Shard:
    """One shard: ``file`` (relative to the index's folder) holds rows ``[lo, hi)``; ``nbytes``
    is the file's size when the index was written."""
    file: str
    lo: int
    hi: int
    nbytes: int

    @property
    def rows(self) -> int:
        return self.hi - self.lo


@dataclass
class Index:
    path: Path
    tensor: str
    shape: tuple[int, int]
    dtype: str
    metadata: dict[str, str]
    vocab: str | None
    shards: list[Shard]

    @property
    def folder(self) -> Path:
        return self.path.parent

    def shard_path(self, shard: Shard) -> Path:
        return self.folder / shard.file

    @property
    def vocab_path(self) -> Path | None:
        return None if self.vocab is None else self.folder / self.vocab

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return [(s.lo, s.hi) for s in self.shards]

    def encode(self, size: int | None = None) -> bytes | None:
        """The index file's bytes: JSON, one shard a line (``"format"`` first: ``is_index``),
        padded with spaces to ``size`` bytes (None when it does not fit), or to a multiple of
        ``INDEX_ALIGN`` with ``INDEX_SLACK`` spare bytes."""
        def j(value):
            return json.dumps(value, ensure_ascii=False)

        head = {"format": FORMAT, "format_version": FORMAT_VERSION, "tensor": self.tensor,
                "shape": list(self.shape), "dtype": self.dtype}
        lines = [f" {j(k)}: {j(v)}," for k, v in head.items()]
        lines.append(' "metadata": {' + ",".join(f"\n  {j(k)}: {j(v)}" for k, v in self.metadata.items())
                     + ("\n }," if self.metadata else "},"))
        lines.append(f' "vocab": {j(self.vocab)},')
        shards = [f'  {{"file": {j(s.file)}, "rows": [{s.lo}, {s.hi}], "bytes": {s.nbytes}}}' for s in self.shards]
        lines.append(' "shards": [\n' + ",\n".join(shards) + "\n ]")
        text = ("{\n" + "\n".join(lines) + "\n}").encode("utf-8")
        if size is None:
            size = -(-(len(text) + 1 + INDEX_SLACK) // INDEX_ALIGN) * INDEX_ALIGN
        if len(text) + 1 > size:
            return None
        return text + b" " * (size - len(text) - 1) + b"\n"

    @classmethod
    def parse(cls, raw: bytes, path) -> "Index":
        """The index in ``raw`` (the bytes of ``path``), validated: every fault is one
        ``FormatError`` naming the file."""
        path = Path(path)
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise FormatError(f"{path}: not a valid sharded-table index ({exc})") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise FormatError(f"{path}: not a sharded-table index (no \"format\": \"{FORMAT}\")")
        version = obj.get("format_version")
        if version != FORMAT_VERSION:
            raise FormatError(f"{path}: sharded-table format version {version!r} is not supported "
                              f"(this embtool reads version {FORMAT_VERSION})")

        def need(key, check, what):
            value = obj.get(key)
            if not check(value):
                raise FormatError(f"{path}: {key!r} must be {what}, not {value!r}")
            return value

        def count(v):
            return isinstance(v, int) and not isinstance(v, bool) and v >= 0

        tensor = need("tensor", lambda v: isinstance(v, str) and v, "a tensor name")
        shape = need("shape", lambda v: isinstance(v, list) and len(v) == 2 and all(map(count, v)),
                     "[rows, dim]")
        dtype = need("dtype", lambda v: v in TABLE_DTYPES, f"one of {', '.join(TABLE_DTYPES)}")
        meta = need("metadata", lambda v: isinstance(v, dict) and all(
            isinstance(k, str) and isinstance(x, str) for k, x in v.items()), "an object of strings")
        vocab = need("vocab", lambda v: v is None or _plain_name(v), "null or a file name beside it")
        raw_shards = need("shards", lambda v: isinstance(v, list) and v, "a non-empty list")
        shards, expect = [], 0
        for i, s in enumerate(raw_shards):
            ok = (isinstance(s, dict) and _plain_name(s.get("file"))
                  and isinstance(s.get("rows"), list) and len(s["rows"]) == 2
                  and all(map(count, s["rows"])) and count(s.get("bytes")))
            if not ok:
                raise FormatError(f"{path}: shard {i} must be {{\"file\": NAME, \"rows\": [LO, HI], "
                                  f"\"bytes\": SIZE}}, not {s!r}")
            lo, hi = s["rows"]
            if lo != expect or hi < lo:
                raise FormatError(f"{path}: shard {i} ({s['file']}) holds rows [{lo}, {hi}); the "
                                  f"shards must cover the rows in order from row {expect}")
            shards.append(Shard(s["file"], lo, hi, s["bytes"]))
            expect = hi
        if expect != shape[0]:
            raise FormatError(f"{path}: the shards hold {expect} rows, the table has {shape[0]}")
        return cls(path, tensor, (shape[0], shape[1]), dtype, dict(meta), vocab, shards)

    @classmethod
    def read(cls, path) -> "Index":
        path = Path(path)
        with open(path, "rb") as f:
            return cls.parse(read_limited(f.fileno(), path), path)


def read_limited(fd: int, path) -> bytes:
    size = os.fstat(fd).st_size
    if size > MAX_INDEX_BYTES:
        raise FormatError(f"{path}: {size} bytes is too large for a sharded-table index "
                          f"(at most {MAX_INDEX_BYTES})")
    return os.pread(fd, size, 0)


def _plain_name(value) -> bool:
    """A file name in the index's own folder (no folders, no way out of it)."""
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value \
        and "\\" not in value and "\0" not in value


def index_stem(path) -> str:
    """``NAME`` of ``NAME.index.json``; other names are refused (the suffix marks the index)."""
    name = Path(path).name
    if not name.endswith(SUFFIX) or len(name) == len(SUFFIX):
        raise ConfigError(f"{path}: a sharded table's index must be named NAME{SUFFIX}")
    return name[:-len(SUFFIX)]


def shard_file_names(index_path, count: int) -> list[str]:
    stem = index_stem(index_path)
    return [f"{stem}-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def vocab_file_name(index_path) -> str:
    return f"{index_stem(index_path)}.vocab.safetensors"


def plan_rows(num_rows: int, shards: int | None = None, rows_per_shard: int | None = None) -> list[tuple[int, int]]:
    """Row ranges ``[(lo, hi), ...]`` for ``shards`` shards of (nearly) equal size, the first
    ones one row larger, or for shards of ``rows_per_shard`` rows (the last one smaller)."""
    if (shards is None) == (rows_per_shard is None):
        raise ConfigError("give the number of shards or the rows per shard (one of them)")
    if shards is not None:
        if shards < 1:
            raise ConfigError(f"the number of shards must be at least 1, not {shards}")
        if num_rows and shards > num_rows:
            raise ConfigError(f"{shards} shards for a table of {num_rows} rows: at most one shard a row")
        shards = max(1, min(shards, num_rows or 1))
        base, extra = divmod(num_rows, shards)
        sizes = [base + (i < extra) for i in range(shards)]
    else:
        if rows_per_shard < 1:
            raise ConfigError(f"rows per shard must be at least 1, not {rows_per_shard}")
        full, rest = divmod(num_rows, rows_per_shard)
        sizes = [rows_per_shard] * full + ([rest] if rest or not full else [])
    ranges, lo = [], 0
    for n in sizes:
        ranges.append((lo, lo + n))
        lo += n
    return ranges


def shard_metadata(index_path, lo: int, hi: int, num_rows: int) -> dict[str, str]:
    """A shard file's own metadata: an embtool table (default configuration: the table's is in the
    index) that knows which rows of which index it holds, and belongs to the index's group
    (``embtool.primary``: opening a shard by itself takes the table's lock and recovers its log)."""
    return {PREFIX + "format_version": "1", SHARD_ROWS_KEY: f"{lo}:{hi}/{num_rows}",
            SHARD_INDEX_KEY: Path(index_path).name, st.PRIMARY_KEY: Path(index_path).name}


def write_index(index: Index) -> None:
    """Write the index of a new table (temporary file, sync, rename, sync the folder): the table
    exists from then on.  Changes of an existing index are ``stage_index`` in a transaction."""
    data = index.encode()

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            vfs.current().sync(f.fileno())

    st.replace_atomically(index.path, write)
    vfs.current().sync_dir(index.path.parent)


def stage_index(tx: st.Transaction, index: Index) -> None:
    """Make ``index`` the table's index as part of ``tx`` (a transaction of the index's group):
    rewritten in place when it fits the file's padded size, else a new file that replaces it."""
    size = os.stat(index.path).st_size
    data = index.encode(size)
    if data is not None:
        tx.write_bytes(index.path, 0, data)
        return
    data = index.encode()
    fd, tmp = st.create_temp(index.path)
    try:
        vfs.current().pwrite(fd, data, 0)
        os.fchmod(fd, os.stat(index.path).st_mode & 0o777)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    tx.adopt(index.path, tmp, fd)


def set_frozen(path, frozen: bool, tensor: str | None = None) -> bool:
    """``freeze`` / ``unfreeze`` of a table file or of a sharded table (the index's metadata,
    under its exclusive lock); returns whether the flag changed."""
    if not is_index(path):
        return st.set_frozen(path, frozen, tensor)
    path = Path(path)
    with st.Group(path, write=True) as group:
        index = Index.read(path)
        if tensor is not None and tensor != index.tensor:
            raise FormatError(f"{path}: the sharded table's tensor is {index.tensor!r}, not {tensor!r}")
        cfg = Config.from_metadata(index.metadata, index.shape[0], path)
        if cfg.frozen == frozen and PREFIX + "format_version" in index.metadata:
            return False
        with group.transaction() as tx:
            stage_index(tx, replace(index, metadata={**index.metadata, **replace(cfg, frozen=frozen).to_metadata()}))
    return True


def checkpoint(path) -> dict:
    """``embtool checkpoint`` of a table file or of a sharded table (its group: the index, the
    shards and their one log)."""
    if not is_index(path):
        return st.checkpoint(path)
    with st.Group(Path(path), write=True) as g:
        return g.checkpoint()
