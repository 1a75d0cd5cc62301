"""Content fingerprints of datasets, models and parameters, and the cache keys built on them.

A result is valid exactly as long as its inputs are: the key of every cached result holds the
dataset's content hash (never its path), a hash of the model's weights and architecture,
every parameter that changes the result and the cache schema version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from model.data import CiteSeqData
    from model.totalvi import TotalVI

SCHEMA_VERSION = 3  # bump when the layout or meaning of any cached result changes
# 3: model draws follow scvi-tools' random stream; proteins are on the measured scale


def dataset_fingerprint(data: CiteSeqData) -> str:
    """SHA-256 of the dataset's content (counts, names, batches, labels)."""
    return data.fingerprint()


def model_fingerprint(model: TotalVI) -> str:
    """SHA-256 of everything that fixes the model's outputs.

    Covers the architecture config, every state-dict tensor (name, dtype, shape, bytes), the
    gene, protein and batch names and the protein batch mask. Training history and the
    train/validation split are not included (results that use the split key on it).
    """
    import torch

    h = hashlib.sha256(b"TotalVI/1")
    _put(h, "config", json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        _put(h, f"param:{name}:{t.dtype}:{tuple(t.shape)}", raw)
    _put(h, "var_names", "\x00".join(map(str, model.var_names)).encode())
    _put(h, "protein_names", "\x00".join(map(str, model.protein_names)).encode())
    _put(h, "batch_categories", "\x00".join(map(str, model.batch_categories)).encode())
    if model.protein_batch_mask is not None:
        _put(h, "mask", np.asarray(model.protein_batch_mask, dtype=bool).tobytes())
    return h.hexdigest()


def params_fingerprint(params: Mapping[str, Any]) -> str:
    """SHA-256 of a parameter mapping (order-independent; arrays hashed by content)."""
    return hashlib.sha256(canonical_json(params).encode()).hexdigest()


def canonical_json(value: Any) -> str:
    """Deterministic JSON of parameters: sorted keys, arrays and sets reduced to digests."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))


def array_digest(arr: Any) -> str:
    """Short content hash of an array-like (dtype, shape and bytes)."""
    a = np.ascontiguousarray(np.asarray(arr))
    if a.dtype == object:
        a = np.asarray([str(v) for v in a.ravel()], dtype=str).reshape(a.shape)
    h = hashlib.sha256(f"{a.dtype.str}:{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def cache_key(
    kind: str,
    *,
    dataset: str,
    model: str | None = None,
    params: Mapping[str, Any] | None = None,
    version: int = SCHEMA_VERSION,
) -> str:
    """``kind/v<version>/<dataset fp>/<model fp or ->/<params fp>``: one key per result."""
    return "/".join(
        [
            kind,
            f"v{version}",
            dataset,
            model or "-",
            params_fingerprint(params or {}),
        ]
    )


def _put(h: Any, tag: str, payload: bytes) -> None:
    h.update(tag.encode() + len(payload).to_bytes(8, "little"))
    h.update(payload)


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"__array__": array_digest(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_canonical(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:  # NaN
        return "NaN"
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)
