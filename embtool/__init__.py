"""embtool: build, inspect, query and train embedding tables stored as safetensors files.

A table behaves like gensim's KeyedVectors over a memory-mapped file::

    import embtool
    with embtool.open("glove.safetensors") as t:
        t                                  # <embtool.Table 'glove.safetensors' ... 400,000 x 300 F32 ...>
        t["king"], t[5], t[["king", 7]]    # rows by word or row id: (300,), (300,), (2, 300)
        "king" in t, len(t)
        t.most_similar("king", topn=10)    # [(word, cosine), ...] with gensim's numbers
        t.most_similar(positive=["king", "woman"], negative=["man"])
        t.most_similar_many(["king", "queen"])  # many queries in one pass over the table
        embtool.lookup(t, [[1, 2], [3, 4]])     # F.embedding: shape (2, 2, 300)

Functions (each documented with ``help(embtool.NAME)``):

* tables: ``open``, ``init_table``, ``load_pretrained``, ``export``, ``Table``, ``Config``
* lookups (PyTorch semantics): ``lookup``, ``lookup_bag``, ``renorm``, and on arrays
  ``embedding``, ``embedding_bag``, ``embedding_renorm_``
* similarity (gensim semantics): ``most_similar`` (on arrays; tables have
  ``Table.most_similar``), ``evaluate_analogies``, ``evaluate_pairs``
* training: ``train_step``
* errors: ``EmbtoolError`` (every failure caused by input or state)

The command line (``embtool --help``) is a thin layer over these.  Modules are imported on
first use, so ``import embtool`` stays cheap.
"""
__version__ = "0.1.0"

#: public name -> (module, attribute), imported on first access
_LAZY = {
    "Table": ("embtool.table", "Table"),
    "Config": ("embtool.table", "Config"),
    "EmbtoolError": ("embtool.errors", "EmbtoolError"),
    "init_table": ("embtool.ops", "init_table"),
    "load_pretrained": ("embtool.pretrained", "load_pretrained"),
    "export": ("embtool.pretrained", "export"),
    "lookup": ("embtool.ops", "lookup"),
    "lookup_bag": ("embtool.ops", "lookup_bag"),
    "renorm": ("embtool.ops", "renorm"),
    "embedding": ("embtool.ops", "embedding"),
    "embedding_bag": ("embtool.bag", "embedding_bag"),
    "embedding_renorm_": ("embtool.ops", "embedding_renorm_"),
    "most_similar": ("embtool.similar", "most_similar"),
    "evaluate_analogies": ("embtool.evaluate", "evaluate_analogies"),
    "evaluate_pairs": ("embtool.evaluate", "evaluate_pairs"),
    "train_step": ("embtool.training", "train_step"),
}

__all__ = ["open", *_LAZY, "__version__"]


def open(path, *, tensor=None, write=False, scheduler=None):  # noqa: A001 - mirrors builtins.open on purpose
    """Open a table (any safetensors file with a 2-D tensor, or a sharded table's
    ``NAME.index.json``); use as a context manager.

    ``tensor`` names the 2-D tensor in a file with several; ``write=True`` locks the table for
    writing (readers share the file, a writer has it alone); ``scheduler``: the Dask scheduler
    on which a sharded table's per-shard work runs (default: threads of this process)."""
    from .sharded import open_table

    return open_table(path, tensor=tensor, write=write, scheduler=scheduler)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later accesses skip this function
        return value
    raise AttributeError(f"module 'embtool' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
