"""Shared fixtures: the repository's own data (``data/`` and ``tests/data/``), seeded RNG,
and the app in process on a trained PBMC slice (:func:`trained_app`).

Tests read nothing outside the repository. The few that need ``../shared`` (the 20 MB
scvi-tools PBMC checkpoint) ask for the :func:`shared` fixture and are marked ``shared``:
they are skipped, with the reason, when it is not beside the repository.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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


def _simulated_fit(
    *,
    n_cells: int,
    n_genes: int,
    n_proteins: int,
    n_batches: int,
    seed: int,
    n_cell_types: int = 3,
    missing_protein_fraction: float = 0.0,
    n_hidden: int = 16,
    n_latent: int = 4,
    max_epochs: int = 0,
) -> tuple[Any, Any]:
    """Small simulated multi-batch data (read with ``batch_key="batch"``) and a TotalVI on
    it, trained ``max_epochs`` epochs in float32 on the CPU (0: untrained)."""
    from model.data import from_anndata
    from model.simulate import simulate_cite_seq
    from model.totalvi import TotalVI

    adata = simulate_cite_seq(
        n_cells=n_cells,
        n_genes=n_genes,
        n_proteins=n_proteins,
        n_batches=n_batches,
        n_cell_types=n_cell_types,
        missing_protein_fraction=missing_protein_fraction,
        seed=seed,
    )
    data = from_anndata(adata, batch_key="batch")
    model = TotalVI(data, n_hidden=n_hidden, n_latent=n_latent, seed=0)
    if max_epochs:
        model.train(
            max_epochs=max_epochs, seed=0, device="cpu", early_stopping=False, precision="32"
        )
    return data, model


@pytest.fixture(scope="session")
def simulated_fit() -> Any:
    """:func:`_simulated_fit`: the small simulated data and model of the batch features'
    tests (each module asks for its own sizes)."""
    return _simulated_fit


@pytest.fixture(scope="module")
def app_options() -> dict[str, Any]:
    """How a test module's :func:`trained_app` is set up; a module overrides this fixture.

    Keys (all optional): ``name`` (of its folder), ``trained`` (arguments of
    ``trained_pbmc``), ``settings`` (``Settings`` fields over the defaults), ``write_data``
    (a file name: the slice is written there in the data folder), ``saved`` (a folder
    name: the model is saved there in the model folder and registered with it),
    ``own_cache`` (a results cache of its own instead of the one the modules share),
    ``prepare`` (compute the start-up results first; default true).
    """
    return {}


@pytest.fixture(scope="module")
def trained_app(app_options: dict[str, Any], tmp_path_factory) -> Iterator[SimpleNamespace]:
    """The app in process (:func:`dashboard.testing_app.app_on`) on a trained PBMC slice, as
    the module's :func:`app_options` say: ``service``, ``pair``, ``state``, ``app``,
    ``data``, ``model``, ``root`` (with ``data/`` and ``models/``), ``n`` (cells),
    ``data_path`` and ``folder`` (``None`` unless written or saved)."""
    from dashboard.backend.settings import Settings
    from dashboard.backend.testing import trained_pbmc
    from dashboard.testing_app import app_on

    data, model = trained_pbmc(**app_options.get("trained", {}))
    root = tmp_path_factory.mktemp(app_options.get("name", "app"))
    (root / "data").mkdir()
    data_path = folder = None
    if app_options.get("write_data"):
        data_path = root / "data" / app_options["write_data"]
        data.to_anndata().write_h5ad(data_path)
    registered: dict[str, Any] = {}
    if app_options.get("saved"):
        folder = root / "models" / app_options["saved"]
        model.save(folder)
        registered = {"name": app_options["saved"], "path": str(folder)}
    shared = tmp_path_factory.getbasetemp() / "dashboard-cache"  # results the modules share
    settings = Settings(
        data_dir=root / "data",
        model_dir=root / "models",
        cache_dir=root / "cache" if app_options.get("own_cache") else shared,
        denoise_n_samples=3,
        **app_options.get("settings", {}),
    )
    prepare = app_options.get("prepare", True)
    with app_on(settings, data, model, prepare=prepare, **registered) as env:
        yield SimpleNamespace(
            **vars(env),
            data=data,
            model=model,
            root=root,
            n=data.n_cells,
            data_path=data_path,
            folder=folder,
        )
