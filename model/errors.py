"""The model's errors, kept apart so that guards, readers, loaders and the dashboard can raise
and catch them without importing the modules that raise them (or torch)."""

from __future__ import annotations

__all__ = ["CheckpointError", "CiteSeqDataError", "QueryDataError", "QueryGeneMismatchError"]


class CiteSeqDataError(ValueError):
    """Bad input: message names the file, field, cell or gene at fault and how to fix it."""


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; the message names the file and the problem."""


class QueryDataError(CiteSeqDataError):
    """The query cannot be mapped onto the reference (features or batches)."""


class QueryGeneMismatchError(QueryDataError):
    """Too few of the reference genes are measured in the query."""
