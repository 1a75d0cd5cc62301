"""Small, picklable references to a dataset, a model and a (dataset, model) pair.

A reference carries what is needed to reload the object in another process (path and read
options) and the content fingerprint that every cache key is built from, so a changed file is
noticed instead of served from stale results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Self


class _Fingerprinted:
    """Short id and JSON round trip shared by the reference dataclasses."""

    fingerprint: str

    @property
    def id(self) -> str:
        """Short id for logs and job records."""
        return self.fingerprint[:12]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (job results, CLI output)."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


@dataclass(frozen=True)
class DatasetRef(_Fingerprinted):
    """A dataset: where it came from, how it was read, and its content fingerprint."""

    fingerprint: str
    path: str | None = None
    batch_key: str | None = None
    labels_key: str | None = None
    layer: str | None = None
    name: str = ""


@dataclass(frozen=True)
class ModelRef(_Fingerprinted):
    """A model checkpoint and the fingerprint of its weights and architecture."""

    fingerprint: str
    path: str | None = None
    name: str = ""


@dataclass(frozen=True)
class Pair:
    """A model applied to a dataset: the unit every analysis result is keyed by."""

    dataset: DatasetRef
    model: ModelRef

    @property
    def id(self) -> str:
        """``<dataset id>-<model id>``."""
        return f"{self.dataset.id}-{self.model.id}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"dataset": self.dataset.to_dict(), "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pair:
        """Inverse of :meth:`to_dict`."""
        return cls(DatasetRef.from_dict(d["dataset"]), ModelRef.from_dict(d["model"]))
