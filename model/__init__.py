"""TotalVI (Gayoso et al. 2021) in plain PyTorch: data input, model, training, checkpoints."""

from __future__ import annotations

from model.config import ModelVariant, TotalVIConfig, TrainConfig
from model.data import CiteSeqData, CiteSeqDataError, read_cite_seq
from model.query import QueryDataError, QueryGeneMismatchError, map_query, transfer_labels
from model.totalvi import CheckpointError, TotalVI
from model.train import TrainingCancelled, TrainProgress, TrainResult

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
