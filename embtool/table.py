"""The table: a 2-D ``weight`` tensor plus nn.Embedding's configuration, an optional vocabulary and
optional optimizer state, all inside one safetensors file.

Layout (format version 1):

* ``weight`` ``[num_embeddings, embedding_dim]``, F32 (default), F64, F16 or BF16;
* ``vocab.bytes`` / ``vocab.offsets`` / ``vocab.order``: words as UTF-8 bytes and a sorted index
  (see ``embtool.vocab``), present when the table has a vocabulary;
* ``optim.<state>``: optimizer state tensors (see ``embtool.optim``);
* ``__metadata__`` keys ``embtool.*`` (all strings): ``format_version``, ``padding_idx``,
  ``max_norm`` (``none`` or a float), ``norm_type``, ``scale_grad_by_freq``, ``sparse``,
  ``frozen`` and the optimizer description.  Other keys are preserved across every rewrite.

Any other safetensors file opens as a table too: ``tensor=`` names a 2-D tensor, and with a single
2-D tensor (or one called ``weight``) it is the default; its configuration is nn.Embedding's
defaults unless the caller overrides it.
"""
from __future__ import annotations

from numbers import Integral
from pathlib import Path
from typing import Mapping

import numpy as np

from . import store as st
from .config import PREFIX, TABLE_DTYPES, Config, pick_tensor
from .dtypes import FROM_NUMPY, describe_widening, f32_to_bf16, to_storage, value_dtype, widen
from .errors import (ConfigError, EmbtoolError, FormatError, IndexRangeError, KeyNotFoundError,
                     OutputExistsError, StateError)

VOCAB_TENSORS = ("vocab.bytes", "vocab.offsets", "vocab.order")


# --------------------------------------------------------------------------------------------
# The table


class Table(st.Closing):
    """An open table.  Use ``Table.open(path)`` (or ``embtool.open``) and ``close()`` / ``with``."""

    def __init__(self, store: st.Store, tensor: str | None = None, *, files=None):
        self.store = store
        #: where a model folder's or index's parts are (``embtool.model_files.ModelFiles``)
        self.files = files
        self.path = files.path if files is not None else store.path
        self.tensor = pick_tensor(store.header, tensor, store.path, write=store.write)
        info = store.tensors[self.tensor]
        self.dtype = info.dtype
        self.num_embeddings, self.embedding_dim = info.shape
        self.is_embtool = PREFIX + "format_version" in store.metadata
        self._vocab = None
        self._values = None
        self._norms = None
        #: how the stored tensor is read (widened, vocabulary-quantised ...), for summaries
        self.notes: list[str] = [n for n in (describe_widening(self.dtype),) if n]
        self._model2vec()
        self.config = Config.from_metadata(store.metadata, self.num_embeddings, self.path)

    def _model2vec(self) -> None:
        """A model2vec model stored vocabulary-quantised is read as the table it stands for."""
        from .model_files import model2vec_parts, model2vec_rows

        parts = model2vec_parts(self.store.tensors, self.tensor)
        if parts is None:
            return
        if self.store.write:
            raise FormatError(f"{self.path}: a model2vec model with {' and '.join(p for p in parts if p)} "
                              "is read-only; make a table of it with `embtool load-pretrained` first")
        mapping, weights = (None if n is None else self.store.array(n) for n in parts)
        values = model2vec_rows(self.store.path, widen(self.store.array(self.tensor), self.dtype),
                                mapping, weights)
        k = self.num_embeddings
        self._values = values
        self.dtype = FROM_NUMPY[values.dtype.name]
        self.num_embeddings = values.shape[0]
        if mapping is not None:
            self.notes.append(f"vocabulary-quantised: {self.num_embeddings} rows from {k} vectors "
                              "by 'mapping'" + (", times 'weights'" if weights is not None else ""))
        else:
            self.notes.append("rows times 'weights'")

    @classmethod
    def open(cls, path, *, tensor: str | None = None, write: bool = False) -> "Table":
        """Open a table file, or (read-only) a model folder or a sharded checkpoint's index
        (``embtool.model_files``); any other file is refused naming what it is."""
        from .model_files import other_shard, resolve
        from .sniff import require_table_file

        files = resolve(path, tensor)
        if files.kind != "file":
            if write:
                raise EmbtoolError(f"{path}: a model {files.kind} is read-only; make a table of "
                                   "it with `embtool load-pretrained` first")
        else:
            require_table_file(files.weights)
            files = None
        s = st.Store(files.weights if files else path, write=write)
        try:
            return cls(s, files.tensor if files else tensor, files=files)
        except FormatError:
            s.close()
            hint = other_shard(Path(path), tensor) if tensor is not None and files is None \
                and tensor not in s.tensors else None
            if hint:
                raise FormatError(f"{path}: no tensor {tensor!r}; {hint}") from None
            raise
        except BaseException:
            s.close()
            raise

    # -- reading ------------------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, str]:
        return self.store.metadata

    @property
    def raw(self) -> np.ndarray:
        """The stored weight, zero-copy (BF16 as uint16 bits); a vocabulary-quantised model2vec
        model's rows are computed once."""
        if self._values is not None:
            return self._values
        return self.store.array(self.tensor)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_embeddings, self.embedding_dim)

    @property
    def value_dtype(self) -> np.dtype:
        return value_dtype(self.dtype)

    def weight(self) -> np.ndarray:
        """The weight as values: a zero-copy view, except BF16 (widened copy)."""
        return widen(self.raw, self.dtype)

    def streamed(self):
        """The weight for reading piece by piece (a streamed search): a zero-copy view, or for
        BF16, float8 and integer tables an array-like whose slices are widened as they are
        taken, never the whole table at once."""
        return self.weight() if self.dtype in ("F32", "F64", "F16") else _Widened(self.raw, self.dtype)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (flat int64, range-checked by the caller) as values, a copy."""
        return widen(np.take(self.raw, ids, axis=0), self.dtype)

    @property
    def has_vocab(self) -> bool:
        """The file holds a vocabulary (a model folder's tokenizer: see ``vocab``)."""
        return all(n in self.store.tensors for n in VOCAB_TENSORS)

    @property
    def vocab(self):
        """The vocabulary (``embtool.vocab.Vocab`` over the mapped tensors, or read from a model
        folder's tokenizer) or None."""
        if self._vocab is None and self.has_vocab:
            from .norms import Checked
            from .vocab import Vocab, check_arrays

            checked = Checked(self.store, VOCAB_TENSORS[-1], "vocab")
            arrays = [self.store.array(n) for n in VOCAB_TENSORS]
            if not checked.known():  # O(N) once per open, and not again while the file is unchanged
                check_arrays(*arrays, where=str(self.path))
                checked.keep()
            self._vocab = Vocab(*arrays)
            if len(self._vocab) != self.num_embeddings:
                raise FormatError(f"{self.path}: vocabulary has {len(self._vocab)} words for "
                                  f"{self.num_embeddings} rows")
        elif self._vocab is None and self.files is not None and self.files.tokenizer is not None:
            from .vocab import Vocab, encode_vocab_rows
            from .vocab_files import read_vocabulary

            found = read_vocabulary(self.files.tokenizer, self.num_embeddings)
            self._vocab = Vocab.from_arrays(encode_vocab_rows(found.words))
        elif self._vocab is None and any(n in self.store.tensors for n in VOCAB_TENSORS):
            missing = [n for n in VOCAB_TENSORS if n not in self.store.tensors]
            raise FormatError(f"{self.path}: incomplete vocabulary: no {', '.join(missing)}")
        return self._vocab

    def optimizer_tensors(self) -> dict[str, st.TensorInfo]:
        return {n: t for n, t in self.store.tensors.items() if n.startswith("optim.")}

    # -- a mapping from words (or row ids) to vectors -------------------------------------------
    def __repr__(self) -> str:
        if self.store.fd < 0:
            return f"<embtool.Table {str(self.path)!r} (closed)>"
        try:
            vocab = "no vocabulary" if self.vocab is None else f"{len(self.vocab):,} words"
        except EmbtoolError as exc:  # a repr never fails
            vocab = f"unreadable vocabulary ({exc})"
        frozen = ", frozen" if self.config.frozen else ""
        return (f"<embtool.Table {str(self.path)!r} tensor={self.tensor!r} "
                f"{self.num_embeddings:,} x {self.embedding_dim} {self.dtype}, {vocab}{frozen}>")

    def __len__(self) -> int:
        return self.num_embeddings

    def __iter__(self):
        """The keys: the words in row order, or the row ids of a table without a vocabulary."""
        return iter(range(self.num_embeddings)) if self.vocab is None else iter(self.vocab)

    def __contains__(self, key) -> bool:
        try:
            self.row_of(key)
        except (EmbtoolError, TypeError):
            return False
        return True

    def __getitem__(self, key) -> np.ndarray:
        """``t["king"]`` or ``t[5]``: one row (D,); ``t[["king", 7]]``, an id array, or a slice:
        rows (n, D).  Values are copies in the table's value dtype (BF16 widened to float32)."""
        if isinstance(key, slice):
            return np.array(self.streamed()[key])
        if not isinstance(key, (list, tuple, np.ndarray)):
            return self.rows(np.array([self.row_of(key)], np.int64))[0]
        keys = np.asarray(key, dtype=None if isinstance(key, np.ndarray) else object)
        if keys.dtype.kind in "iu":
            ids = keys.reshape(-1).astype(np.int64)
            for i in ids[(ids < 0) | (ids >= self.num_embeddings)][:1]:
                self.row_of(int(i))  # raises, naming the id
        else:
            ids = np.array([self.row_of(k) for k in keys.reshape(-1)], np.int64)
        return self.rows(ids).reshape(*keys.shape, self.embedding_dim)

    def row_of(self, key) -> int:
        """The row of a word, or a row id checked against the table's size."""
        if isinstance(key, (Integral, np.integer)) and not isinstance(key, bool):
            if not 0 <= key < self.num_embeddings:
                raise IndexRangeError(f"row {key} is out of range for a table of "
                                      f"{self.num_embeddings} rows")
            return int(key)
        if isinstance(key, str):
            if self.vocab is None:
                raise KeyNotFoundError(f"{self.path} has no vocabulary: give row ids, not {key!r}")
            row = self.vocab.find(key)
            if row < 0:
                raise KeyNotFoundError(f"word {key!r} is not in the vocabulary of {self.path}")
            return row
        raise TypeError(f"a key is a word or a row id, not {type(key).__name__}")

    @property
    def norms(self):
        """The row norms of the weight, kept between queries (``embtool.norms.RowNorms``)."""
        if self._norms is None:
            from .norms import RowNorms

            self._norms = RowNorms(self.store, self.tensor)
        return self._norms

    def most_similar(self, positive=None, negative=None, topn=10, restrict_vocab=None):
        """gensim's ``KeyedVectors.most_similar``: the ``topn`` keys closest by cosine to the
        mean of the unit ``positive`` rows minus the ``negative`` ones, best first, as
        ``[(word or row id, score), ...]``; input rows are left out.

        Keys are words or row ids; a 1-D array is used as a raw vector; ``(key, weight)``
        replaces the default weight of +1 (positive) / -1 (negative).  ``restrict_vocab=N``
        searches the first N rows.  Unlike gensim, ``topn=None`` ranks every row (gensim
        returns the raw array of scores).
        """
        return self.most_similar_many([{"positive": positive, "negative": negative}], topn=topn,
                                      restrict_vocab=restrict_vocab)[0]

    def most_similar_many(self, queries, topn=10, restrict_vocab=None):
        """``most_similar`` for many queries in one pass over the table, with the results of
        one call per query.  A query is a key, a list of positive keys, or a dict with
        ``positive`` and ``negative`` keys."""
        from .similar import most_similar_many

        resolved = []
        for query in queries:
            if isinstance(query, dict):
                unknown = set(query) - {"positive", "negative"}
                if unknown:
                    raise ConfigError(f"a query has keys positive and negative, not {sorted(unknown)}")
                pos, neg = query.get("positive"), query.get("negative")
            else:
                pos, neg = query, None
            resolved.append((self._query_items(pos), self._query_items(neg)))
        found = most_similar_many(self.streamed(), self.vocab, resolved, topn=topn,
                                  restrict_vocab=restrict_vocab, norms=self.norms)
        if self.vocab is None:
            return found
        return [[(self.vocab.word(r), s) for r, s in result] for result in found]

    def _query_items(self, value):
        """Keys of a ``most_similar`` argument as row ids (vectors and weights kept)."""
        if value is None:
            return []
        if isinstance(value, (str, Integral, np.integer)) or (
                isinstance(value, np.ndarray) and value.ndim == 1):
            value = [value]
        items = []
        for item in value:
            if isinstance(item, tuple) and len(item) == 2 and not isinstance(item[1], str):
                key, weight = item
                items.append((key if isinstance(key, np.ndarray) else self.row_of(key), weight))
            else:
                items.append(item if isinstance(item, np.ndarray) else self.row_of(item))
        return items

    # -- writing ------------------------------------------------------------------------------
    def require_writable(self) -> None:
        if not self.store.write:
            raise EmbtoolError(f"{self.path}: internal error: table opened read-only")

    def update(self, rows: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
               metadata: Mapping[str, str] | None = None, *, tx: st.Transaction | None = None) -> None:
        """Change some rows of some tensors and/or the metadata as one crash-safe transaction
        (or as part of ``tx``, committed by the caller).

        ``rows`` maps a tensor name to (row ids, new values in the tensor's value dtype).  The
        write is O(k) in place through the log when the header has room for the new metadata;
        otherwise the file is rewritten atomically.
        """
        self.require_writable()
        if tx is None:
            with self.store.transaction() as own:
                self.update(rows, metadata, tx=own)
            if self.store.fd >= 0:
                self.config = Config.from_metadata(self.store.metadata, self.num_embeddings, self.path)
            return
        if rows:
            self._rows_changing()
        meta = _merged(self.metadata, metadata) if metadata else None
        stored = {}
        for name, (ids, values) in (rows or {}).items():
            dtype = self.store.tensors[name].dtype
            stored[name] = (ids, to_storage(values, dtype) if dtype in TABLE_DTYPES else np.asarray(values))
        tx.update(self.store, stored, meta)

    def rewrite(self, tensors: Mapping[str, object | None], metadata: Mapping[str, str] | None = None,
                *, progress=None, tx: st.Transaction | None = None) -> None:
        """Rewrite the file atomically with some tensors replaced (``None`` removes one); the
        table is closed afterwards (or, with ``tx``, the replacement is part of that transaction).
        Values for table-dtype tensors are given as values."""
        self.require_writable()
        self._rows_changing()
        out = {name: value for name, value in self.store.raw_tensors().items() if name not in tensors}
        for name, value in tensors.items():
            if value is None:
                continue
            if isinstance(value, st.ChunkedTensor):
                out[name] = value
            elif name in self.store.tensors and self.store.tensors[name].dtype == "BF16":
                out[name] = st.as_stored(f32_to_bf16(value), "BF16")
            else:
                out[name] = value
        meta = _merged(self.metadata, metadata)
        if tx is not None:
            tx.replace(self.path, out, meta, progress=progress)
            return
        try:
            with self.store.transaction() as own:
                own.replace(self.path, out, meta, progress=progress)
        finally:
            self.close()

    def _rows_changing(self) -> None:
        """Before any row changes (under the exclusive lock): drop the cached row norms."""
        if self._norms is not None:
            self._norms.forget()
        else:
            from .norms import invalidate

            invalidate(self.store.fd)

    def close(self) -> None:
        self.store.close()


def _merged(metadata: Mapping[str, str], changes: Mapping[str, str | None] | None) -> dict[str, str]:
    """``metadata`` with ``changes`` applied (a value of None removes the key)."""
    out = {**metadata, **(changes or {})}
    return {k: v for k, v in out.items() if v is not None}


class _Widened:
    """Rows of a stored tensor converted to values when indexed (``Table.streamed``)."""
    ndim = 2

    def __init__(self, raw, dtype: str):
        self.raw, self.stored = raw, dtype
        self.shape = raw.shape
        self.dtype = value_dtype(dtype)

    def __getitem__(self, key):
        return widen(self.raw[key], self.stored)


def create(path, tensors: Mapping[str, object], config: Config, *, weight_dtype: str = "F32",
           extra_metadata: Mapping[str, str] | None = None, force: bool = False, progress=None) -> None:
    """Write a new table file atomically.

    ``tensors["weight"]`` holds values (any float array, or a ``ChunkedTensor`` already in
    ``weight_dtype``'s storage form); other tensors are stored as given.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists; use --force to replace it")
    if path.is_dir():
        raise EmbtoolError(f"{path}: is a directory")
    if weight_dtype not in TABLE_DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(TABLE_DTYPES)}, not {weight_dtype}")
    out = dict(tensors)
    weight = out["weight"]
    if not isinstance(weight, st.ChunkedTensor):
        stored = to_storage(np.asarray(weight), weight_dtype)
        out["weight"] = st.as_stored(stored, weight_dtype)
    meta = dict(extra_metadata or {})
    meta.update(config.to_metadata())
    st.write_file(path, out, meta, progress=progress)


def check_trainable(table: Table) -> None:
    if table.config.frozen:
        raise StateError(f"{table.path}: the table is frozen; run `embtool unfreeze` first")
