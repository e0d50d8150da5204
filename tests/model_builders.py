"""Real-shaped model files for the tests: Hugging Face tokenizer.json files of each model type,
sentence-transformers / model2vec / transformers folders, sharded checkpoints.

The tokenizer.json files follow the layout the ``tokenizers`` library writes (version, added_tokens,
normalizer, pre_tokenizer, model ...); where that library is installed the tests also check them
against it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "of", "and", "king", "queen", "man", "woman", "##s", "##ing", "paris", "berlin",
         "é", "日本", "prince", "princess", "run"]


def _added(tokens: dict[str, int]) -> list[dict]:
    return [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for t, i in tokens.items()]


def tokenizer_json(kind: str, tokens: list[str], added: dict[str, int] | None = None) -> dict:
    """A tokenizer.json of model type ``kind`` (WordPiece, BPE or Unigram) whose ids are the
    positions of ``tokens``; ``added`` are added tokens (content -> id)."""
    added = added or {}
    if kind == "WordPiece":
        model = {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                 "max_input_chars_per_word": 100, "vocab": {t: i for i, t in enumerate(tokens)}}
        pre = {"type": "BertPreTokenizer"}
    elif kind == "BPE":
        model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                 "ignore_merges": False, "vocab": {t: i for i, t in enumerate(tokens)}, "merges": []}
        pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    else:
        model = {"type": "Unigram", "unk_id": 1, "vocab": [[t, -float(i)] for i, t in enumerate(tokens)],
                 "byte_fallback": False}
        pre = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": _added(added),
            "normalizer": None, "pre_tokenizer": pre, "post_processor": None, "decoder": None,
            "model": model}


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def bert_tensors(rows: int, dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The tensor names and shapes of a small BERT (sentence-transformers MiniLM layout)."""
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"embeddings.word_embeddings.weight": r(rows, dim),
            "embeddings.position_embeddings.weight": r(32, dim),
            "embeddings.token_type_embeddings.weight": r(2, dim),
            "embeddings.LayerNorm.weight": r(dim), "embeddings.LayerNorm.bias": r(dim),
            "encoder.layer.0.attention.self.query.weight": r(dim, dim),
            "encoder.layer.0.attention.self.key.weight": r(dim, dim),
            "encoder.layer.0.output.dense.weight": r(dim, 2 * dim),
            "pooler.dense.weight": r(dim, dim)}


def sentence_transformers_folder(root: Path, tokens: list[str], dim: int = 8) -> dict:
    """A sentence-transformers folder: a transformer at the top, pooling, tokenizer.json."""
    tensors = bert_tensors(len(tokens), dim)
    root.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(root / "model.safetensors"))
    write_json(root / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    write_json(root / "1_Pooling" / "config.json", {"word_embedding_dimension": dim, "pooling_mode_mean_tokens": True})
    write_json(root / "config_sentence_transformers.json", {"__version__": {"sentence_transformers": "3.0.0"}})
    write_json(root / "config.json", {"architectures": ["BertModel"], "hidden_size": dim, "vocab_size": len(tokens)})
    write_json(root / "tokenizer.json", tokenizer_json("WordPiece", tokens))
    (root / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return tensors


def static_embedding_folder(root: Path, tokens: list[str], weight: np.ndarray) -> None:
    """sentence-transformers' StaticEmbedding layout (model2vec models saved through it)."""
    sub = root / "0_StaticEmbedding"
    sub.mkdir(parents=True, exist_ok=True)
    save_file({"embedding.weight": weight}, str(sub / "model.safetensors"))
    write_json(sub / "tokenizer.json", tokenizer_json("WordPiece", tokens))
    write_json(root / "modules.json", [
        {"idx": 0, "name": "0", "path": "0_StaticEmbedding",
         "type": "sentence_transformers.models.StaticEmbedding"},
        {"idx": 1, "name": "1", "path": "1_Normalize", "type": "sentence_transformers.models.Normalize"}])
    write_json(root / "config_sentence_transformers.json", {})


def model2vec_folder(root: Path, tokens: list[str], tensors: dict[str, np.ndarray]) -> None:
    """model2vec's own layout: model.safetensors (embeddings [+ mapping, weights]), tokenizer.json,
    config.json."""
    root.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(root / "model.safetensors"))
    write_json(root / "tokenizer.json", tokenizer_json("WordPiece", tokens))
    write_json(root / "config.json", {"model_type": "model2vec", "normalize": True,
                                      "hidden_dim": int(tensors["embeddings"].shape[1])})


def sharded_checkpoint(root: Path, tensors: dict[str, np.ndarray], split: list[list[str]],
                       tokens: list[str] | None = None) -> Path:
    """model-0000k-of-0000n.safetensors files holding the named groups, and the index."""
    root.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for k, names in enumerate(split, 1):
        file = f"model-{k:05d}-of-{len(split):05d}.safetensors"
        save_file({n: tensors[n] for n in names}, str(root / file))
        weight_map.update({n: file for n in names})
    total = sum(t.nbytes for t in tensors.values())
    index = write_json(root / "model.safetensors.index.json",
                       {"metadata": {"total_size": total}, "weight_map": weight_map})
    if tokens is not None:
        write_json(root / "tokenizer.json", tokenizer_json("BPE", tokens))
    return index
