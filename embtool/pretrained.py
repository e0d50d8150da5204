"""``from_pretrained`` for files: vector files, ``.npy``, fastText ``.bin`` models and tensors of
safetensors files, model folders and sharded checkpoints become tables (with their words), and
tables go back to vector files.

Decisions (docs/semantics.md §7.8):

* a vector file's table is **frozen** by default, as ``nn.Embedding.from_pretrained``;
* ``padding_token`` / ``unk_token``: an existing word's row is used; a missing one is appended as a
  new zero row (from_pretrained does not zero an existing padding row, and neither do we);
  padding_idx is set to the padding row, and the unk row is recorded as ``embtool.unk_idx`` for
  ``lookup --words --unknown unk``;
* a tensor of a safetensors file (``--tensor``), of a model folder or sharded checkpoint
  (``embtool.model_files``) or a ``.npy`` array is loaded as it is: F16, BF16, float8 and integer
  values are widened exactly to the requested dtype (float32 by default); its rows are named by
  ``vocab_file`` or, for a folder or index, by the tokenizer next to the weights
  (``embtool.vocab_files``); rows the vocabulary does not name have no word;
* a fastText ``.bin`` model keeps its n-gram buckets (``embtool.formats.fasttext``): unknown words
  get gensim's subword vectors in ``lookup --words``, ``similar`` and ``evaluate``;
* a gensim pickle (``.kv``, ``.model``) is recognised and refused, never unpickled.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from . import dtypes
from .config import PREFIX, UNK_KEY, Config
from .errors import ConfigError, FormatError, KeyNotFoundError, OutputExistsError
from .store import as_stored, replace_all_atomically
from .table import Table, create

DTYPE_NAMES = dtypes.NAMES
#: input formats of ``load_pretrained`` (``formats.FORMATS`` are the vector files among them)
SOURCE_FORMATS = ("auto", "glove", "word2vec", "word2vec-binary", "npy", "safetensors", "fasttext")


def _numpy_dtype(dtype: str):
    return dtypes.value_dtype(dtypes.code(dtype))


def source_kind(source, format: str = "auto") -> str:
    """How ``load_pretrained`` reads ``source``: ``model`` (a safetensors file, model folder or
    index), ``fasttext`` (a ``.bin`` model) or ``vectors`` (``formats.read_vectors``); files that
    are none of these (a pickle, a tokenizer.json) are refused here, naming what they are."""
    from .sniff import LOAD_FIRST, sniff

    if format == "safetensors":
        return "model"
    if format == "fasttext":
        return "fasttext"
    if str(source) == "-" or format != "auto":
        return "vectors"
    if not Path(source).exists():
        return "vectors"  # read_vectors names the missing file
    kind = sniff(source)
    if kind.name in ("folder", "safetensors", "hf-index"):
        return "model"
    if kind.name == "fasttext-bin":
        return "fasttext"
    if kind.name in ("pickle", "tokenizer", "json", "npz", "empty", "binary", "sharded-table"):
        hint = "" if not kind.hint or kind.hint.startswith(LOAD_FIRST) else f"; {kind.hint}"
        raise FormatError(f"{source}: this is {kind.what}, not a vector file or model{hint}")
    return "vectors"


def _from_model(source, tensor, dtype: str, vocab_file, limit, on_duplicate):
    """A 2-D tensor of a safetensors file, model folder or index as values of ``dtype`` (widened
    exactly), with the vocabulary naming its rows; returns (values, summary, vocab arrays)."""
    with Table.open(source, tensor=tensor) as t:
        values = t.weight()
        where = f" ({t.files.describe()})" if t.files is not None else ""
        summary = (f"loaded {t.num_embeddings} x {t.embedding_dim} {t.dtype} tensor {t.tensor!r} "
                   f"from {source}{where}" + "".join(f"; {n}" for n in t.notes))
        vocab_file = vocab_file if vocab_file is not None else (
            t.files.tokenizer if t.files is not None else None)
        values = values.astype(_numpy_dtype(dtype), copy=False)
    if limit is not None:
        values = values[:limit]
    arrays, note = _vocab_arrays(vocab_file, len(values), on_duplicate, cut=limit is not None)
    return values, summary + note, arrays


def _vocab_arrays(vocab_file, rows: int, on_duplicate: str, cut: bool):
    """The vocabulary tensors of ``rows`` rows named by ``vocab_file`` and a note for the summary."""
    if vocab_file is None:
        return None, ""
    from .vocab import encode_vocab_rows
    from .vocab_files import read_vocabulary

    found = read_vocabulary(vocab_file, rows, on_duplicate=on_duplicate, cut=cut)
    arrays = encode_vocab_rows(found.words)
    unnamed = found.unnamed
    note = (f"; words from {Path(vocab_file).name} ({found.kind}): {rows - unnamed} rows named"
            + (f", {unnamed} rows have no word" if unnamed else "")
            + "".join(f", {n}" for n in found.notes))
    return arrays, note


def _from_fasttext(source, dtype: str, limit, encoding, on_duplicate):
    """A fastText .bin model: gensim's word vectors, and the n-gram buckets kept as a tensor."""
    from .formats import fasttext
    from .vocab import encode_vocab

    if str(source) == "-":
        raise ConfigError("a fastText .bin model is read from a file (it is memory-mapped), not from "
                          "standard input (-)")
    model = fasttext.read_bin(source, encoding=encoding, on_duplicate=on_duplicate)
    vectors = fasttext.word_vectors(model)
    words = model.words
    if limit is not None:
        vectors, words = vectors[:limit], words[:limit]
    stored = dtypes.code(dtype)
    tensors, meta = {}, {}
    if len(model.ngrams):
        tensors[fasttext.NGRAMS] = as_stored(dtypes.to_storage(model.ngrams, stored), stored)
        meta = {fasttext.MINN_KEY: str(model.minn), fasttext.MAXN_KEY: str(model.maxn)}
    summary = (f"loaded {len(vectors)} x {vectors.shape[1]} float32 from {source} (fastText .bin; "
               f"{len(model.ngrams)} n-gram buckets, n-grams of {model.minn}..{model.maxn} "
               "characters)" + "".join(f"; {n}" for n in model.notes))
    return (vectors.astype(_numpy_dtype(dtype), copy=False), summary, encode_vocab(words),
            tensors, meta)


def load_pretrained(source, table_path, *, format: str = "auto", tensor: str | None = None,
                    vocab_file=None, limit=None, dtype: str = "float32", encoding: str = "utf-8",
                    unicode_errors: str = "strict", on_duplicate: str = "first",
                    allow_nonfinite: bool = False, padding_token: str | None = None,
                    unk_token: str | None = None, freeze: bool = True, config: Config = Config(),
                    overrides: dict | None = None, force: bool = False, progress=None,
                    shards: int | None = None, rows_per_shard: int | None = None) -> dict:
    """Build the table at ``table_path`` from ``source``; returns a summary (``summary`` is one line).
    With ``shards`` or ``rows_per_shard``, ``table_path`` is a sharded table's index.

    ``overrides``: nn.Embedding options as a user gives them (``Config.with_overrides``), checked
    against the rows loaded."""
    from .formats import read_vectors
    from .vocab import Vocab, extend_vocab

    table_path = Path(table_path)
    if table_path.exists() and not force:
        raise OutputExistsError(f"{table_path} already exists; use --force to replace it")
    if format not in SOURCE_FORMATS:
        raise ConfigError(f"format must be one of {', '.join(SOURCE_FORMATS)}, not {format!r}")
    kind = source_kind(source, format)
    extra_tensors: dict[str, object] = {}
    extra_meta: dict[str, str] = {}
    if kind != "model" and tensor is not None:
        raise ConfigError("--tensor applies to a safetensors file, model folder or index only")
    if kind == "model":
        vectors, summary, arrays = _from_model(source, tensor, dtype, vocab_file, limit, on_duplicate)
    elif kind == "fasttext":
        if vocab_file is not None:
            raise ConfigError("--vocab names the rows of a tensor or .npy; a fastText model has its own words")
        vectors, summary, arrays, extra_tensors, extra_meta = _from_fasttext(
            source, dtype, limit, encoding, on_duplicate)
    else:
        loaded = read_vectors(source, format=format, limit=limit, dtype=dtype, encoding=encoding,
                              unicode_errors=unicode_errors, on_duplicate=on_duplicate,
                              allow_nonfinite=allow_nonfinite, progress=progress)
        vectors = loaded.vectors
        summary = loaded.summary()
        arrays = loaded.vocab_arrays()
        if vocab_file is not None:
            if arrays is not None:
                raise ConfigError("--vocab names the rows of a tensor or .npy; this file has its own words")
            arrays, note = _vocab_arrays(vocab_file, len(vectors), on_duplicate, cut=limit is not None)
            summary += note

    n, d = vectors.shape
    added = []
    special = {}
    for role, token in (("padding", padding_token), ("unk", unk_token)):
        if token is None:
            continue
        if arrays is None:
            raise ConfigError(f"--{role}-token needs a vocabulary (words in the file or --vocab)")
        row = Vocab.from_arrays(arrays).find(token)
        if row < 0 and token in added:
            row = n + added.index(token)
        elif row < 0:
            row = n + len(added)
            added.append(token)
        special[role] = row
    if added:
        arrays = extend_vocab(arrays, added)
        vectors = np.concatenate([vectors, np.zeros((len(added), d), vectors.dtype)])
    cfg = replace(config, frozen=freeze).with_overrides(len(vectors), **(overrides or {}))
    if "padding" in special:
        if cfg.padding_idx is not None and cfg.padding_idx != special["padding"]:
            raise ConfigError("give either --padding-idx or --padding-token, not both")
        cfg = replace(cfg, padding_idx=special["padding"])
    if "unk" in special:
        extra_meta[UNK_KEY] = str(special["unk"])
    tensors: dict[str, object] = {"weight": vectors, **extra_tensors}
    if arrays is not None:
        tensors.update(arrays)
    stored = dtypes.code(dtype)
    extra_meta[PREFIX + "source"] = str(source)
    if shards is not None or rows_per_shard is not None:
        from .sharded import create_sharded

        create_sharded(table_path, tensors, cfg, weight_dtype=stored, extra_metadata=extra_meta,
                       shards=shards, rows_per_shard=rows_per_shard, force=force)
    else:
        create(table_path, tensors, cfg, weight_dtype=stored, extra_metadata=extra_meta, force=force)
    return {"summary": summary, "rows": len(vectors), "dim": d, "dtype": stored,
            "vocab": arrays is not None, "added_rows": added, "padding_idx": cfg.padding_idx,
            "unk_idx": special.get("unk"), "frozen": cfg.frozen}


EXPORT_FORMATS = ("glove", "word2vec", "word2vec-binary", "npy")
_BY_SUFFIX = {".txt": "glove", ".vec": "word2vec", ".bin": "word2vec-binary", ".npy": "npy"}


def export_format(out, fmt: str | None) -> str:
    if fmt:
        return fmt
    name = Path(str(out)).name.lower()
    for comp in (".gz", ".bz2", ".xz"):
        if name.endswith(comp):
            name = name[: -len(comp)]
    suffix = Path(name).suffix
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    raise ConfigError(f"cannot tell the format of {out} from its name; give --format "
                      f"({', '.join(EXPORT_FORMATS)})")


def export(table: Table, out, *, fmt: str | None = None, vocab_out=None, force: bool = False,
           progress=None) -> dict:
    """Write the table as a vector file (atomically: temporary file, then rename)."""
    from .formats import write_vectors, write_vocab_file

    fmt = export_format(out, fmt)
    vocab = table.vocab
    words = None
    if vocab is not None:
        words = _named_rows(table, vocab)
    elif fmt != "npy":
        words = [str(i) for i in range(table.num_embeddings)]  # row numbers name the rows
    targets = [Path(out)] if str(out) != "-" else []
    if fmt == "npy" and vocab is not None:
        vocab_out = Path(vocab_out) if vocab_out else Path(str(out)).with_suffix(".vocab.txt")
        targets.append(vocab_out)
    for p in targets:
        if p.exists() and not force:
            raise OutputExistsError(f"{p} already exists; use --force to replace it")
    values = table.weight()
    row_words = None if fmt == "npy" else words
    outputs = []  # every file of the export, written together or not at all
    if str(out) == "-":
        write_vectors("-", row_words, values, format=fmt, progress=progress)
    else:
        outputs.append((Path(out), lambda tmp: write_vectors(tmp, row_words, values, format=fmt,
                                                             progress=progress)))
    if fmt == "npy" and vocab is not None:
        outputs.append((vocab_out, lambda tmp: write_vocab_file(tmp, words)))
    replace_all_atomically(outputs)
    return {"format": fmt, "rows": table.num_embeddings, "dim": table.embedding_dim,
            "vocab_file": str(vocab_out) if fmt == "npy" and vocab is not None else None,
            "row_numbers_as_words": vocab is None and fmt != "npy"}


def _named_rows(table: Table, vocab) -> list[str]:
    """Every row's word for a vector file; a row without a word is named by its row number (as
    the rows of a table without a vocabulary are), which must not be another row's word."""
    words = vocab.head(len(vocab))
    if vocab.unnamed:
        for i, w in enumerate(words):
            if w is None:
                if vocab.find(str(i)) >= 0:
                    raise FormatError(f"{table.path}: row {i} has no word and its number {i!r} is "
                                      f"the word of row {vocab.find(str(i))}; it cannot be exported")
                words[i] = str(i)
    return words


# -- words of a fastText table: subword vectors --------------------------------------------------

UNKNOWN_POLICIES = ("error", "skip", "unk", "subword")


def has_subwords(table: Table) -> bool:
    """The table keeps a fastText model's n-gram buckets (``load-pretrained model.bin``)."""
    from .formats import fasttext

    return fasttext.MINN_KEY in table.metadata and fasttext.NGRAMS in table.store.tensors


def unknown_policy(table: Table, unknown: str | None, *, otherwise: str = "error",
                   allowed=UNKNOWN_POLICIES) -> str:
    """The policy for words not in the vocabulary: as given (one of ``allowed``), else
    ``subword`` for a table with n-gram buckets and ``otherwise`` for other tables."""
    if unknown is None:
        return "subword" if has_subwords(table) else otherwise
    if unknown not in allowed:
        raise ConfigError(f"unknown must be one of {', '.join(allowed)}, not {unknown!r}")
    if unknown == "subword" and not has_subwords(table):
        others = [p for p in allowed if p != "subword"]
        raise ConfigError(f"{table.path}: the table has no subword n-grams (load a fastText .bin "
                          f"model to get them); use --unknown {', '.join(others[:-1])} or {others[-1]}")
    return unknown


def evaluation_unknown(table: Table, unknown: str | None):
    """``evaluate``'s policy for words outside the known words and the function giving their
    vectors under it: ``(policy, subwords or None)``.  The default is ``subword`` for a table
    with n-gram buckets, else gensim's ``skip``."""
    from functools import partial

    from .evaluate import UNKNOWN_POLICIES as EVALUATE_POLICIES

    policy = unknown_policy(table, unknown, otherwise="skip", allowed=EVALUATE_POLICIES)
    return policy, (partial(subword_vectors, table) if policy == "subword" else None)


def subword_vectors(table: Table, words, *, unit: bool = False) -> np.ndarray:
    """gensim's ``FastTextKeyedVectors`` vectors of words not in the vocabulary, from the table's
    n-gram buckets (``unit``: ``get_vector(word, norm=True)``, as ``most_similar`` uses them), in
    the table's value dtype."""
    from .formats import fasttext

    meta = table.metadata
    ngrams = dtypes.widen(table.store.array(fasttext.NGRAMS), table.store.tensors[fasttext.NGRAMS].dtype)
    out = fasttext.subword_vectors(ngrams, list(words), int(meta[fasttext.MINN_KEY]),
                                   int(meta[fasttext.MAXN_KEY]), unit=unit)
    return out.astype(table.value_dtype, copy=False)


def lookup_words(table: Table, words, *, unknown: str | None = None, max_norm=None,
                 norm_type=None, padding_idx=None, write_back: bool = False):
    """Rows of ``words`` (``lookup --words``): ``(rows, keys.WordRows)``.  Words not in the
    vocabulary follow ``unknown`` (``unknown_policy``); with ``subword`` they get their subword
    vector (gensim's ``kv[word]``) and id -1.  max_norm applies to the table's rows, as
    ``F.embedding`` (a subword vector is computed, not a row: it is returned as gensim gives it)."""
    from .keys import WordRows, rows_for_words
    from .ops import lookup

    policy = unknown_policy(table, unknown)
    if policy != "subword":
        found = rows_for_words(table, words, unknown=policy)
        return lookup(table, found.ids, max_norm=max_norm, norm_type=norm_type, padding_idx=padding_idx,
                      write_back=write_back), found
    arr = np.array(words, dtype=object)
    flat = [str(w) for w in arr.reshape(-1)]
    ids = table.vocab.find_many(flat)
    known = ids >= 0
    out = np.empty((len(flat), table.embedding_dim), table.value_dtype)
    if known.any():
        out[known] = lookup(table, ids[known], max_norm=max_norm, norm_type=norm_type,
                            padding_idx=padding_idx, write_back=write_back)
    if not known.all():
        out[~known] = subword_vectors(table, [w for w, k in zip(flat, known) if not k])
    return out.reshape(arr.shape + (table.embedding_dim,)), WordRows(ids.reshape(arr.shape), flat)


def query_items(table: Table, items, *, unknown: str | None = None, as_ids: bool = False) -> list:
    """``similar``'s QUERY items as rows: row numbers (a table without a vocabulary, or
    ``as_ids``), else words; for words not in the vocabulary of a table with n-grams (``unknown``
    subword) gensim's unit subword vectors, which ``most_similar`` uses as they are; else an
    error naming the closest entries."""
    from .keys import rows_for_keys, unknown_word_message

    vocab = table.vocab
    if vocab is None or as_ids:
        return rows_for_keys(table, items, as_ids=True)
    policy = unknown_policy(table, unknown)
    out = []
    for item in items:
        row = vocab.find(item)
        if row >= 0:
            out.append(row)
        elif policy == "subword":
            out.append(subword_vectors(table, [item], unit=True)[0].astype(np.float32))
        else:
            raise KeyNotFoundError(unknown_word_message(vocab, item, table.path))
    return out
