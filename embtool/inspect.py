"""``info``: the facts of any safetensors file, and of the table in it (with ``stats``, the
statistics of ``embtool.stats``, the sampled rows named by their words)."""
from __future__ import annotations

from pathlib import Path

from . import jsontext, store as st
from .errors import FormatError
from .config import META_HPARAMS, META_NAME, META_STATE_FILE, META_STEP
from .shardindex import is_index
from .table import Table


def describe(path, tensor: str | None = None, *, vocab_sample: int = 10, stats: bool = False,
             progress=None) -> dict:
    """Header facts of any safetensors file plus, when it holds a table, the table's.  A model
    folder or a sharded checkpoint's index lists every tensor of every weight file (each with
    its ``file``) and the table found in it; a sharded table's index, the table it makes (with
    its ``shards``).  With ``stats`` also ``table_stats`` of the table's
    rows (``progress(n)`` after each block of n rows)."""
    facts = _describe(path, tensor, vocab_sample)
    if stats:
        if facts["table"] is None:
            raise FormatError(facts.get("table_error", f"{path}: no table"))
        facts["stats"] = _stats(path, tensor, progress)
    return facts


def _stats(path, tensor, progress) -> dict:
    from .sharded import open_table
    from .stats import table_stats

    with open_table(path, tensor=tensor) as t:
        stats = table_stats(t.weight(), progress=progress)
        if t.vocab is not None:  # name the sampled rows and their neighbours by their words
            for item in stats["neighbours"]:
                item["word"] = t.vocab.word(item["row"])
                item["neighbour_words"] = t.vocab.words([r for r, _ in item["neighbours"]])
    return stats


def _describe(path, tensor, vocab_sample) -> dict:
    from .model_files import resolve
    from .sniff import require_table_file

    if is_index(path):
        return _describe_sharded(Path(path), tensor, vocab_sample)
    files = resolve(path, tensor)
    if files.kind != "file":
        return _describe_model(files, tensor, vocab_sample)
    path = Path(path)
    require_table_file(path)
    with st.Store(path) as s:
        facts = {
            "path": str(path),
            "size_bytes": s.size,
            "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes}
                        for t in sorted(s.tensors.values(), key=lambda t: t.begin)],
            "metadata": dict(s.metadata),
            "table": None,
        }
        try:
            table = Table(s, tensor)
        except FormatError as exc:
            if tensor is not None:
                raise
            facts["table_error"] = str(exc)
            return facts
        facts["table"] = _table_facts(table, vocab_sample)
    return facts


def _describe_model(files, tensor, vocab_sample: int) -> dict:
    weight_files = sorted(set(files.shards.values())) if files.shards else [files.weights]
    tensors, size = [], 0
    for file in weight_files:
        if not file.is_file():
            continue
        size += file.stat().st_size
        header = st.read_header(file)
        tensors += [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes,
                     "file": str(file.relative_to(files.path if files.kind == "folder" else files.path.parent))}
                    for t in sorted(header.tensors.values(), key=lambda t: t.begin)]
    facts = {"path": str(files.path), "size_bytes": size, "tensors": tensors,
             "metadata": dict(st.read_header(files.weights).metadata), "table": None,
             "model": {"kind": files.kind, "weights": str(files.weights),
                       "tokenizer": None if files.tokenizer is None else str(files.tokenizer)}}
    try:
        table = Table.open(files.path, tensor=tensor)
    except FormatError as exc:
        if tensor is not None:
            raise
        facts["table_error"] = str(exc)
        return facts
    with table:
        facts["table"] = _table_facts(table, vocab_sample)
    return facts


def _describe_sharded(path: Path, tensor, vocab_sample: int) -> dict:
    from .sharded import ShardedTable

    with ShardedTable.open(path, tensor=tensor) as t:
        files = [path, *t.shard_paths] + ([t.index.vocab_path] if t.has_vocab else [])
        return {
            "path": str(path),
            "size_bytes": sum(f.stat().st_size for f in files),
            "tensors": [{"name": x.name, "dtype": x.dtype, "shape": list(x.shape), "bytes": x.nbytes}
                        for x in t.tensor_infos()],
            "metadata": dict(t.metadata),
            "table": _table_facts(t, vocab_sample),
            "shards": [{"file": s.file, "rows": [s.lo, s.hi], "bytes": s.nbytes} for s in t.index.shards],
        }


def _table_facts(t: Table, vocab_sample: int) -> dict:
    cfg = t.config
    facts = {
        "tensor": t.tensor,
        "num_embeddings": t.num_embeddings,
        "embedding_dim": t.embedding_dim,
        "dtype": t.dtype,
        "embtool_format": t.is_embtool,
        "padding_idx": cfg.padding_idx,
        "max_norm": cfg.max_norm,
        "norm_type": cfg.norm_type,
        "scale_grad_by_freq": cfg.scale_grad_by_freq,
        "sparse": cfg.sparse,
        "frozen": cfg.frozen,
        "vocab": None,
        "optimizer": None,
    }
    notes = list(t.notes)
    from .formats import fasttext

    if fasttext.MINN_KEY in t.metadata and fasttext.NGRAMS in t.store.tensors:
        notes.append(f"subwords: {t.store.tensors[fasttext.NGRAMS].shape[0]:,} fastText n-gram "
                     f"buckets, n-grams of {t.metadata[fasttext.MINN_KEY]}.."
                     f"{t.metadata[fasttext.MAXN_KEY]} characters")
    if notes:
        facts["notes"] = notes
    vocab = t.vocab
    if vocab is not None:
        facts["vocab"] = {"size": vocab.named, "rows_without_word": vocab.unnamed,
                          "sample": [w for w in vocab.head(min(vocab_sample, len(vocab))) if w is not None]}
    meta = t.metadata
    state_file = None
    if META_STATE_FILE in meta:  # the state lives in a file of its own (train-step --state)
        state_file = Path(t.path).parent / meta[META_STATE_FILE]
        header = st.read_header(state_file) if state_file.is_file() else None
        meta = header.metadata if header else {}
    if META_NAME in meta:
        try:
            hparams = jsontext.loads(meta.get(META_HPARAMS, "{}"), "optim.hparams")
        except FormatError:
            hparams = meta.get(META_HPARAMS)
        step = meta.get(META_STEP, "0")
        facts["optimizer"] = {
            "name": meta[META_NAME],
            "step": int(step) if step.isdigit() else step,
            "hparams": hparams,
            "state": sorted(header.tensors if state_file else t.optimizer_tensors()),
        }
    if state_file is not None:
        missing = {"name": None, "step": None, "hparams": None, "state": []}
        facts["optimizer"] = {**(facts["optimizer"] or missing), "state_file": str(state_file)}
    return facts
