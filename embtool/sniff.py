"""What is this file?  The one place that tells from a path (or its first bytes) what a user handed
to a command, so that every command can say so in its error instead of a confusing header length.

``sniff(path)`` returns a ``Kind``: a short name, a description ("a word2vec text file") and, for
inputs that are not tables, what to do instead ("run `embtool load-pretrained` first").  Nothing
is ever unpickled: a pickle is recognised by its first bytes only.

The kinds (``Kind.name``):

=================  ==========================================================================
``safetensors``    8-byte little-endian header length, then a JSON object (``{``), the length
                   within the file
``hf-index``       a sharded Hugging Face checkpoint's ``*.safetensors.index.json``: a JSON
                   object with a ``weight_map`` object (``is_hf_index``: the one test for it)
``sharded-table``  an embtool sharded table's ``NAME.index.json``: a JSON object whose
                   ``format`` is ``embtool-sharded-table`` (``is_sharded_table_index``)
``tokenizer``      a Hugging Face ``tokenizer.json`` (a JSON object with ``model``)
``json``           any other JSON
``folder``         a directory (a model folder; see ``embtool.model_files``)
``npy`` / ``npz``  numpy's formats (``\\x93NUMPY``; a zip archive)
``fasttext-bin``   a fastText ``.bin`` model (magic ``BA 16 4F 2F``)
``pickle``         a Python pickle (protocol 2+); with ``.kv``/``.model`` or gensim's class names
                   inside: a gensim native model
``word2vec-text``  a first line ``count dim`` followed by text rows
``word2vec-binary``  a first line ``count dim`` followed by binary data
``glove-text``     text rows ``word v1 v2 ...``
``text``           other text (e.g. a vocabulary, one token per line)
``gzip`` etc.      compressed data: the description names what is inside
``binary``         anything else; ``empty``
=================  ==========================================================================
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import FormatError
from .store import MAX_HEADER

#: bytes read to tell a file's kind
HEAD = 1 << 16
#: JSON files up to this size are parsed whole to tell an index or tokenizer from other JSON
JSON_PARSE_LIMIT = 64 << 20

FASTTEXT_MAGIC = b"\xba\x16\x4f\x2f"
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
BOM = b"\xef\xbb\xbf"
COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}

#: fastText's enums in the old layout's arguments (``loss_name``: hs, ns, softmax, ova;
#: ``model_name``: cbow, sg, sup), numbered from 1
FASTTEXT_LOSSES, FASTTEXT_MODELS = (1, 2, 3, 4), (1, 2, 3)

LOAD_FIRST = "make a table of it with `embtool load-pretrained` first"
GENSIM_HINT = ("embtool never unpickles files; convert it with gensim first: "
               "KeyedVectors.load(PATH).save_word2vec_format('vectors.bin', binary=True) "
               "(a FastText model: gensim.models.fasttext.save_facebook_model(model, 'model.bin')), "
               "then `embtool load-pretrained` that file")


@dataclass(frozen=True)
class Kind:
    name: str
    what: str          #: "a word2vec text file"
    hint: str = ""     #: what to do with it instead of using it as a table

    def not_a_table(self, path) -> FormatError:
        """The one-line error for a command that needs a table file and got this."""
        hint = f"; {self.hint}" if self.hint else ""
        return FormatError(f"{path}: this is {self.what}, not a safetensors table{hint}")


def is_safetensors_head(head: bytes, size: int | None = None) -> bool:
    """A safetensors file starts with its header length (u64 LE, within the file and the
    format's limit) followed by the header's ``{``."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= MAX_HEADER and (size is None or 8 + n <= size)


def is_hf_index(obj) -> bool:
    """A Hugging Face sharded checkpoint's index (``model.safetensors.index.json``): a JSON object
    whose ``weight_map`` maps tensor names to shard file names.  Other ``*.index.json`` files
    (embtool's own sharded tables among them) have no ``weight_map``."""
    return isinstance(obj, dict) and isinstance(obj.get("weight_map"), dict)


#: the ``format`` of an embtool sharded table's index (``embtool.shardindex``)
SHARDED_TABLE_FORMAT = "embtool-sharded-table"


def is_sharded_table_index(obj) -> bool:
    """An embtool sharded table's index (``NAME.index.json``, ``embtool.shardindex``): a JSON
    object whose ``format`` is ``embtool-sharded-table``; it has no ``weight_map``."""
    return isinstance(obj, dict) and obj.get("format") == SHARDED_TABLE_FORMAT


def is_tokenizer(obj) -> bool:
    """A Hugging Face ``tokenizer.json``: a JSON object with a ``model`` object."""
    return isinstance(obj, dict) and isinstance(obj.get("model"), dict)


def sniff(path) -> Kind:
    """The kind of the file or folder at ``path`` (reads at most its first 64 KiB, and a small
    JSON file whole)."""
    p = Path(path)
    if p.is_dir():
        return Kind("folder", "a folder", "name a model folder's weight file, or load the folder "
                    "with `embtool load-pretrained`")
    size = os.path.getsize(p)
    with open(p, "rb") as f:
        head = f.read(HEAD)
    kind = sniff_head(head, p.name, size)
    if kind.name == "json?" and size <= JSON_PARSE_LIMIT:
        try:
            with open(p, "rb") as f:
                obj = json.loads(f.read().decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _text_kind(head)
        return json_kind(obj)
    if kind.name == "json?":
        return Kind("json", "a JSON file")
    return kind


def json_kind(obj) -> Kind:
    """The kind of a parsed JSON document."""
    if is_sharded_table_index(obj):
        return Kind("sharded-table", "a sharded table's index",
                    "`embtool unshard` makes one table file of it")
    if is_hf_index(obj):
        return Kind("hf-index", "a sharded checkpoint's index (safetensors.index.json)")
    if is_tokenizer(obj):
        return Kind("tokenizer", "a Hugging Face tokenizer.json",
                    "give it to `embtool load-pretrained` as --vocab")
    return Kind("json", "a JSON file")


def is_fasttext_head(head: bytes) -> bool:
    """A fastText ``.bin`` model: the magic, or the old layout (models saved before the magic,
    such as gensim's test models), which opens with 12 int32 arguments ``dim ws epoch min_count
    neg word_ngrams loss model bucket minn maxn lr_update_rate``, a float64 ``t`` and the
    dictionary's int32 ``size nwords nlabels``: no magic to match, so every field must be in its
    range (``embtool.formats.fasttext`` reads the layout)."""
    if head.startswith(FASTTEXT_MAGIC):
        return True
    if len(head) < 68:
        return False
    dim, ws, epoch, _, neg, ngrams, loss, model, bucket, minn, maxn, lr_rate = struct.unpack_from("<12i", head)
    (t,) = struct.unpack_from("<d", head, 48)
    size, nwords, nlabels = struct.unpack_from("<3i", head, 56)
    return (0 < dim <= 1 << 16 and 0 < ws <= 1000 and epoch > 0 and 0 <= neg <= 1000
            and 0 < ngrams <= 100 and loss in FASTTEXT_LOSSES and model in FASTTEXT_MODELS
            and bucket >= 0 and 0 <= minn <= maxn <= 100 and lr_rate > 0 and 0.0 <= t <= 1.0
            and nlabels >= 0 and 0 <= nwords <= size)


def sniff_head(head: bytes, name: str = "", size: int | None = None) -> Kind:
    """The kind of data starting with ``head`` (``name``: the file name, for suffix hints; JSON
    that is not parsed here comes back as the provisional kind ``json?``)."""
    if not head:
        return Kind("empty", "an empty file")
    if is_safetensors_head(head, size):
        return Kind("safetensors", "a safetensors file")
    if is_fasttext_head(head):
        return Kind("fasttext-bin", "a fastText .bin model", LOAD_FIRST)
    if head.startswith(NPY_MAGIC):
        return Kind("npy", "a .npy array", LOAD_FIRST + " (with --vocab naming its rows)")
    if head.startswith(ZIP_MAGIC):
        return Kind("npz", "a zip archive (.npz?)", "unpack it first")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        plain = name[:name.rindex(".")] if name.endswith((".gz", ".bz2", ".xz")) else name  # as gensim saves
        gensim = plain.endswith((".kv", ".model")) or b"gensim" in head
        return Kind("pickle", "a gensim native model (a Python pickle)" if gensim
                    else "a Python pickle", GENSIM_HINT if gensim else "embtool never unpickles files")
    for magic, codec in COMPRESSED.items():
        if head.startswith(magic):
            inner = _decompressed_head(head, codec)
            if inner is None:
                return Kind(codec, f"{codec}-compressed data", LOAD_FIRST)
            kind = sniff_head(inner, name)
            # what load-pretrained reads compressed is loaded first; a pickle keeps its own advice
            return Kind(codec, f"a {codec}-compressed {_strip_article(kind.what)}",
                        kind.hint if kind.name == "pickle" else LOAD_FIRST)
    body = head[len(BOM):] if head.startswith(BOM) else head
    if body.lstrip()[:1] == b"{":
        try:
            return json_kind(json.loads(body.decode("utf-8")))
        except (ValueError, UnicodeDecodeError, RecursionError):
            if size is not None and size > len(head):
                return Kind("json?", "a JSON file")  # cut at the head: the caller may parse all
    return _text_kind(head)


def _strip_article(what: str) -> str:
    for article in ("a ", "an "):
        if what.startswith(article):
            return what[len(article):]
    return what


def _decompressed_head(head: bytes, codec: str) -> bytes | None:
    """The first bytes inside compressed data (None when they cannot be had from ``head``)."""
    import bz2
    import lzma
    import zlib

    try:
        if codec == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, HEAD)
        if codec == "bzip2":
            return bz2.BZ2Decompressor().decompress(head, HEAD)
        return lzma.LZMADecompressor().decompress(head, HEAD)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        return None


def _is_number(tok: bytes) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _text_kind(head: bytes) -> Kind:
    """Vector text files and other text, told apart by their first lines (the full rules of
    ``--format auto`` are in ``embtool.formats.detect``; this only names the file)."""
    body = head[len(BOM):] if head.startswith(BOM) else head
    lines = body.split(b"\n", 3)
    first = lines[0].split()
    if len(first) == 2 and all(t.isdigit() for t in first):
        rest = b"\n".join(lines[1:])[:4096]
        if any(b in rest for b in bytes(range(0, 9)) + bytes(range(14, 32))):
            return Kind("word2vec-binary", "a word2vec binary file", LOAD_FIRST)
        return Kind("word2vec-text", "a word2vec text file", LOAD_FIRST)
    if b"\0" in body[:4096] or any(b in body[:4096] for b in bytes(range(1, 9))):
        return Kind("binary", "binary data of no known kind")
    if len(first) >= 2 and all(_is_number(t) for t in first[-(len(first) - 1):]):
        return Kind("glove-text", "a GloVe text file", LOAD_FIRST)
    return Kind("text", "a text file", LOAD_FIRST + " (a vector file), or give it as --vocab "
                "(a vocabulary)")


def require_table_file(path) -> None:
    """Raise the one-line error naming what ``path`` is when it is a file of another known kind (a
    folder or an index is resolved by ``embtool.model_files`` before this is asked).  Data of no
    known kind goes on to the store, whose header checks say precisely what is damaged."""
    with open(path, "rb") as f:
        head = f.read(16)
    if is_safetensors_head(head, os.path.getsize(path)):
        return
    kind = sniff(path)
    if kind.name not in ("binary", "empty"):
        raise kind.not_a_table(path)
