"""Pretrained word-vector files: GloVe text, word2vec text (fastText ``.vec``), word2vec binary
and ``.npy``; reading with format detection, compression and stdin; writing back.

gensim's behaviour on these files and every real-world quirk handled here are described in
docs/semantics.md §7; the choices made where gensim's behaviour is an accident are listed in the
docstrings of ``text``, ``binary``, ``detect`` and ``write``.
"""
from embtool.formats.loaded import LoadedVectors, LoadReport
from embtool.formats.read import read_vectors
from embtool.formats.write import write_vectors, write_vocab_file

__all__ = ["LoadReport", "LoadedVectors", "read_vectors", "write_vectors", "write_vocab_file"]
