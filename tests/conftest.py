"""Shared fixtures: paths to ../shared, real PBMC data slices, seeded RNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PBMC_H5AD = SHARED / "data" / "h5ad" / "pbmc10k_6855x4000_14prot.h5ad"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - code under test may use the legacy global RNG


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder beside the repository (real data and reference checkpoints)."""
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: tests need ../shared beside the repository")
    return SHARED


@pytest.fixture(scope="session")
def pbmc_adata_cached(shared: Path):
    import anndata as ad

    return ad.read_h5ad(PBMC_H5AD)


@pytest.fixture
def pbmc_adata(pbmc_adata_cached):
    """The full 6855-cell PBMC AnnData (a fresh copy per test)."""
    return pbmc_adata_cached.copy()
