"""Fixtures shared by the dashboard tests."""

from __future__ import annotations

import pytest

from dashboard.backend.testing import trained_pbmc


@pytest.fixture(scope="module")
def trained():
    """The PBMC slice and the small model trained on it (memoised per process)."""
    return trained_pbmc()
