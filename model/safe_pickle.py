"""A restricted unpickler for checkpoints: only plain data types may be rebuilt.

scvi-tools checkpoints hold pandas DataFrames and numpy arrays, which torch's
``weights_only=True`` loader refuses. Instead of falling back to full pickle (arbitrary code
execution), :func:`load_checkpoint` allows exactly the globals such files need.
"""

from __future__ import annotations

import os
import pickle
import types
from typing import Any

import torch

_ALLOWED: set[tuple[str, str]] = {
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "tuple"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "object"),
    ("__builtin__", "bytes"),
    ("__builtin__", "dict"),
    ("__builtin__", "slice"),
    ("__builtin__", "set"),
    ("__builtin__", "object"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("copyreg", "_reconstructor"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("pandas.core.frame", "DataFrame"),
    ("pandas.core.series", "Series"),
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas.core.internals.managers", "SingleBlockManager"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "float32"),
    ("torch", "int64"),
}


class UnsafeCheckpointError(ValueError):
    """The file asks to rebuild an object that could run code; it was not loaded."""


def _allowed(module: str, name: str) -> bool:
    if (module, name) in _ALLOWED:
        return True
    if module == "torch" and name.endswith("Storage"):
        return True
    if module == "numpy.dtypes" and name.endswith("DType"):
        return True
    return module in {"numpy", "numpy._core.numerictypes", "numpy.core.numerictypes"} and (
        name in {"float32", "float64", "int64", "int32", "bool_", "str_", "object_"}
    )


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if not _allowed(module, name):
            msg = (
                f"refusing to load '{module}.{name}': checkpoints may only contain tensors, "
                "numpy arrays and pandas tables (this file could run code when loaded)"
            )
            raise UnsafeCheckpointError(msg)
        return super().find_class(module, name)


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


restricted_pickle = types.ModuleType("restricted_pickle")
restricted_pickle.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]
restricted_pickle.__name__ = "restricted_pickle"


def load_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Load a torch checkpoint on CPU, refusing any global outside the allow-list."""
    try:
        return torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle
        )
    except UnsafeCheckpointError as err:
        msg = f"{os.fspath(path)}: {err}"
        raise UnsafeCheckpointError(msg) from None
