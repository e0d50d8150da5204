"""``from_pretrained`` for files: vector files, ``.npy`` and tensors of other safetensors files become
tables (with their words), and tables go back to vector files.

Decisions (docs/semantics.md §7.8):

* a vector file's table is **frozen** by default, as ``nn.Embedding.from_pretrained``;
* ``padding_token`` / ``unk_token``: an existing word's row is used; a missing one is appended as a
  new zero row (from_pretrained does not zero an existing padding row, and neither do we);
  padding_idx is set to the padding row, and the unk row is recorded as ``embtool.unk_idx`` for
  ``lookup --words --unknown unk``;
* a tensor of a safetensors file (``--tensor``) or a ``.npy`` array is loaded as it is: F16 and
  BF16 are widened exactly to the requested dtype (float32 by default); ``vocab_file`` names its
  rows, one token per line.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .config import PREFIX, UNK_KEY, Config
from .errors import ConfigError, FormatError, OutputExistsError
from .store import replace_atomically
from .table import Table, bf16_to_f32, create

DTYPE_NAMES = {"F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16"}


def is_safetensors(path) -> bool:
    if str(path) == "-":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (100 << 20)


def _from_safetensors(source, tensor, dtype: str):
    """A 2-D tensor of another safetensors file as values of ``dtype`` (widened exactly)."""
    with Table.open(source, tensor=tensor) as t:
        raw = t.raw
        if t.dtype == "BF16":
            values = bf16_to_f32(raw)
        else:
            values = np.array(raw)
        summary = f"loaded {t.num_embeddings} x {t.embedding_dim} {t.dtype} tensor {t.tensor!r} from {source}"
    return values.astype(_numpy_dtype(dtype), copy=False), summary


def _numpy_dtype(dtype: str):
    return {"float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": np.float32}[dtype]


def load_pretrained(source, table_path, *, format: str = "auto", tensor: str | None = None,
                    vocab_file=None, limit=None, dtype: str = "float32", encoding: str = "utf-8",
                    unicode_errors: str = "strict", on_duplicate: str = "first",
                    allow_nonfinite: bool = False, padding_token: str | None = None,
                    unk_token: str | None = None, freeze: bool = True, config: Config = Config(),
                    overrides: dict | None = None, force: bool = False, progress=None) -> dict:
    """Build the table at ``table_path`` from ``source``; returns a summary (``summary`` is one line).

    ``overrides``: nn.Embedding options as a user gives them (``Config.with_overrides``), checked
    against the rows loaded."""
    from .formats import read_vectors
    from .vocab import Vocab, encode_vocab, extend_vocab, read_vocab_file

    table_path = Path(table_path)
    if table_path.exists() and not force:
        raise OutputExistsError(f"{table_path} already exists; use --force to replace it")
    if format in ("auto", "safetensors") and is_safetensors(source):
        vectors, summary = _from_safetensors(source, tensor, dtype)
        if limit is not None:
            vectors = vectors[:limit]
        arrays = None
        if vocab_file is not None:
            words = read_vocab_file(vocab_file)
            if len(words) < len(vectors) or (limit is None and len(words) != len(vectors)):
                raise FormatError(f"{vocab_file}: {len(words)} tokens for {len(vectors)} rows of the tensor")
            arrays = encode_vocab(words[: len(vectors)])
    else:
        if format == "safetensors":
            raise FormatError(f"{source}: not a safetensors file")
        if tensor is not None:
            raise ConfigError("--tensor applies to a safetensors source only")
        loaded = read_vectors(source, format=format, limit=limit, dtype=dtype, encoding=encoding,
                              unicode_errors=unicode_errors, on_duplicate=on_duplicate,
                              allow_nonfinite=allow_nonfinite, progress=progress)
        vectors = loaded.vectors
        summary = loaded.summary()
        arrays = loaded.vocab_arrays()
        if vocab_file is not None:
            if arrays is not None:
                raise ConfigError("--vocab names the rows of a tensor or .npy; this file has its own words")
            words = read_vocab_file(vocab_file)
            if len(words) != len(vectors):
                raise FormatError(f"{vocab_file}: {len(words)} tokens for {len(vectors)} rows")
            arrays = encode_vocab(words)

    extra_meta: dict[str, str] = {}
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
    tensors: dict[str, object] = {"weight": vectors}
    if arrays is not None:
        tensors.update(arrays)
    stored = {name: code for code, name in DTYPE_NAMES.items()}[dtype]
    extra_meta[PREFIX + "source"] = str(source)
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
    if vocab is not None and fmt != "npy":
        words = vocab.head(len(vocab))
    elif vocab is None and fmt != "npy":
        words = [str(i) for i in range(table.num_embeddings)]  # row numbers name the rows
    targets = [Path(out)] if str(out) != "-" else []
    if fmt == "npy" and vocab is not None:
        vocab_out = Path(vocab_out) if vocab_out else Path(str(out)).with_suffix(".vocab.txt")
        targets.append(vocab_out)
    for p in targets:
        if p.exists() and not force:
            raise OutputExistsError(f"{p} already exists; use --force to replace it")
    values = table.weight()
    if str(out) == "-":
        write_vectors("-", words, values, format=fmt, progress=progress)
    else:
        replace_atomically(Path(out), lambda tmp: write_vectors(tmp, words, values, format=fmt, progress=progress))
    if fmt == "npy" and vocab is not None:
        replace_atomically(vocab_out, lambda tmp: write_vocab_file(tmp, vocab))
    return {"format": fmt, "rows": table.num_embeddings, "dim": table.embedding_dim,
            "vocab_file": str(vocab_out) if fmt == "npy" and vocab is not None else None,
            "row_numbers_as_words": vocab is None and fmt != "npy"}
