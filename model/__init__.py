"""TotalVI (Gayoso et al. 2021) in plain PyTorch: data input, model, training, checkpoints.

The names below load on first use (PEP 562), so ``import model.data`` (reading and checking
files, e.g. in the upload validation child) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.config import ModelVariant, TotalVIConfig, TrainConfig
    from model.data import CiteSeqData, CiteSeqDataError, read_cite_seq
    from model.errors import CheckpointError, QueryDataError, QueryGeneMismatchError
    from model.mapping import map_query, transfer_labels
    from model.totalvi import TotalVI
    from model.train import TrainingCancelled, TrainProgress, TrainResult

_WHERE = {
    "ModelVariant": "model.config",
    "TotalVIConfig": "model.config",
    "TrainConfig": "model.config",
    "CiteSeqData": "model.data",
    "CiteSeqDataError": "model.data",
    "read_cite_seq": "model.data",
    "QueryDataError": "model.errors",
    "QueryGeneMismatchError": "model.errors",
    "map_query": "model.mapping",
    "transfer_labels": "model.mapping",
    "CheckpointError": "model.errors",
    "TotalVI": "model.totalvi",
    "TrainingCancelled": "model.train",
    "TrainProgress": "model.train",
    "TrainResult": "model.train",
}

__all__ = [
    "CheckpointError",
    "CiteSeqData",
    "CiteSeqDataError",
    "ModelVariant",
    "QueryDataError",
    "QueryGeneMismatchError",
    "TotalVI",
    "TotalVIConfig",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingCancelled",
    "map_query",
    "read_cite_seq",
    "transfer_labels",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        msg = f"module 'model' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
