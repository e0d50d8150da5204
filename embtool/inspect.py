"""``info``: the facts of any safetensors file, and of the table in it (with ``stats``, the
statistics of ``embtool.stats``, the sampled rows named by their words)."""
from __future__ import annotations

import json
from pathlib import Path

from . import store as st
from .errors import FormatError
from .optim import META_HPARAMS, META_NAME, META_STEP
from .table import Table


def describe(path, tensor: str | None = None, *, vocab_sample: int = 10, stats: bool = False,
             progress=None) -> dict:
    """Header facts of any safetensors file plus, when it holds a table, the table's; with
    ``stats`` also ``table_stats`` of its rows (``progress(n)`` after each block of n rows)."""
    facts = _describe(path, tensor, vocab_sample)
    if stats:
        if facts["table"] is None:
            raise FormatError(facts.get("table_error", f"{path}: no table"))
        facts["stats"] = _stats(path, tensor, progress)
    return facts


def _stats(path, tensor, progress) -> dict:
    from .stats import table_stats

    with Table.open(path, tensor=tensor) as t:
        stats = table_stats(t.weight(), progress=progress)
        if t.vocab is not None:  # name the sampled rows and their neighbours by their words
            for item in stats["neighbours"]:
                item["word"] = t.vocab.word(item["row"])
                item["neighbour_words"] = t.vocab.words([r for r, _ in item["neighbours"]])
    return stats


def _describe(path, tensor, vocab_sample) -> dict:
    path = Path(path)
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
    vocab = t.vocab
    if vocab is not None:
        facts["vocab"] = {"size": len(vocab), "sample": vocab.head(min(vocab_sample, len(vocab)))}
    meta = t.metadata
    if META_NAME in meta:
        try:
            hparams = json.loads(meta.get(META_HPARAMS, "{}"))
        except json.JSONDecodeError:
            hparams = meta.get(META_HPARAMS)
        step = meta.get(META_STEP, "0")
        facts["optimizer"] = {
            "name": meta[META_NAME],
            "step": int(step) if step.isdigit() else step,
            "hparams": hparams,
            "state": sorted(t.optimizer_tensors()),
        }
    return facts
