"""Our checkpoint format (``model.pt``) and what every checkpoint loader returns.

:class:`SavedModel` is a model as a checkpoint holds it: the module with its weights and
what :class:`~model.totalvi.TotalVI` keeps beside it (features, batches, split, history,
setup). :func:`read_payload` / :func:`from_payload` read ours, :mod:`model.scvi_compat` reads
scvi-tools' into the same form, and :meth:`TotalVI.load <model.totalvi.TotalVI.load>` wraps
either; :func:`write_checkpoint` writes ours.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from model.config import TotalVIConfig, TrainConfig
from model.errors import CheckpointError
from model.model_folder import CHECKPOINT_FILE
from model.module import TotalVAE

CHECKPOINT_FORMAT = "totalvi-explorer"
CHECKPOINT_VERSION = 1


@dataclass
class SavedModel:
    """A trained (or untrained) module and the model's state around it.

    Attributes
    ----------
    module
        The module, weights loaded.
    var_names, protein_names, batch_categories, protein_batch_mask
        The model's features and batches (as :meth:`TotalVI.from_module` takes them).
    train_indices, validation_indices, history, train_config, is_trained
        The training split, per-epoch history and settings.
    setup_args
        How the training data was set up (scalars and flat mappings of scalars only).
    source, data_fingerprint
        Who wrote the checkpoint, and the fingerprint of the data it was trained on.
    """

    module: TotalVAE
    var_names: list[str]
    protein_names: list[str]
    batch_categories: list[str]
    protein_batch_mask: np.ndarray | None = None
    train_indices: np.ndarray | None = None
    validation_indices: np.ndarray | None = None
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    train_config: TrainConfig | None = None
    setup_args: dict[str, Any] = field(default_factory=dict)
    is_trained: bool = False
    source: str = CHECKPOINT_FORMAT
    data_fingerprint: str = ""


def plain_setup_args(setup_args: Mapping[str, Any]) -> dict[str, Any]:
    """The setup arguments worth keeping: scalars, and flat mappings of scalars (such as
    ``setup_mudata``'s ``modalities``)."""
    return {k: v for k, v in setup_args.items() if _plain(v)}


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _scalar(v) for k, v in value.items())
    return _scalar(value)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


# ============================================================================ reading
def read_payload(file: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Our checkpoint's contents (``weights_only`` load), or ``None`` when ``file`` is not
    one of ours (a scvi-tools checkpoint, or not a checkpoint at all)."""
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        return payload
    return None


def from_payload(payload: dict[str, Any], file: Path) -> SavedModel:
    """The model in our checkpoint ``payload`` (read from ``file``, named in errors)."""
    if payload.get("format_version", 0) > CHECKPOINT_VERSION:
        msg = f"{file}: written by a newer TotalVI Explorer (format {payload['format_version']})"
        raise CheckpointError(msg)
    try:
        config = TotalVIConfig.from_dict(payload["config"])
        mask = payload.get("protein_batch_mask")
        mask_np = None if mask is None else mask.numpy().astype(bool)
        module = TotalVAE(config, protein_batch_mask=mask_np)
        module.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, RuntimeError) as err:
        msg = f"{file}: checkpoint does not match a TotalVI model ({err})"
        raise CheckpointError(msg) from None
    indices = {}
    for key in ("train_indices", "validation_indices"):
        value = payload.get(key)
        indices[key] = None if value is None else value.numpy()
    tc = payload.get("train_config")
    return SavedModel(
        module,
        var_names=payload["var_names"],
        protein_names=payload["protein_names"],
        batch_categories=payload["batch_categories"],
        protein_batch_mask=mask_np,
        **indices,
        history=pd.DataFrame(payload.get("history") or {}),
        train_config=None if tc is None else TrainConfig(**tc),
        setup_args=dict(payload.get("setup_args") or {}),
        is_trained=bool(payload.get("is_trained", False)),
        source=str(payload.get("source", CHECKPOINT_FORMAT)),
        data_fingerprint=str(payload.get("data_fingerprint", "")),
    )


# ============================================================================ writing
def to_payload(saved: SavedModel) -> dict[str, Any]:
    """Our checkpoint's contents for ``saved`` (tensors, lists and plain values only, so
    that it loads with ``weights_only=True``)."""

    def tensor(value: np.ndarray | None, dtype: Any) -> torch.Tensor | None:
        return None if value is None else torch.as_tensor(np.asarray(value, dtype=dtype))

    history = saved.history
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": saved.module.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in saved.module.state_dict().items()},
        "var_names": [str(v) for v in saved.var_names],
        "protein_names": [str(v) for v in saved.protein_names],
        "batch_categories": [str(v) for v in saved.batch_categories],
        "protein_batch_mask": tensor(saved.protein_batch_mask, bool),
        "train_indices": tensor(saved.train_indices, np.int64),
        "validation_indices": tensor(saved.validation_indices, np.int64),
        "history": {c: history[c].tolist() for c in history.columns},
        "train_config": None if saved.train_config is None else saved.train_config.to_dict(),
        "setup_args": plain_setup_args(saved.setup_args),
        "is_trained": bool(saved.is_trained),
        "source": saved.source,
        "data_fingerprint": saved.data_fingerprint,
    }


def write_checkpoint(
    saved: SavedModel, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``path/model.pt`` atomically (temp file, then rename). Returns the file."""
    folder = Path(path)
    target = folder / CHECKPOINT_FILE
    if target.exists() and not overwrite:
        msg = f"{target} exists; pass overwrite=True to replace it"
        raise FileExistsError(msg)
    folder.mkdir(parents=True, exist_ok=True)
    payload = to_payload(saved)
    fd, tmp_name = tempfile.mkstemp(prefix=".model.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        torch.save(payload, tmp)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
