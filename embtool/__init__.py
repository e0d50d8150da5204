"""embtool: build, inspect, query and train embedding tables stored as safetensors files.

Python API (the CLI is a thin layer over it)::

    import embtool
    with embtool.open("table.safetensors") as t:
        rows = embtool.lookup(t, [[1, 2], [3, 4]])      # F.embedding: shape (2, 2, D)

Heavy modules are imported on first use, so ``import embtool`` stays cheap.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "open", "Table", "Config", "EmbtoolError", "lookup", "renorm", "init_table",
    "embedding", "embedding_renorm_", "__version__",
]

_LAZY = {
    "Table": ("embtool.table", "Table"),
    "Config": ("embtool.table", "Config"),
    "EmbtoolError": ("embtool.errors", "EmbtoolError"),
    "lookup": ("embtool.ops", "lookup"),
    "renorm": ("embtool.ops", "renorm"),
    "init_table": ("embtool.ops", "init_table"),
    "embedding": ("embtool.ops", "embedding"),
    "embedding_renorm_": ("embtool.ops", "embedding_renorm_"),
}


def open(path, *, tensor=None, write=False, scheduler=None):  # noqa: A001 - mirrors builtins.open on purpose
    """Open a table (any safetensors file with a 2-D tensor, or a sharded table's
    ``NAME.index.json``, whose per-shard work runs on the Dask ``scheduler`` if given); use as a
    context manager."""
    from .sharded import open_table

    return open_table(path, tensor=tensor, write=write, scheduler=scheduler)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'embtool' has no attribute {name!r}")
