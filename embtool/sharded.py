"""Row-sharded tables: one index file naming shard files, each an ordinary table of some rows.

A table too large for one file (or one machine) is split by rows, as TorchRec shards tables
row-wise: ``NAME.index.json`` (the index) and the shard files ``NAME-00001-of-0000K.safetensors``
..., shard ``i`` holding rows ``[lo_i, hi_i)`` of the table (and of its optimizer state) in an
ordinary embtool table file, plus ``NAME.vocab.safetensors`` for the words.  The format is in
docs/file-format.md §11; in short, the index holds the format version, the table's tensor name,
shape and dtype, its whole metadata (the ``embtool.*`` configuration, the frozen flag, the
optimizer description, any other keys), the vocabulary file's name, and the shards in row order
with their row ranges and sizes.  Paths in it are relative to the index's folder.

``ShardedTable.open(index)`` gives a table object with the read side of ``Table``: shape, dtype,
configuration, metadata, vocabulary, ``raw`` and ``weight()`` as array-likes over the shards
(``ShardRows``: slices, row lists and ``take`` gather across shard boundaries), and ``rows``.
Per-shard work runs as tasks on an ``embtool.execute`` executor (threads, or a Dask cluster whose
workers map the shards by path).  ``shard_table`` / ``unshard_table`` convert both ways, bit for
bit; ``create_sharded`` writes a new sharded table directly from values or a stream of row
blocks (``init``, ``load-pretrained``), never holding a second copy of the table.

Consistency: the index, its shards and its vocabulary file are one group of the store
(``store.Group``; each shard names the index as its primary): one lock, the index's (a reader
holds it shared for as long as it reads, its tasks included, a writer exclusively), and one
write-ahead log, ``NAME.index.json-wal``.  A write that changes several shards (rows in place,
whole shards replaced by files that tasks wrote, the index) is one transaction of that group
(``Change``): every shard before, or every shard after, whatever instant a process is killed at,
and the next opener recovers.  Readers never see a mix.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from . import dtypes
from . import store as st
from .config import PREFIX, TABLE_DTYPES, Config
from .dtypes import to_storage, widen
from .errors import ConfigError, EmbtoolError, FormatError, OutputExistsError
from .kernels.common import EMPTY
from .norms import cache_dir
from .shardindex import (SHARD_INDEX_KEY, Index, Shard, index_stem, is_index,  # noqa: F401 (re-exported)
                         plan_rows, read_limited, set_frozen, shard_file_names, shard_metadata,
                         stage_index, vocab_file_name, write_index)
from .table import VOCAB_TENSORS, Table, _merged

OPTIM_PREFIX = "optim."

# --------------------------------------------------------------------------------------------
# Shard files mapped without a lock (tasks run under their coordinator's lock)


class Mapped(st.Store):
    """A shard file mapped read-only **without** taking its lock: tasks use it while the
    coordinator that started them holds the table's lock (shared or exclusive).  With
    ``keep_fd`` its descriptor stays open until ``close`` (the row-norms cache identifies the
    file by it); else the map alone remains."""

    def __init__(self, path, keep_fd: bool = False):  # noqa: D107 - not Store.__init__ (no lock)
        self.path = Path(path)
        self.write = False
        self.group = None
        self._own_group = False
        self._member_lock = None
        self._open()
        if not keep_fd:
            self._detach()


#: shard files mapped by this process's tasks (a Dask worker's), by path: (identity, Mapped)
_MAPS: "OrderedDict[str, tuple[tuple, Mapped]]" = OrderedDict()
_MAPS_LOCK = threading.Lock()
#: how many maps a worker keeps (they cost address space only; the pages are the page cache's)
MAX_MAPS = 256


def mapped(path) -> Mapped:
    """The shard file at ``path`` mapped here, reused from an earlier task of this process while
    the file is the same (device, inode, size and modification time): a worker that scans a shard
    again touches pages it has mapped already instead of faulting each one in anew.  (Writes
    never move a tensor within a file, and rows written in place show through the map.)"""
    path = str(path)
    info = os.stat(path)
    ident = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    with _MAPS_LOCK:
        hit = _MAPS.get(path)
        if hit is not None and hit[0] == ident:
            _MAPS.move_to_end(path)
            return hit[1]
    m = Mapped(path)
    with _MAPS_LOCK:
        _MAPS[path] = (ident, m)
        while len(_MAPS) > MAX_MAPS:
            _MAPS.popitem(last=False)
    return m


def shard_of(source, tensor: str) -> Table:
    """A task's shard as a ``Table``: the coordinator's own (in this process), or the file at the
    path ``source`` mapped here without a lock."""
    return source if isinstance(source, Table) else Table(mapped(source), tensor)


def _stored(source, tensor: str) -> np.ndarray:
    """The stored array of ``tensor`` in ``source``: an array already (in-process tasks share the
    coordinator's maps), or a shard path to map (tasks on other processes)."""
    if isinstance(source, np.ndarray):
        return source
    return mapped(source).array(tensor)


# --------------------------------------------------------------------------------------------
# Rows over shards: an array-like


def by_part(los: np.ndarray, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(part, positions)`` for the parts starting at rows ``los`` (ascending) that hold some of
    ``rows``: the positions in ``rows`` of that part's rows, in their order."""
    which = np.searchsorted(los, rows, side="right") - 1
    order = np.argsort(which, kind="stable")
    parts, starts = np.unique(which[order], return_index=True)
    return [(int(p), sel) for p, sel in zip(parts, np.split(order, starts[1:]))]


class ShardRows:
    """Rows of a ``(N, D)`` tensor split over shards, indexed by global row: ``r[i]``,
    ``r[lo:hi]`` (a view when the rows lie in one shard, else a copy), ``r[ids]`` / ``take(ids)``
    (a gather), ``astype``.  Values are converted by ``convert`` (BF16 bits to float32) as they
    are taken, never for the whole table at once.

    ``parts``: ``(lo, hi, array)`` per shard in row order (a task holds only the shards it
    reads).  ``table``: the ``ShardedTable`` whose rows these are, on the coordinator (searches
    and statistics over them run as its tasks: ``embtool.similar.search`` hands them over), None
    in a task; ``take``: the table's gather, as tasks."""

    ndim = 2

    def __init__(self, parts, shape, dtype, convert=None, table=None, take=None):
        self.parts = list(parts)
        self._los = np.array([p[0] for p in self.parts], np.int64)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self._convert = convert
        self.sharded_table = table
        self._take = take

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    def _out(self, arr: np.ndarray) -> np.ndarray:
        return arr if self._convert is None else self._convert(arr)

    def _part(self, row: int) -> int:
        i = int(np.searchsorted(self._los, row, side="right")) - 1
        if i < 0 or not self.parts[i][0] <= row < self.parts[i][1]:
            raise IndexError(f"row {row} is not held here")
        return i

    def __getitem__(self, key):
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            row = int(key) + n if key < 0 else int(key)
            if not 0 <= row < n:
                raise IndexError(f"row {key} is out of range for {n} rows")
            lo, _, arr = self.parts[self._part(row)]
            return self._out(arr[row - lo:row - lo + 1])[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                raise IndexError("sharded rows take slices with step 1 only")
            return self._out(self._slice(start, max(start, stop)))
        ids = np.asarray(key)
        if ids.dtype == bool:
            ids = np.flatnonzero(ids)
        return self.take(ids)

    def _slice(self, start: int, stop: int) -> np.ndarray:
        if start == stop:
            return np.empty((0, self.shape[1]), self.parts[0][2].dtype)
        first, last = self._part(start), self._part(stop - 1)
        pieces = [arr[max(start, lo) - lo:min(stop, hi) - lo]
                  for lo, hi, arr in self.parts[first:last + 1]]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def take(self, ids) -> np.ndarray:
        """Rows ``ids`` (any shape, already range-checked) as values, shape ``ids.shape + (D,)``."""
        ids = np.asarray(ids, np.int64)
        flat = ids.reshape(-1)
        if self._take is not None:
            stored = self._take(flat)
        else:
            stored = self.take_stored(flat)
        return self._out(stored).reshape(ids.shape + (self.shape[1],))

    def take_stored(self, flat: np.ndarray) -> np.ndarray:
        """Rows ``flat`` as stored, gathered here from the parts (no tasks)."""
        out = np.empty((flat.size, self.shape[1]), self.parts[0][2].dtype if self.parts else self.dtype)
        for i, sel in by_part(self._los, flat):
            lo, _, arr = self.parts[i]
            out[sel] = arr[flat[sel] - lo]
        return out

    def astype(self, dtype, copy=True):
        """The same rows converted to ``dtype`` as they are read (a view-like, not a copy)."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        inner = self._convert

        def convert(arr):
            return (arr if inner is None else inner(arr)).astype(dtype)

        return ShardRows(self.parts, self.shape, dtype, convert, self.sharded_table, self._take)


# --------------------------------------------------------------------------------------------
# The table


class ShardedTable(st.Closing):
    """An open sharded table (``ShardedTable.open(index)``): the read side of ``Table`` over the
    shards, and the executor its per-shard work runs on."""

    sharded = True

    def __init__(self, index: Index, group: st.Group, write: bool, executor):
        self.index = index
        self.path = index.path
        self.group = group  # the lock and log of the index, its shards and vocabulary
        self.write = write
        self.executor = executor
        self.tensor = index.tensor
        self.dtype = index.dtype
        self.num_embeddings, self.embedding_dim = index.shape
        self.is_embtool = PREFIX + "format_version" in index.metadata
        self.config = Config.from_metadata(index.metadata, self.num_embeddings, self.path)
        self.notes: list[str] = []  # nothing read in an unusual way (shards hold table dtypes)
        self.shards: list[Table] = []
        self._vocab = None
        self._vocab_store = None
        try:
            if write:
                sweep_task_files(index)
            for s in index.shards:
                self.shards.append(self._open_shard(s))
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, path, *, tensor: str | None = None, write: bool = False, scheduler: str | None = None):
        from .execute import executor

        path = Path(path)
        group = st.Group(path, write)
        try:
            index = Index.read(path)
            if tensor is not None and tensor != index.tensor:
                raise FormatError(f"{path}: the sharded table's tensor is {index.tensor!r}, not {tensor!r}")
            run = executor(scheduler)
        except BaseException:
            group.close()
            raise
        return cls(index, group, write, run)  # it owns the lock from here on (closed on failure)

    def _open_shard(self, shard: Shard) -> Table:
        """Shard ``shard`` as a table, mapped under the group's lock (a writer also locks it)."""
        path = self.index.shard_path(shard)
        where = f"{self.path}: shard {shard.file}"
        try:
            mapped = self.group.open(path)
        except FileNotFoundError:
            raise FormatError(f"{where} is missing") from None
        try:
            if mapped.size != shard.nbytes:
                raise FormatError(f"{where} has {mapped.size} bytes, the index says {shard.nbytes}: "
                                  "it was changed outside embtool")
            info = mapped.tensors.get(self.tensor)
            want = (shard.rows, self.embedding_dim)
            if info is None or info.dtype != self.dtype or info.shape != want:
                got = "no such tensor" if info is None else f"{info.dtype} {list(info.shape)}"
                raise FormatError(f"{where}: tensor {self.tensor!r} should be {self.dtype} "
                                  f"{list(want)}, found {got}")
            return Table(mapped, self.tensor)
        except BaseException:
            mapped.close()
            raise

    # -- reading ------------------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, str]:
        return self.index.metadata

    shape = Table.shape
    value_dtype = Table.value_dtype
    # the user-facing side of ``Table`` (a mapping from words or row ids to vectors, gensim's
    # most_similar) works on what both kinds of table have: rows, vocab, streamed, norms
    __len__ = Table.__len__
    __iter__ = Table.__iter__
    __contains__ = Table.__contains__
    __getitem__ = Table.__getitem__
    row_of = Table.row_of
    most_similar = Table.most_similar
    most_similar_many = Table.most_similar_many
    _query_items = Table._query_items

    def __repr__(self) -> str:
        if self.group is None:
            return f"<embtool.ShardedTable {str(self.path)!r} (closed)>"
        vocab = "no vocabulary" if not self.has_vocab else f"{self.num_embeddings:,} rows with words"
        frozen = ", frozen" if self.config.frozen else ""
        return (f"<embtool.ShardedTable {str(self.path)!r} tensor={self.tensor!r} "
                f"{self.num_embeddings:,} x {self.embedding_dim} {self.dtype} in {len(self.shards)} "
                f"shards, {vocab}{frozen}>")

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return self.index.ranges

    @property
    def shard_paths(self) -> list[Path]:
        return [self.index.shard_path(s).resolve() for s in self.index.shards]

    def sources(self, tensor: str | None = None) -> list:
        """What a task needs to reach each shard's ``tensor``: the mapped array when tasks run in
        this process, the shard's absolute path when they run elsewhere."""
        tensor = tensor or self.tensor
        if self.executor.remote:
            return [str(p) for p in self.shard_paths]
        return [t.store.array(tensor) for t in self.shards]

    def shard_sources(self) -> list:
        """What a task needs to open each shard as a ``Table`` (``shard_of``): the shard's table
        here when tasks run in this process, its absolute path when they run elsewhere."""
        return [str(p) for p in self.shard_paths] if self.executor.remote else list(self.shards)

    def stored_rows(self, tensor: str | None = None) -> ShardRows:
        """Rows of ``tensor`` (the table's, or an ``optim.*`` state) as stored, over the shards."""
        tensor = tensor or self.tensor
        parts = [(lo, hi, t.store.array(tensor)) for (lo, hi), t in zip(self.ranges, self.shards)]
        return ShardRows(parts, self.shape, parts[0][2].dtype, table=self, take=self._gather(tensor))

    @property
    def raw(self) -> ShardRows:
        """The stored weight (BF16 as uint16 bits), as ``ShardRows``."""
        return self.stored_rows()

    def weight(self) -> ShardRows:
        """The weight as values (BF16 widened as rows are read), as ``ShardRows``."""
        raw = self.stored_rows()
        convert = (lambda a: widen(a, "BF16")) if self.dtype == "BF16" else None
        return ShardRows(raw.parts, self.shape, self.value_dtype, convert, self, raw._take)

    streamed = weight

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (flat int64, range-checked) as values, a copy."""
        return widen(self.raw.take(ids), self.dtype)

    @property
    def has_vocab(self) -> bool:
        return self.index.vocab is not None

    @property
    def vocab(self):
        if self._vocab is None and self.has_vocab:
            from .vocab import Vocab

            path = self.index.vocab_path
            try:
                self._vocab_store = Mapped(path)  # never written: no lock of its own needed
            except FileNotFoundError:
                raise FormatError(f"{self.path}: vocabulary file {self.index.vocab} is missing") from None
            missing = [n for n in VOCAB_TENSORS if n not in self._vocab_store.tensors]
            if missing:
                raise FormatError(f"{path}: no tensor {missing[0]!r}")
            self._vocab = Vocab(*(self._vocab_store.array(n) for n in VOCAB_TENSORS))
            if len(self._vocab) != self.num_embeddings:
                raise FormatError(f"{path}: vocabulary has {len(self._vocab)} words for "
                                  f"{self.num_embeddings} rows")
        return self._vocab

    def tensor_infos(self) -> list[st.TensorInfo]:
        """The table's tensors as one file would hold them: its own and its optimizer state's
        (all its rows), then the vocabulary's (offsets within each file, not meaningful here)."""
        own = st.TensorInfo(self.tensor, self.dtype, self.shape, 0,
                            dtypes.nbytes(self.dtype, self.shape))
        vocab = []
        if self.has_vocab:
            self.vocab  # maps the vocabulary file (and checks it)
            vocab = [self._vocab_store.tensors[n] for n in VOCAB_TENSORS]
        return [own, *self.optimizer_tensors().values(), *vocab]

    def optimizer_tensors(self) -> dict[str, st.TensorInfo]:
        """The ``optim.*`` state tensors, as one tensor each of the table's shape."""
        first = self.shards[0].store.tensors
        out = {}
        for name, info in first.items():
            if name.startswith(OPTIM_PREFIX):
                nbytes = info.nbytes // max(1, info.shape[0]) * self.num_embeddings if info.shape else 0
                out[name] = st.TensorInfo(name, info.dtype, (self.num_embeddings,) + info.shape[1:], 0, nbytes)
        return out

    # -- tasks --------------------------------------------------------------------------------
    def _gather(self, tensor: str):
        """``take`` for ``ShardRows``: per-shard gathers as tasks (each shard's rows of the
        request), scattered back into request order here."""
        ranges, sources = self.ranges, None

        def take(flat: np.ndarray) -> np.ndarray:
            nonlocal sources
            if sources is None:
                sources = self.sources(tensor)
            jobs, where = [], []
            for i, sel in by_part(np.array([lo for lo, _ in ranges], np.int64), flat):
                jobs.append((sources[i], tensor, flat[sel] - ranges[i][0]))
                where.append(sel)
            blocks = self.executor.map(take_task, jobs) if len(jobs) > 1 or self.executor.remote \
                else [take_task(j) for j in jobs]
            first = blocks[0] if blocks else self.shards[0].store.array(tensor)[:0]
            out = np.empty((flat.size, self.embedding_dim), first.dtype)
            for sel, block in zip(where, blocks):
                out[sel] = block
            return out

        return take

    @property
    def norms(self):
        """What a search is given as the table's row norms (``similar.search``'s ``norms``): the
        shards' norms are kept per shard file (``embtool.norms``), by the tasks that read them
        (``ScanJob``); the coordinator never holds them all."""
        return _SHARD_NORMS

    def search(self, queries, exclude, k, stop, *, norms=None, chunk_rows=None, progress=None,
               observe=None, each=False):
        """``embtool.similar.search`` (``search_each`` with ``each``) over the shards, as tasks
        (see "Scans" below)."""
        if observe is not None:
            raise EmbtoolError("internal error: a sharded search takes no observer (use scan)")
        queries = np.asarray(queries, np.float32).reshape(-1, self.embedding_dim)
        if stop == 0 or not len(queries):
            return np.full((len(queries), k), EMPTY, np.int64)
        results = self.scan(search_each_task if each else search_task, queries, exclude, k, stop,
                            chunk_rows=chunk_rows, progress=progress, norms=norms is not None)
        return merge_best([best for best, _ in results], k, len(queries))

    def scan(self, task, queries, exclude, k, stop, *, chunk_rows=None, progress=None,
             norms: bool = False) -> list:
        """Run ``task`` (a module-level function of a ``ScanJob``) over rows ``0..stop-1`` in
        whole chunks of ``embtool.similar``'s chunk grid; the results in row order.  ``norms``:
        the tasks use the shards' row norms kept by ``embtool.norms`` (and keep those they
        compute)."""
        from .similar import chunk_size

        step = chunk_size(self.raw, chunk_rows)
        sources = self.sources()
        tables = self.shard_sources() if norms and cache_dir() is not None else None
        queries, exclude = np.ascontiguousarray(queries), np.ascontiguousarray(exclude)
        jobs = []
        for lo, hi, shards in _plan(self.ranges, self.executor.workers(), stop, step):
            parts = [(self.ranges[i][0], self.ranges[i][1], sources[i]) for i in shards]
            norm_parts = None if tables is None else [tables[i] for i in shards]
            jobs.append(ScanJob(parts, self.tensor, self.dtype, self.shape, lo, hi, step, queries, exclude, k,
                                stop, norm_parts))
        rows = None if progress is None else (lambda i: progress(jobs[i].stop - jobs[i].start))
        return self.executor.map(task, jobs, done=rows)

    # -- writing ------------------------------------------------------------------------------
    def require_writable(self) -> None:
        if not self.write:
            raise EmbtoolError(f"{self.path}: internal error: table opened read-only")

    def update(self, rows: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
               metadata: Mapping[str, str] | None = None) -> None:
        """``Table.update`` over the shards: rows of some tensors (``{tensor: (table rows, values)}``)
        and/or the table's metadata (a value of None removes a key), as one write (``Change``)."""
        self.require_writable()
        change = Change(self)
        for name, (ids, values) in (rows or {}).items():
            change.set_rows(name, ids, values)
        if metadata:
            change.metadata = _merged(change.metadata, metadata)
        change.commit()

    def _reload(self, index: Index, replaced) -> None:
        """After a write: the new index, and new maps of the shard files that were replaced (the
        old maps stay valid for views handed out before)."""
        self.index = index
        self.config = Config.from_metadata(index.metadata, self.num_embeddings, self.path)
        for i in replaced:
            self.shards[i].close()
            self.shards[i] = self._open_shard(index.shards[i])

    # -- closing ------------------------------------------------------------------------------
    def close(self) -> None:
        for t in self.shards:
            t.close()
        if self._vocab_store is not None:
            self._vocab_store.close()
        if self.group is not None:
            self.group.close()
            self.group = None


# --------------------------------------------------------------------------------------------
# Scans
#
# Scans (``similar``'s search, ``evaluate``'s passes, ``info --stats``) visit the rows in the same
# chunks as on one file: ``embtool.similar`` scores a chunk of rows with one BLAS call, and the last
# bits of a score depend on the call it was computed in, so a task covers whole chunks of the
# table's chunk grid (starting at row 0), and a chunk that straddles two shards is assembled from
# both (the task reads the neighbouring shard's rows).  Each task keeps its own top ``k`` keys
# (score and row id in one integer, ``kernels/common.py``); the merge keeps the ``k`` largest,
# which is the one-file search's result exactly, ties going to the lower row id as they do there.


@dataclass
class ScanJob:
    """One task of a scan: rows ``start..stop-1`` (whole chunks of ``step`` rows) of the table.
    ``parts``: ``(lo, hi, source)`` of the shards holding those rows (a mapped array in this
    process, a path on a Dask worker).  ``end``: the end of the whole scan; ``norm_parts`` (None:
    norms not used): per part, the shard as a ``Table`` here or its path on a worker, whose row
    norms ``embtool.norms`` keeps."""
    parts: list
    tensor: str
    dtype: str  # stored dtype of the table
    shape: tuple
    start: int
    stop: int
    step: int
    queries: np.ndarray
    exclude: np.ndarray
    k: int
    end: int = 0
    norm_parts: list | None = None

    def rows(self) -> ShardRows:
        """The job's rows as values, indexed by table row."""
        parts = [(lo, hi, _stored(src, self.tensor)) for lo, hi, src in self.parts]
        convert = (lambda a: widen(a, "BF16")) if self.dtype == "BF16" else None
        value = np.float32 if self.dtype == "BF16" else parts[0][2].dtype
        return ShardRows(parts, self.shape, value, convert)

    def search(self, rows, observe=None, norms=None) -> np.ndarray:
        from .similar import search

        return search(rows, self.queries, self.exclude, self.k, self.stop, chunk_rows=self.step,
                      start=self.start, observe=observe, norms=norms)


def search_task(job: ScanJob):
    """Task: the best ``k`` keys of each query over the job's rows (with the shards' kept row
    norms when every part has them; else computing them, and keeping those of the shards whose
    chunks are all this job's)."""
    rows = job.rows()
    if job.norm_parts is None:
        return job.search(rows), None
    with _PartNorms(job) as norms:
        known = norms.known()
        if known is not None:
            return job.search(rows, norms=known), None
        best = job.search(rows, observe=norms.observe)
        norms.keep(rows)
        return best, None


def search_each_task(job: ScanJob):
    """Task: ``search_each``'s best ``k`` keys of each query over the job's rows."""
    from .similar import search_each

    rows = job.rows()
    if job.norm_parts is None:
        return search_each(rows, job.queries, job.exclude, job.k, job.stop, chunk_rows=job.step,
                           start=job.start), None
    with _PartNorms(job) as norms:
        return search_each(rows, job.queries, job.exclude, job.k, job.stop, chunk_rows=job.step,
                           start=job.start, norms=norms.known()), None


class _SearchNorms:
    """``similar.search``'s ``norms`` of a sharded table: a ``RowNorms``-like object that knows
    none (the tasks look the shards' own up; a rescore computes those of its rows)."""

    def get(self):
        return None


_SHARD_NORMS = _SearchNorms()


class _Window:
    """Row norms of rows ``base..`` indexed by table row (``known[lo:hi]`` in ``similar.search``),
    and ``RowNorms.get`` of itself (known: nothing to keep)."""

    def __init__(self, norms: np.ndarray, base: int):
        self.norms, self.base = norms, base

    def get(self):
        return self

    def __getitem__(self, key: slice) -> np.ndarray:
        return self.norms[key.start - self.base:key.stop - self.base]


class _PartNorms:
    """The row norms of a scan job's shards (``embtool.norms.RowNorms`` of each shard file): the
    job's rows' norms when every part's are kept (``known``), else an observer of the search
    that collects those it computes, and ``keep`` for the shards whose chunks are all this job's
    (so that each shard is kept by one task, which reads most of it anyway)."""

    def __init__(self, job: ScanJob):
        self.job = job
        self.opened = []  # shards mapped here (on a worker), closed at the end
        self.tables = []
        for src in job.norm_parts:
            if isinstance(src, Table):
                self.tables.append(src)
            else:
                t = Table(Mapped(src, keep_fd=True), job.tensor)
                self.opened.append(t)
                self.tables.append(t)
        self.got = [t.norms.get() for t in self.tables]  # before the rows are read (racy rule)
        self.seen = None

    def known(self):
        if any(n is None for n in self.got):
            return None
        job = self.job
        pieces = [n[max(job.start, lo) - lo:min(job.stop, hi) - lo]
                  for (lo, hi, _), n in zip(job.parts, self.got)]
        return _Window(np.concatenate(pieces), job.start)

    def observe(self, lo, rows, norms) -> None:
        if self.seen is None:
            self.seen = np.empty(self.job.stop - self.job.start, np.float32)
        self.seen[lo - self.job.start:lo - self.job.start + len(rows)] = norms

    def keep(self, rows: ShardRows) -> None:
        """Keep the norms of each shard whose chunks (those starting in it) are all this job's:
        those the search computed, and those of its rows outside the job (before its first
        chunk: less than one chunk; past a restricted search's end), computed as
        ``similar.search`` computes them."""
        from .norms import row_norms
        from .similar import as_f32

        job = self.job
        if self.seen is None:
            return
        for i, (lo, hi, _) in enumerate(job.parts):
            first = -(-lo // job.step) * job.step  # the first chunk starting in the shard
            if self.got[i] is not None or not (first >= min(hi, job.end) or
                                                job.start <= first and min(hi, job.end) <= job.stop):
                continue  # kept already, or some of its chunks are another job's
            out = np.empty(hi - lo, np.float32)
            a, b = max(lo, job.start), min(hi, job.stop)
            out[a - lo:b - lo] = self.seen[a - job.start:b - job.start]
            for x, y in ((lo, a), (b, hi)):
                for c in range(x, y, job.step):  # chunk by chunk, as the search reads rows
                    row_norms(as_f32(rows[c:min(c + job.step, y)]), out=out[c - lo:min(c + job.step, y) - lo])
            self.tables[i].norms.keep(out)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for t in self.opened:
            t.close()


def _plan(ranges, workers: int, stop: int, step: int) -> list[tuple[int, int, list]]:
    """Tasks ``(start, stop, shard numbers)`` covering rows ``0..stop-1`` in whole chunks: the
    chunks whose first row lies in a shard form that shard's task (split further while there are
    fewer tasks than the executor runs at once)."""
    starts = np.arange(0, stop, step, dtype=np.int64)
    owner = np.searchsorted(np.array([lo for lo, _ in ranges], np.int64), starts, side="right") - 1
    groups = [g for g in (starts[owner == i] for i in range(len(ranges))) if g.size]
    while groups and len(groups) < workers:
        big = max(range(len(groups)), key=lambda i: groups[i].size)
        if groups[big].size < 2:
            break
        g = groups.pop(big)
        groups[big:big] = [g[:g.size // 2], g[g.size // 2:]]
    tasks = []
    for g in groups:
        lo, hi = int(g[0]), min(stop, int(g[-1]) + step)
        tasks.append((lo, hi, [i for i, (a, b) in enumerate(ranges) if a < hi and b > lo]))
    return tasks


def merge_best(results, k: int, queries: int) -> np.ndarray:
    """The ``k`` largest keys for each of ``queries`` queries of the tasks' top-``k`` arrays (no
    two are equal: a key holds its row id)."""
    if not results:  # no rows were searched
        return np.full((queries, k), EMPTY, np.int64)
    keys = np.sort(np.concatenate(results, axis=1), axis=1)[:, ::-1]
    out = np.full((keys.shape[0], k), EMPTY, np.int64)
    out[:, :min(k, keys.shape[1])] = keys[:, :k]
    return out


# --------------------------------------------------------------------------------------------
# Writes


class Change:
    """What one write changes in a sharded table, made visible together by ``commit``: rows of
    shard files (by table row), whole shard files replaced by complete new files that tasks wrote
    beside them (``replace_shard``), and the table's metadata (in the index)."""

    def __init__(self, table: ShardedTable):
        table.require_writable()
        self.table = table
        self.rows: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self.files: dict[int, Path] = {}
        self.metadata = dict(table.metadata)

    def set_rows(self, tensor: str, ids, values) -> None:
        """Rows ``ids`` (table rows) of ``tensor`` become ``values`` (values of its dtype)."""
        t = self.table
        ids = np.asarray(ids, np.int64).reshape(-1)
        if not ids.size:
            return
        values = np.asarray(values).reshape(ids.size, -1)
        dtype = t.dtype if tensor == t.tensor else t.optimizer_tensors()[tensor].dtype
        stored = to_storage(values, dtype) if dtype in TABLE_DTYPES else values
        for i, sel in by_part(np.array([lo for lo, _ in t.ranges], np.int64), ids):
            self.rows.setdefault(i, {})[tensor] = (ids[sel] - t.ranges[i][0], stored[sel])

    def replace_shard(self, i: int, temp: Path) -> None:
        """Shard ``i`` becomes the complete file ``temp`` (written beside it by a task with
        ``write_shard_temp``)."""
        self.files[i] = Path(temp)

    def discard(self) -> None:
        """Remove the new shard files that no transaction has taken over."""
        for temp in self.files.values():
            temp.unlink(missing_ok=True)
        self.files = {}

    def commit(self) -> None:
        """Make the changes, all of them or none: **one transaction** of the table's group, so one
        frame of its log holds the rows written in place, the renames of the new shard files over
        their shards and the new index (in place, or replaced).  A process killed at any instant
        leaves every shard before or every shard after; the next opener of the table finishes a
        committed write (``store.Group``).  Then the table maps the shards that were replaced."""
        t, index = self.table, self.table.index
        sizes = {i: os.stat(temp).st_size for i, temp in self.files.items()}
        new = Index(t.path, t.tensor, t.shape, t.dtype, self.metadata, index.vocab,
                    [replace(s, nbytes=sizes.get(i, s.nbytes)) for i, s in enumerate(index.shards)])
        replaced = sorted(self.files)
        try:
            with t.group.transaction() as tx:
                for i in replaced:
                    tx.adopt(index.shard_path(index.shards[i]), self.files.pop(i))  # the tx's now
                for i, tensors in sorted(self.rows.items()):
                    if i in replaced:
                        continue
                    shard = t.shards[i]
                    shard._rows_changing()  # its cached row norms go first (embtool.norms)
                    for name, (local, stored) in tensors.items():
                        tx.write_rows(shard.store, name, local, stored)
                if new != index:
                    stage_index(tx, new)
        except BaseException:
            self.discard()  # files adopted are the transaction's: it removed them, or needs them
            raise
        t._reload(new, replaced)


def sweep_task_files(index: Index) -> None:
    """Remove new shard (and index) files that no write will use: complete files of tasks whose
    write never committed (a killed coordinator; a task run twice).  Called by a writer under the
    table's exclusive lock, after the group's recovery, when no logged write needs them: such
    files are made only under that lock, so one that nobody holds locked is abandoned, even while
    the process that wrote it (a Dask worker) lives on; one still locked is being written by a
    task of a killed coordinator, and goes at a later write.  (``store``'s ``clean_temps``
    removes those of processes that are gone.)"""
    import fcntl

    names = {s.file for s in index.shards} | {index.path.name}
    try:
        found = os.listdir(index.folder)
    except OSError:
        return
    for name in found:
        m = st._TEMP.match(name)
        if m is None or m["name"] not in names:
            continue
        path = index.folder / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
        except OSError:
            pass  # locked: still being written
        finally:
            os.close(fd)


def write_shard_temp(target: Path, tensors: Mapping[str, object], metadata: Mapping[str, str]) -> Path:
    """A complete new file for shard ``target``, written and synced beside it under a temporary
    name, for a ``Change`` to put in its place (tasks on any worker write these, in parallel)."""
    return st.write_beside(target, tensors, metadata)


def take_task(job) -> np.ndarray:
    """Task: rows ``local`` (of one shard) of ``tensor``, as stored."""
    source, tensor, local = job
    arr = _stored(source, tensor)
    return np.take(arr, local, axis=0)


def open_table(path, *, tensor: str | None = None, write: bool = False, scheduler: str | None = None):
    """A ``Table`` for a table file, a ``ShardedTable`` for a sharded table's index."""
    if is_index(path):
        return ShardedTable.open(path, tensor=tensor, write=write, scheduler=scheduler)
    return Table.open(path, tensor=tensor, write=write)


# --------------------------------------------------------------------------------------------
# Writing new sharded tables


def _row_tensors(header_tensors: Mapping[str, st.TensorInfo], tensor: str, num_rows: int, where) -> list[str]:
    """The tensors split by rows (the table's and its optimizer state); any tensor other than
    these and the vocabulary is refused (a shard holds rows of one table)."""
    names = [tensor] + sorted(n for n in header_tensors if n.startswith(OPTIM_PREFIX))
    other = sorted(set(header_tensors) - set(names) - set(VOCAB_TENSORS))
    if other:
        raise ConfigError(f"{where}: holds tensors other than the table {tensor!r}, its optimizer state "
                          f"and vocabulary ({', '.join(other[:5])}); a sharded table holds one table")
    for n in names[1:]:
        if header_tensors[n].shape[:1] != (num_rows,):
            raise FormatError(f"{where}: optimizer state {n!r} has shape {list(header_tensors[n].shape)}, "
                              f"not the table's {num_rows} rows")
    return names


def _check_output(index_path: Path, force: bool) -> None:
    index_stem(index_path)
    if index_path.exists() and not force:
        raise OutputExistsError(f"{index_path} already exists; use --force to replace it")
    if index_path.is_dir():
        raise EmbtoolError(f"{index_path}: is a directory")
    if index_path.exists() and not is_index(index_path):
        raise EmbtoolError(f"{index_path} exists and is not a sharded table's index; remove it first")
    if index_path.exists():
        # Replacing every shard of a table that others may be reading is a multi-file
        # transaction; until the store offers one, the old table is removed by the user.
        raise EmbtoolError(f"{index_path}: replacing an existing sharded table is not supported yet; "
                           "remove it first")


def write_sharded(index_path, tensor: str, shape, dtype: str, metadata: Mapping[str, str], ranges,
                  write_shards: Callable[[list], object], *, vocab: Mapping[str, np.ndarray] | None = None,
                  force: bool = False) -> Index:
    """Write a new sharded table: ``write_shards(jobs)`` writes every shard, ``jobs`` being
    ``(i, path, metadata)`` per shard (shard ``i`` holds rows ``ranges[i]``; each file written
    atomically), then the vocabulary file gets ``vocab``, and the index comes last: the table
    exists once its index does.  On failure the shard files are removed again."""
    index_path = Path(index_path)
    _check_output(index_path, force)
    names = shard_file_names(index_path, len(ranges))
    folder = index_path.parent
    paths = [folder / name for name in names]
    jobs = [(i, paths[i], shard_metadata(index_path, lo, hi, shape[0])) for i, (lo, hi) in enumerate(ranges)]
    vocab_name = vocab_file_name(index_path) if vocab is not None else None
    try:
        write_shards(jobs)
        if vocab is not None:
            st.write_file(folder / vocab_name, dict(vocab), {SHARD_INDEX_KEY: index_path.name,
                                                            st.PRIMARY_KEY: index_path.name})
        shards = [Shard(name, lo, hi, path.stat().st_size) for name, path, (lo, hi) in zip(names, paths, ranges)]
        index = Index(index_path, tensor, (int(shape[0]), int(shape[1])), dtype, dict(metadata), vocab_name, shards)
        write_index(index)
    except BaseException:
        for path in paths + ([folder / vocab_name] if vocab_name else []):
            path.unlink(missing_ok=True)
        raise
    return index


def _write_each(ranges, row_tensors: Mapping[str, Callable[[int, int], object]], executor=None):
    """``write_sharded``'s ``write_shards`` for rows given by ``row_tensors`` (``name -> rows(lo,
    hi)``: an array or a ``ChunkedTensor`` of those rows as stored): in this process, as parallel
    threads with ``executor``, else one after the other in row order (a shared stream)."""
    def write_one(job):
        i, path, meta = job
        lo, hi = ranges[i]
        st.write_file(path, {name: rows(lo, hi) for name, rows in row_tensors.items()}, meta)

    def write_all(jobs):
        if executor is not None:
            executor.map(_Call(write_one), jobs)
        else:
            for job in jobs:
                write_one(job)

    return write_all


def shard_file_task(job) -> None:
    """Task: write one shard of a table file (``shard`` on a Dask cluster): its rows of each row
    tensor, mapped from the source file by path."""
    source, tensors, lo, hi, path, meta = job
    mapped = Mapped(source)
    st.write_file(path, {name: st.as_stored(mapped.array(name)[lo:hi], dtype) for name, dtype in tensors}, meta)


class _Call:
    """A picklable-enough wrapper so that ``executor.map`` can run a closure in threads."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, arg):
        return self.fn(arg)


def _stream_rows(total_rows: int, chunks: Callable[[], Iterator[np.ndarray]], ranges, dtype: str, dim: int):
    """Split one stream of row blocks (in row order) into the shards' rows: ``rows(lo, hi)`` gives
    a ``ChunkedTensor`` drawing on the shared stream, so the shards must be written in order,
    one after the other (a generated table is never whole in memory)."""
    stream = iter(())
    pending: list[np.ndarray] = []
    started = False

    def rows(lo, hi):
        def gen():
            nonlocal stream, started
            if not started:
                stream, started = iter(chunks()), True
            need = hi - lo
            while need:
                block = pending.pop(0) if pending else np.asarray(next(stream))
                if block.ndim != 2:
                    block = block.reshape(-1, dim)
                if len(block) > need:
                    pending.insert(0, block[need:])
                    block = block[:need]
                need -= len(block)
                yield block

        return st.ChunkedTensor(dtype, (hi - lo, dim), gen)

    return rows


def create_sharded(index_path, tensors: Mapping[str, object], config: Config, *, weight_dtype: str = "F32",
                   extra_metadata: Mapping[str, str] | None = None, shards: int | None = None,
                   rows_per_shard: int | None = None, force: bool = False) -> Index:
    """``table.create`` for a sharded table: ``tensors["weight"]`` holds values (any float array)
    or a ``ChunkedTensor`` already in ``weight_dtype``'s storage form (streamed into the shards in
    row order); the vocabulary tensors go to the vocabulary file.  The metadata is that of
    ``create``, so ``unshard`` of the result is ``create``'s file byte for byte."""
    if weight_dtype not in TABLE_DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(TABLE_DTYPES)}, not {weight_dtype}")
    weight = tensors["weight"]
    meta = dict(extra_metadata or {})
    meta.update(config.to_metadata())
    vocab = {n: tensors[n] for n in VOCAB_TENSORS if n in tensors}
    other = sorted(set(tensors) - {"weight"} - set(vocab))
    if other:
        raise ConfigError(f"a sharded table holds a table and its vocabulary, not {', '.join(other)}")
    if isinstance(weight, st.ChunkedTensor):  # generated rows: one stream, shard after shard
        n, dim = weight.shape
        ranges = plan_rows(n, shards, rows_per_shard)
        writer = _write_each(ranges, {"weight": _stream_rows(n, weight.chunks, ranges, weight.dtype, dim)})
    else:  # rows in memory: shards written in parallel
        from .execute import InProcess

        stored = to_storage(np.asarray(weight), weight_dtype)
        n, dim = stored.shape
        ranges = plan_rows(n, shards, rows_per_shard)
        writer = _write_each(ranges, {"weight": lambda lo, hi: st.as_stored(stored[lo:hi], weight_dtype)},
                             InProcess())
    return write_sharded(index_path, "weight", (n, dim), weight_dtype, meta, ranges, writer,
                         vocab=vocab or None, force=force)


# --------------------------------------------------------------------------------------------
# Conversions


def shard_table(source, index_path, *, shards: int | None = None, rows_per_shard: int | None = None,
                tensor: str | None = None, force: bool = False, scheduler: str | None = None) -> dict:
    """``embtool shard``: split the table ``source`` (a table file, or a sharded table to
    re-shard) into a new sharded table at ``index_path``, bit for bit: every row of the table and
    of its optimizer state, the vocabulary and the metadata as they are.  Shards are written as
    parallel tasks."""
    index_path = Path(index_path)
    _check_output(index_path, force)
    with open_table(source, tensor=tensor, scheduler=scheduler) as t:
        n, dim = t.shape
        if isinstance(t, ShardedTable):
            infos = {t.tensor: t.dtype, **{k: v.dtype for k, v in t.optimizer_tensors().items()}}
            sources = {name: t.stored_rows(name) for name in infos}
            vocab = t.vocab.arrays() if t.has_vocab else None
        else:
            if t.files is not None or t.notes or t.dtype not in TABLE_DTYPES:
                raise ConfigError(f"{source}: {'; '.join(t.notes) or 'not a table file'}: make a table of it "
                                  "with `embtool load-pretrained` first, then shard that")
            names = _row_tensors(t.store.tensors, t.tensor, n, t.path)
            infos = {name: t.store.tensors[name].dtype for name in names}
            sources = {name: t.store.array(name) for name in names}
            partial = [k for k in VOCAB_TENSORS if k in t.store.tensors]
            if partial and not t.has_vocab:
                raise FormatError(f"{t.path}: an incomplete vocabulary (only {', '.join(partial)})")
            vocab = {k: t.store.array(k) for k in VOCAB_TENSORS} if t.has_vocab else None
        ranges = plan_rows(n, shards, rows_per_shard)
        from .execute import InProcess, executor

        run = executor(scheduler)
        if run.remote and not isinstance(t, ShardedTable):  # the workers read the file by path

            def writer(jobs):
                run.map(shard_file_task, [(str(Path(source).resolve()), list(infos.items()), *ranges[i],
                                           str(path.resolve()), meta) for i, path, meta in jobs], retry=False)
        else:
            def rows_of(name):
                src, dtype = sources[name], infos[name]
                return lambda lo, hi: st.as_stored(np.asarray(src[lo:hi]), dtype)

            writer = _write_each(ranges, {name: rows_of(name) for name in infos}, InProcess())
        index = write_sharded(index_path, t.tensor, (n, dim), t.dtype, dict(t.metadata), ranges, writer,
                              vocab=vocab, force=force)
    return {"index": str(index_path), "shards": len(index.shards), "rows": n, "dim": dim,
            "tensors": list(infos), "vocab": index.vocab}


def unshard_table(index_path, out, *, force: bool = False, progress=None) -> dict:
    """``embtool unshard``: the sharded table as one table file, bit for bit (the same tensors
    and metadata; for a table written by embtool, the same bytes)."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists; use --force to replace it")
    with ShardedTable.open(index_path) as t:
        n, dim = t.shape
        tensors: dict[str, object] = {}
        for name, info in [(t.tensor, None)] + sorted(t.optimizer_tensors().items()):
            dtype = t.dtype if info is None else info.dtype
            arrays = [s.store.array(name) for s in t.shards]
            tensors[name] = st.ChunkedTensor(dtype, (n, dim), _concat(arrays))
        if t.has_vocab:
            tensors.update(t.vocab.arrays())
        st.write_file(out, tensors, dict(t.metadata), progress=progress)
    return {"table": str(out), "rows": n, "dim": dim, "shards": len(t.index.shards)}


def _concat(arrays: Sequence[np.ndarray]):
    def chunks():
        for arr in arrays:
            yield from st._tensor_chunks(arr)

    return chunks
