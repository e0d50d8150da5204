"""nn.Embedding's configuration as stored in a table's metadata: values only, no file I/O and no
numpy (``freeze`` and ``unfreeze`` use only this and the store, and stay fast on any table)."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Mapping

from .dtypes import READABLE_AS_TABLE, TABLE_DTYPES  # noqa: F401 (TABLE_DTYPES re-exported)
from .errors import ConfigError, FormatError

FORMAT_VERSION = "1"
PREFIX = "embtool."
#: the row that words not in the vocabulary map to (load-pretrained --unk-token)
UNK_KEY = PREFIX + "unk_idx"
#: the optimizer's name, hyper-parameters (JSON) and step count (train-step)
META_NAME, META_HPARAMS, META_STEP = PREFIX + "optim.name", PREFIX + "optim.hparams", PREFIX + "optim.step"
#: where the optimizer state lives when it is not in the table (``train-step --state``)
META_STATE_FILE = PREFIX + "optim.state_file"


def normalize_padding_idx(padding_idx, num_embeddings: int):
    """nn.Embedding's rule: ``-N <= padding_idx < N``, negative values count from the end."""
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or int(padding_idx) != padding_idx:
        raise ConfigError(f"padding_idx must be an integer, not {padding_idx!r}")
    padding_idx = int(padding_idx)
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ConfigError(
            f"padding_idx must be within num_embeddings: {padding_idx} is outside "
            f"[{-num_embeddings}, {num_embeddings - 1}]")
    return padding_idx + num_embeddings if padding_idx < 0 else padding_idx


def _fmt_float(x: float) -> str:
    return repr(float(x))


@dataclass(frozen=True)
class Config:
    padding_idx: int | None = None
    max_norm: float | None = None
    norm_type: float = 2.0
    scale_grad_by_freq: bool = False
    sparse: bool = False
    frozen: bool = False

    def to_metadata(self) -> dict[str, str]:
        return {
            PREFIX + "format_version": FORMAT_VERSION,
            PREFIX + "padding_idx": "none" if self.padding_idx is None else str(self.padding_idx),
            PREFIX + "max_norm": "none" if self.max_norm is None else _fmt_float(self.max_norm),
            PREFIX + "norm_type": _fmt_float(self.norm_type),
            PREFIX + "scale_grad_by_freq": str(self.scale_grad_by_freq).lower(),
            PREFIX + "sparse": str(self.sparse).lower(),
            PREFIX + "frozen": str(self.frozen).lower(),
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], num_embeddings: int, where) -> "Config":
        if PREFIX + "format_version" not in meta:
            return cls()
        version = meta[PREFIX + "format_version"]
        if version != FORMAT_VERSION:
            raise FormatError(f"{where}: embtool format version {version!r} is not supported "
                              f"(this embtool reads version {FORMAT_VERSION})")

        def get(key, parse, default):
            raw = meta.get(PREFIX + key)
            if raw is None:
                return default
            try:
                return parse(raw)
            except ValueError:
                raise FormatError(f"{where}: metadata {PREFIX + key}={raw!r} is not valid") from None

        def opt_int(s):
            return None if s == "none" else int(s)

        def opt_float(s):
            return None if s == "none" else float(s)

        def boolean(s):
            if s not in ("true", "false"):
                raise ValueError(s)
            return s == "true"

        cfg = cls(
            padding_idx=get("padding_idx", opt_int, None),
            max_norm=get("max_norm", opt_float, None),
            norm_type=get("norm_type", float, 2.0),
            scale_grad_by_freq=get("scale_grad_by_freq", boolean, False),
            sparse=get("sparse", boolean, False),
            frozen=get("frozen", boolean, False),
        )
        if cfg.padding_idx is not None and not 0 <= cfg.padding_idx < num_embeddings:
            raise FormatError(f"{where}: metadata padding_idx={cfg.padding_idx} is outside the "
                              f"table's {num_embeddings} rows")
        return cfg

    def with_overrides(self, num_embeddings: int, **overrides) -> "Config":
        """A copy with the given options replaced (``None`` values in ``overrides`` are ignored;
        use ``padding_idx="none"``/``max_norm="none"`` to clear)."""
        changes = {}
        for f in fields(self):
            if overrides.get(f.name) is None:
                continue
            value = overrides[f.name]
            if f.name == "padding_idx":
                value = None if value == "none" else normalize_padding_idx(value, num_embeddings)
            elif f.name == "max_norm":
                value = None if value == "none" else float(value)
            elif f.name == "norm_type":
                value = float(value)
                if math.isnan(value):
                    raise ConfigError("norm_type must be a number, not nan")
            changes[f.name] = value
        return replace(self, **changes)


def pick_tensor(header, tensor: str | None, path, *, write: bool = False) -> str:
    """The name of the table tensor of a file: ``tensor``, else ``weight``, else the only 2-D one;
    checked to be 2-D with a dtype a table can be read in (``embtool.dtypes``), and for ``write``
    one a table is stored in (widened dtypes are read-only)."""
    name = _choose(header, tensor, path)
    info = header.tensors[name]
    where = f"{path}: tensor {name!r}"
    if len(info.shape) != 2:
        raise FormatError(f"{where} is {len(info.shape)}-D (shape {list(info.shape)}); "
                          "a table needs a 2-D tensor")
    if info.dtype not in READABLE_AS_TABLE:
        raise FormatError(f"{where} has dtype {info.dtype}; a table needs a float or integer "
                          "dtype (F32, F64, F16, BF16, F8_*, I8..U64)")
    if write and info.dtype not in TABLE_DTYPES:
        raise FormatError(f"{where} has dtype {info.dtype}, read as float32 but not written; "
                          "make an F32 table of it with `embtool load-pretrained` first")
    return name


def listing(names, shown: int = 5) -> str:
    """``a, b, c and 12 more``: a list of names kept to one readable line."""
    names = list(names)
    head = ", ".join(names[:shown])
    return head + (f" and {len(names) - shown} more" if len(names) > shown else "") if names else "none"


def table_candidates(tensors) -> list[str]:
    """2-D tensors that could be a table, sorted; optimizer state (``optim.*``) has the table's
    shape but is never the table itself."""
    return sorted(n for n, t in tensors.items() if len(t.shape) == 2 and not n.startswith("optim."))


def _choose(header, tensor: str | None, path) -> str:
    tensors = header.tensors
    if tensor is not None:
        if tensor not in tensors:
            two_d = table_candidates(tensors)
            raise FormatError(f"{path}: no tensor {tensor!r} ({len(tensors)} tensors; 2-D: "
                              f"{listing(two_d)})")
        return tensor
    if "weight" in tensors:
        return "weight"
    two_d = table_candidates(tensors)
    if len(two_d) == 1:
        return two_d[0]
    if not two_d:
        raise FormatError(f"{path}: no 2-D tensor to use as a table (tensors: "
                          f"{listing(sorted(tensors))})")
    raise FormatError(f"{path}: {len(two_d)} 2-D tensors; choose one with --tensor ({listing(two_d)})")

