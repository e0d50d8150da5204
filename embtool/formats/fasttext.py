"""fastText ``.bin`` models: word vectors plus the character n-gram buckets that give any word a
vector, read as gensim's ``load_facebook_vectors`` reads them and computed to the same bits.

The file (Facebook's ``FastText::saveModel``, all little-endian, as gensim's ``_fasttext_bin``):

* ``int32 magic = 793712314`` (bytes ``BA 16 4F 2F``), ``int32 version`` (12); files without
  the magic are the old layout, whose first two ints are ``dim`` and ``ws``;
* the arguments: 12 int32 ``dim ws epoch min_count neg word_ngrams loss model bucket minn maxn
  lr_update_rate`` and a float64 ``t`` (the old layout lacks ``dim`` and ``ws`` here);
* the dictionary: int32 ``size nwords nlabels``, int64 ``ntokens``, int64 ``pruneidx_size``
  (new layout; -1 when not pruned), then ``size`` entries of a NUL-terminated word, int64 count, int8 type, then
  ``pruneidx_size`` pairs of int32;
* the input matrix: a bool ``quant`` (new layout; quantised ``.ftz`` models are refused), int64
  ``rows cols``, then ``rows * cols`` float32: the ``nwords`` word rows, then ``bucket`` n-gram
  rows.  The output matrix that follows is not needed for vectors.

Vectors, as gensim computes them (float32 throughout, in this order, so the bits agree):

* a word of the vocabulary: ``(word_row + sum of its n-gram rows) / (1 + number of n-grams)``
  (gensim's ``adjust_vectors``; fastText's own ``getWordVector``), summed in n-gram order;
* any other word: ``sum of its n-gram rows / number of n-grams`` (zeros when it has none);
* a word's n-grams are the byte strings of ``<word>`` (UTF-8) of ``minn``..``maxn``
  characters (a character: a byte not of the form ``10xxxxxx``; the lone ``<`` and ``>`` are not
  n-grams), each hashed with 32-bit FNV-1a over the bytes *sign-extended* from int8, as
  fastText's C++ does with ``char`` (gensim's ``ft_hash_bytes``), modulo ``bucket``.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embtool.errors import FormatError, KeyNotFoundError

MAGIC = 793712314
FNV_OFFSET = 2166136261
FNV_PRIME = 16777619
#: the n-gram bucket tensor of a table loaded from a .bin model, and its metadata keys
NGRAMS = "fasttext.ngrams"
MINN_KEY = "embtool.fasttext.minn"
MAXN_KEY = "embtool.fasttext.maxn"
_ARGS = ("dim", "ws", "epoch", "min_count", "neg", "word_ngrams", "loss", "model", "bucket",
         "minn", "maxn", "lr_update_rate")


@dataclass
class FastTextModel:
    words: list[str]
    word_rows: np.ndarray         #: (nwords, dim) float32, the raw input rows of the words
    ngrams: np.ndarray            #: (bucket, dim) float32
    minn: int
    maxn: int
    notes: list[str] = field(default_factory=list)


def read_bin(path, *, encoding: str = "utf-8", on_duplicate: str = "first") -> FastTextModel:
    """Read a fastText ``.bin`` model (the word and n-gram rows; nothing is computed yet)."""
    path = Path(path)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:  # (mmap refuses an empty file)
            raise FormatError(f"{path}: empty file, not a fastText model")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _parse(path, mm, encoding, on_duplicate)
    finally:
        mm.close()


def _parse(path, mm, encoding, on_duplicate) -> FastTextModel:
    pos = 0

    def take(fmt):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(mm):
            raise FormatError(f"{path}: truncated fastText model (ends at byte {len(mm)}, "
                              f"reading byte {pos})")
        values = struct.unpack_from(fmt, mm, pos)
        pos += size
        return values

    magic, version = take("<2i")
    new = magic == MAGIC
    args = dict(zip(_ARGS[2:] if not new else _ARGS, take("<10i" if not new else "<12i")))
    take("<d")
    if not new:
        args.update(dim=magic, ws=version)
    dim, bucket, minn, maxn = args["dim"], args["bucket"], args["minn"], args["maxn"]
    if dim < 0 or bucket < 0 or minn < 0 or maxn < 0:
        raise FormatError(f"{path}: not a fastText model (dim {dim}, bucket {bucket}, "
                          f"minn {minn}, maxn {maxn})")
    size, nwords, nlabels = take("<3i")
    take("<q")
    prune = max(0, take("<q")[0]) if new else 0  # -1: not pruned
    if nlabels > 0:
        raise FormatError(f"{path}: a supervised fastText classifier ({nlabels} labels); only "
                          "word-vector models are read")
    if size < 0 or nwords != size:
        raise FormatError(f"{path}: fastText dictionary sizes do not agree ({size} entries, "
                          f"{nwords} words)")
    words, badly_encoded = [], 0
    for i in range(size):
        end = mm.find(b"\0", pos)
        if end < 0:
            raise FormatError(f"{path}: truncated fastText model in word {i} at byte {pos}")
        raw = mm[pos:end]
        pos = end + 1
        try:
            words.append(raw.decode(encoding))
        except UnicodeDecodeError:
            # gensim's _load_vocab: undecodable bytes are kept as backslash escapes
            words.append(raw.decode(encoding, "backslashreplace"))
            badly_encoded += 1
        take("<qb")
    pos += 8 * prune
    if new and take("<?")[0]:
        raise FormatError(f"{path}: a quantised fastText model (.ftz); only full .bin models are read")
    rows, cols = take("<2q")
    if rows != nwords + bucket or cols != dim:
        raise FormatError(f"{path}: the input matrix is {rows} x {cols}, expected "
                          f"{nwords} words + {bucket} buckets by {dim}")
    if pos + 4 * rows * cols > len(mm):
        raise FormatError(f"{path}: truncated fastText model: the input matrix needs "
                          f"{4 * rows * cols} bytes from byte {pos}, the file has {len(mm) - pos}")
    matrix = np.frombuffer(mm, "<f4", count=rows * cols, offset=pos).reshape(rows, cols)
    word_rows = np.array(matrix[:nwords])
    ngrams = np.array(matrix[nwords:])
    del matrix
    notes = []
    if badly_encoded:
        notes.append(f"{badly_encoded} words had bytes invalid in {encoding} (kept as \\x escapes)")
    keep = _dedupe(path, words, on_duplicate)
    if keep is not None:
        notes.append(f"{len(words) - len(keep)} duplicate words (kept {on_duplicate})")
        words = [words[i] for i in keep]
        word_rows = word_rows[keep]
    return FastTextModel(words, word_rows, ngrams, minn, maxn, notes)


def _dedupe(path, words, on_duplicate):
    seen: dict[str, int] = {}
    dup = False
    for i, w in enumerate(words):
        if w in seen:
            if on_duplicate == "error":
                raise FormatError(f"{path}: duplicate word {w!r} (entries {seen[w]} and {i})")
            dup = True
            if on_duplicate == "last":
                seen[w] = i
        else:
            seen[w] = i
    return sorted(seen.values()) if dup else None


# -- n-grams -----------------------------------------------------------------------------------

def ngram_hashes(word: str, minn: int, maxn: int, bucket: int) -> list[int]:
    """gensim's ``ft_ngram_hashes``: the bucket of each n-gram of ``word``, in fastText's order
    (by start character, then length).  Written out here because gensim's version is compiled
    Cython; the FNV-1a hash is extended one character at a time (it is a prefix hash).

    A word from undecodable bytes (a command-line argument or a file read with Python's
    ``surrogateescape``) is hashed as those bytes, as fastText itself hashes whatever bytes it is
    given; gensim cannot encode such a word.  Other lone surrogates are refused."""
    try:
        data = ("<" + word + ">").encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise KeyNotFoundError(f"word {word!r} is not text (a lone surrogate): it has no fastText "
                               "n-grams") from None
    n_bytes = len(data)
    out = []
    for i in range(n_bytes):
        if data[i] & 0xC0 == 0x80:
            continue
        h = FNV_OFFSET
        j, n = i, 1
        while j < n_bytes and n <= maxn:
            h = ((h ^ _SIGNED[data[j]]) * FNV_PRIME) & 0xFFFFFFFF
            j += 1
            while j < n_bytes and data[j] & 0xC0 == 0x80:
                h = ((h ^ _SIGNED[data[j]]) * FNV_PRIME) & 0xFFFFFFFF
                j += 1
            if n >= minn and not (n == 1 and (i == 0 or j == n_bytes)):
                out.append(h % bucket)
            n += 1
    return out


#: a byte as fastText's signed ``char``, sign-extended to uint32
_SIGNED = [b if b < 128 else (b - 256) & 0xFFFFFFFF for b in range(256)]


def _sum_rows(start: np.ndarray, ngrams: np.ndarray, hashes: list[list[int]]) -> np.ndarray:
    """``start[i] += ngrams[h]`` for each hash of word i in order, in float32 (vectorised over
    words, one n-gram position at a time, so each word's additions keep gensim's order)."""
    counts = np.array([len(h) for h in hashes], np.int64)
    width = int(counts.max()) if len(counts) else 0
    table = np.zeros((len(hashes), width), np.int64)
    for i, h in enumerate(hashes):
        table[i, :len(h)] = h
    for k in range(width):
        sel = np.flatnonzero(counts > k)
        start[sel] += ngrams[table[sel, k]]
    return counts


def word_vectors(model: FastTextModel) -> np.ndarray:
    """The vocabulary's vectors (gensim's ``FastTextKeyedVectors.vectors``)."""
    vectors = np.array(model.word_rows, np.float32)
    bucket = len(model.ngrams)
    if bucket == 0:
        return vectors
    hashes = [ngram_hashes(w, model.minn, model.maxn, bucket) for w in model.words]
    with np.errstate(all="ignore"):  # IEEE: a model's inf and NaN propagate, without a warning
        counts = _sum_rows(vectors, model.ngrams, hashes)
        vectors /= (counts + 1).astype(np.float32)[:, None]
    return vectors


def subword_vectors(ngrams: np.ndarray, words, minn: int, maxn: int, *, unit: bool = False):
    """Vectors of words from their n-grams alone (gensim's ``get_vector`` of an unknown word):
    the mean of the n-gram rows, or with ``unit`` the sum divided by its norm (gensim's
    ``get_vector(word, norm=True)``, what ``most_similar`` uses); zeros without n-grams."""
    ngrams = np.asarray(ngrams, np.float32)
    out = np.zeros((len(words), ngrams.shape[1]), np.float32)
    hashes = [ngram_hashes(w, minn, maxn, len(ngrams)) for w in words]
    with np.errstate(all="ignore"):  # IEEE: a model's inf and NaN propagate, without a warning
        counts = _sum_rows(out, ngrams, hashes)
        for i, c in enumerate(counts):
            if c == 0:
                continue
            # per word, as gensim: numpy's float32 norm (BLAS dot), float32 division
            out[i] = out[i] / np.linalg.norm(out[i]) if unit else out[i] / int(c)
    return out
