"""The error every data reader raises on bad input (kept apart so that guards can raise it
without importing the readers)."""

from __future__ import annotations

__all__ = ["CheckpointError", "CiteSeqDataError"]


class CiteSeqDataError(ValueError):
    """Bad input: message names the file, field, cell or gene at fault and how to fix it."""


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; the message names the file and the problem."""
