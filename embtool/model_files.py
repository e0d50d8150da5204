"""Model folders and sharded checkpoints: where a model's embedding tensor and its tokenizer are.

A table command (``info``, ``lookup``, ``similar``, ``evaluate``, ``export``, ``load-pretrained``)
accepts, besides a safetensors file:

* a **folder** in one of the layouts model packages ship:

  - model2vec: ``model.safetensors`` (tensor ``embeddings``, optional ``mapping`` / ``weights``)
    with ``tokenizer.json`` and ``config.json``;
  - sentence-transformers: ``modules.json`` lists the modules; the first one with weights is
    used (``0_StaticEmbedding/model.safetensors`` with ``embedding.weight``, or a transformer at
    the top level);
  - transformers: ``model.safetensors`` or ``model.safetensors.index.json`` with its shards;
  - otherwise the only ``*.safetensors`` (or ``*.safetensors.index.json``) in the folder;

* a sharded checkpoint's **index** ``*.safetensors.index.json`` (``sniff.is_hf_index``): its
  ``weight_map`` names the shard of each tensor, so only that shard is opened (and mapped: the
  table stays zero-copy).

The embedding tensor is ``tensor`` when given; otherwise the one tensor whose name says it is the
token embedding (``EMBEDDING_NAMES``), else the only 2-D tensor; otherwise the error lists the
first few 2-D candidates.  The tokenizer is ``tokenizer.json`` (else ``vocab.txt``) next to the
weight file, else at the top of the folder.  Folders and indexes are read-only: writing commands
need a table made by ``embtool load-pretrained``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import store as st
from .config import listing, table_candidates
from .errors import FormatError
from .sniff import is_hf_index, sniff

#: names (whole, or the last dotted components) of token-embedding tensors in model packages:
#: model2vec, sentence-transformers static, BERT family, Llama/Mistral/Qwen, GPT-2, Llama 1
#: (``tok_embeddings``), T5 (``shared``), GPT-NeoX (``embed_in``)
EMBEDDING_NAMES = ("embeddings", "embedding.weight", "word_embeddings.weight",
                   "embed_tokens.weight", "wte.weight", "tok_embeddings.weight", "shared.weight",
                   "embed_in.weight")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors")
#: model2vec's vocabulary quantisation: row i = embeddings[mapping[i]] * weights[i]
M2V_TABLES = ("embeddings", "embedding.weight")


@dataclass
class ModelFiles:
    """Where the parts of a model are."""
    path: Path                       #: what was given
    kind: str                        #: "file", "folder" or "index"
    weights: Path                    #: the safetensors file holding the tensor
    tensor: str | None               #: the tensor (None for a plain file: the table layer picks)
    tokenizer: Path | None = None
    shards: dict[str, Path] = field(default_factory=dict)  #: tensor -> file, for an index

    def describe(self) -> str:
        """The weight file holding the tensor, relative to the folder or index, for summaries."""
        if self.kind == "file":
            return ""
        return str(self.weights.relative_to(self.path if self.kind == "folder" else self.path.parent))


def is_embedding_name(name: str) -> bool:
    return any(name == n or name.endswith("." + n) for n in EMBEDDING_NAMES)


def resolve(path, tensor: str | None = None) -> ModelFiles:
    """The parts of the model at ``path`` (a folder, an index or a safetensors file)."""
    path = Path(path)
    if path.is_dir():
        return _folder(path, tensor)
    if path.name.endswith(".json") and path.is_file() and sniff(path).name == "hf-index":
        return _index(path, _read_json(path), tensor, tokenizer_dir=path.parent)
    return ModelFiles(path, "file", path, tensor)


def _read_json(path: Path):
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}, line {e.lineno}: invalid JSON ({e.msg})") from None
    except (UnicodeDecodeError, RecursionError):
        raise FormatError(f"{path}: not a readable JSON file") from None


def _folder(root: Path, tensor: str | None) -> ModelFiles:
    source = _weight_source(root)
    if source.name.endswith(".json"):
        found = _index(source, _read_json(source), tensor, tokenizer_dir=source.parent)
    else:
        found = ModelFiles(root, "folder", source, _choose_in_file(source, tensor))
    found.path, found.kind = root, "folder"
    found.tokenizer = _tokenizer(source.parent, root)
    return found


def _weight_source(root: Path) -> Path:
    """The weight file (or index) of a model folder."""
    dirs = []
    modules = root / "modules.json"
    if modules.is_file():
        listed = _read_json(modules)
        if isinstance(listed, list):
            dirs += [root / m["path"] for m in listed if isinstance(m, dict)
                     and isinstance(m.get("path"), str)]
    dirs += [root, root / "0_StaticEmbedding"]
    for d in dirs:
        for name in WEIGHT_FILES:
            if (d / name).is_file():
                return d / name
    indexes = sorted(root.glob("*.safetensors.index.json"))
    files = sorted(root.glob("*.safetensors"))
    if len(indexes) == 1:
        return indexes[0]
    if not indexes and len(files) == 1:
        return files[0]
    if indexes or files:
        raise FormatError(f"{root}: several weight files ({listing(p.name for p in indexes + files)}); "
                          "name the one to use")
    pickled = [p.name for p in root.glob("*.bin")] + [p.name for p in root.glob("*.pt")]
    if pickled:
        raise FormatError(f"{root}: the weights are PyTorch pickles ({listing(pickled)}); embtool "
                          "reads safetensors only (convert them with safetensors.torch.save_file)")
    raise FormatError(f"{root}: no model.safetensors, *.safetensors or *.safetensors.index.json "
                      "in this folder")


def _tokenizer(*dirs: Path) -> Path | None:
    for d in dirs:
        for name in TOKENIZER_FILES:
            if (d / name).is_file():
                return d / name
    return None


def _index(path: Path, obj, tensor: str | None, tokenizer_dir: Path) -> ModelFiles:
    """A sharded checkpoint: the tensor's shard, from the index's ``weight_map``."""
    if not is_hf_index(obj):
        raise FormatError(f"{path}: not a sharded checkpoint index (no weight_map)")
    shards = {}
    for name, file in obj["weight_map"].items():
        if not isinstance(file, str) or Path(file).is_absolute() or ".." in Path(file).parts:
            raise FormatError(f"{path}: weight_map entry {name!r} names {file!r}, not a file "
                              "next to the index")
        shards[name] = path.parent / file
    if tensor is None:
        named = [n for n in shards if is_embedding_name(n)]
        if len(named) == 1:
            tensor = named[0]
        else:
            tensor = _choose_by_shape(path, shards, named)
    elif tensor not in shards:
        raise FormatError(f"{path}: no tensor {tensor!r} in the index ({len(shards)} tensors: "
                          f"{listing(sorted(shards, key=lambda n: (not is_embedding_name(n), n)))})")
    weights = shards[tensor]
    if not weights.is_file():
        raise FormatError(f"{path}: tensor {tensor!r} is in shard {weights.name}, which is missing")
    return ModelFiles(path, "index", weights, tensor, _tokenizer(tokenizer_dir), shards)


def other_shard(file: Path, tensor: str) -> str | None:
    """When ``file`` is one shard of a checkpoint and ``tensor`` lives in another: a hint naming
    that shard and the index (so a wrong shard is one short error, not a list of its tensors)."""
    for index in sorted(Path(file).parent.glob("*.safetensors.index.json")):
        if sniff(index).name != "hf-index":
            continue
        shard = _read_json(index)["weight_map"].get(tensor)
        if isinstance(shard, str) and Path(shard).name != Path(file).name:
            return f"tensor {tensor!r} is in shard {shard}; give the index {index.name} instead"
    return None


def _choose_by_shape(path: Path, shards: dict[str, Path], named: list[str]) -> str:
    """No single embedding name: the only 2-D tensor of all shards (headers only are read)."""
    two_d = []
    for file in sorted(set(shards.values())):
        if file.is_file():
            two_d += [n for n in table_candidates(st.read_header(file).tensors) if n in shards]
    pool = sorted(set(two_d) & set(named)) or sorted(two_d)
    if len(pool) == 1:
        return pool[0]
    if not pool:
        raise FormatError(f"{path}: no 2-D tensor to use as a table")
    raise FormatError(f"{path}: {len(pool)} 2-D tensors; choose one with --tensor ({listing(pool)})")


def _choose_in_file(file: Path, tensor: str | None) -> str:
    """The embedding tensor of a model folder's single weight file."""
    tensors = st.read_header(file).tensors
    if tensor is not None:
        if tensor not in tensors:
            raise FormatError(f"{file}: no tensor {tensor!r} ({len(tensors)} tensors; 2-D: "
                              f"{listing(table_candidates(tensors))})")
        return tensor
    two_d = table_candidates(tensors)
    named = [n for n in two_d if is_embedding_name(n)]
    if len(named) == 1:
        return named[0]
    pool = named or two_d
    if len(pool) == 1:
        return pool[0]
    if not pool:
        raise FormatError(f"{file}: no 2-D tensor to use as a table")
    raise FormatError(f"{file}: {len(pool)} 2-D tensors; choose one with --tensor ({listing(pool)})")


# -- model2vec ---------------------------------------------------------------------------------

def model2vec_parts(tensors, tensor: str) -> tuple[str | None, str | None] | None:
    """``(mapping, weights)`` tensor names when ``tensor`` is a model2vec table stored
    vocabulary-quantised (or with per-token weights), else None."""
    if tensor not in M2V_TABLES:
        return None
    mapping = "mapping" if "mapping" in tensors else None
    weights = "weights" if "weights" in tensors else None
    if mapping is None and weights is None:
        return None
    return mapping, weights


def model2vec_rows(path, embeddings, mapping, weights):
    """The table a model2vec model stands for: row i = ``embeddings[mapping[i]] * weights[i]``,
    computed as model2vec's ``StaticModel`` does (numpy's promotion of the stored dtypes), so the
    rows equal its token vectors bit for bit."""
    import numpy as np

    k = embeddings.shape[0]
    if mapping is not None:
        if mapping.ndim != 1 or mapping.dtype.kind not in "iu":
            raise FormatError(f"{path}: tensor 'mapping' must be 1-D integers, not "
                              f"{mapping.dtype} {list(mapping.shape)}")
        bad = np.flatnonzero((mapping < 0) | (mapping >= k))
        if bad.size:
            raise FormatError(f"{path}: mapping[{bad[0]}] = {mapping[bad[0]]} is outside the "
                              f"{k} rows of the embeddings")
        rows = embeddings[np.asarray(mapping, np.int64)]
    else:
        rows = np.asarray(embeddings)
    if weights is not None:
        if weights.shape != (rows.shape[0],) or weights.dtype.kind != "f":
            raise FormatError(f"{path}: tensor 'weights' must be 1-D floats with one value per "
                              f"row ({rows.shape[0]}), not {weights.dtype} {list(weights.shape)}")
        rows = rows * weights[:, None]
    return np.ascontiguousarray(rows)
