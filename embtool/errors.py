"""Exceptions a user of embtool is meant to see.

The library raises these; the CLI turns them into a one-line ``Error: ...`` and exit code 1
in exactly one place (``cli.main``).  Messages name the file, line, index or tensor at fault.
"""


class EmbtoolError(Exception):
    """Base class: a failure caused by input or state (exit code 1)."""


class FormatError(EmbtoolError):
    """A file is not what it claims to be: bad safetensors header, ragged vector row, ..."""


class IndexRangeError(EmbtoolError):
    """An index is out of range or negative."""


class ShapeError(EmbtoolError):
    """An array has the wrong shape (gradient, per-sample weights, vector query, ...)."""


class StateError(EmbtoolError):
    """The table's state forbids the operation (frozen table, optimizer mismatch, ...)."""


class ConfigError(EmbtoolError):
    """An option value or combination that PyTorch would reject (padding_idx range, ...)."""


class OutputExistsError(EmbtoolError):
    """An output path exists and --force was not given."""


class KeyNotFoundError(EmbtoolError):
    """A word is not in the table's vocabulary."""
