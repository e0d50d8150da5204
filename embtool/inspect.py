"""``info``: the facts of any safetensors file, and of the table in it."""
from __future__ import annotations

import json
from pathlib import Path

from . import store as st
from .errors import FormatError
from .table import PREFIX, Table


def describe(path, tensor: str | None = None, *, vocab_sample: int = 10) -> dict:
    """Header facts of any safetensors file plus, when it holds a table, the table's."""
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
    if PREFIX + "optim.name" in meta:
        try:
            hparams = json.loads(meta.get(PREFIX + "optim.hparams", "{}"))
        except json.JSONDecodeError:
            hparams = meta.get(PREFIX + "optim.hparams")
        facts["optimizer"] = {
            "name": meta[PREFIX + "optim.name"],
            "step": meta.get(PREFIX + "optim.step"),
            "hparams": hparams,
            "state": sorted(t.optimizer_tensors()),
        }
    return facts
