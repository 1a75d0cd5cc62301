"""Small, picklable references to a dataset, a model and a (dataset, model) pair.

A reference carries what is needed to reload the object in another process (path and read
options) and the content fingerprint that every cache key is built from, so a changed file is
noticed instead of served from stale results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Self

from model.read_options import ReadOptions


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
    options: ReadOptions = field(default_factory=ReadOptions)
    name: str = ""

    @property
    def batch_key(self) -> str | None:
        """The obs column of batches it was read with (``None``: one batch)."""
        return self.options.batch_key

    @property
    def labels_key(self) -> str | None:
        """The obs column of cell-type labels it was read with."""
        return self.options.labels_key

    @property
    def layer(self) -> str | None:
        """The RNA counts layer it was read from (``None``: ``X``)."""
        return self.options.layer

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "fingerprint": self.fingerprint,
            "path": self.path,
            "options": self.options.to_dict(),
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict` (also reads records written before read options:
        ``batch_key``, ``labels_key``, ``layer`` at the top level)."""
        old = {k: d[k] for k in ("batch_key", "labels_key", "layer") if d.get(k) is not None}
        options = ReadOptions.from_dict(d.get("options") or old)
        return cls(
            fingerprint=d["fingerprint"],
            path=d.get("path"),
            options=options,
            name=d.get("name", ""),
        )


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
