"""Shared fixtures: the repository's own data (``data/`` and ``tests/data/``), seeded RNG.

Tests read nothing outside the repository. The few that need ``../shared`` (the 20 MB
scvi-tools PBMC checkpoint) ask for the :func:`shared` fixture and are marked ``shared``:
they are skipped, with the reason, when it is not beside the repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared"
#: The embedded default dataset (byte-identical to ../shared's 6855-cell PBMC file).
PBMC_H5AD = ROOT / "data" / "pbmc10k.h5ad"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - code under test may use the legacy global RNG


@pytest.fixture(scope="session")
def test_data() -> Path:
    """``tests/data``: the small attributed fixtures (scvi-tools checkpoints, 10x files)."""
    return TEST_DATA


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ``../shared`` folder beside the repository (optional reference material)."""
    if not SHARED.is_dir():
        pytest.skip(f"optional: needs ../shared beside the repository ({SHARED} is absent)")
    return SHARED


@pytest.fixture(scope="session")
def pbmc_adata_cached():
    import anndata as ad

    return ad.read_h5ad(PBMC_H5AD)


@pytest.fixture
def pbmc_adata(pbmc_adata_cached):
    """The full 6855-cell PBMC AnnData (a fresh copy per test)."""
    return pbmc_adata_cached.copy()
