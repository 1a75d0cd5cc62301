"""The service keeps a bounded number of datasets in memory (LRU); evicted ones reload."""

from __future__ import annotations

import anndata as ad

from dashboard.backend.registry import BoundedRegistry
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings


def test_lru_evicts_reloadable_entries_first() -> None:
    reg: BoundedRegistry[str, int] = BoundedRegistry(2)
    reg.put("memory-only", 0, reloadable=False)
    reg.put("a", 1, reloadable=True)
    reg.put("b", 2, reloadable=True)  # over the bound: "a" goes, not the memory-only one
    assert "a" not in reg and reg.get("memory-only") == 0 and reg.get("b") == 2
    reg.put("c", 3, reloadable=False)  # b is the only reloadable one left
    assert "b" not in reg and len(reg) == 2
    reg.put("d", 4, reloadable=False)  # none reloadable: the least recently used goes
    assert "memory-only" not in reg and reg.get("c") == 3 and reg.get("d") == 4


def test_datasets_merely_picked_do_not_accumulate(tmp_path, test_data) -> None:
    """Six files picked one after the other: at most two stay in memory, and the first one
    still works (read again from its file) when asked for."""
    src = ad.read_h5ad(test_data / "pbmc_10k_protein_v3_200cells.h5ad")
    paths = []
    for k in range(6):
        a = src[k * 30 : k * 30 + 30].copy()
        paths.append(tmp_path / f"part{k}.h5ad")
        a.write_h5ad(paths[-1])
    settings = Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", max_loaded_datasets=2)
    service = AnalysisService(settings)
    try:
        refs = [service.open_dataset(p) for p in paths]
        assert len(service.registry.datasets) == 2
        first = service.dataset(refs[0])  # reloaded
        assert first.n_cells == 30 and first.obs_names[0] == src.obs_names[0]
        assert len(service.registry.datasets) == 2
    finally:
        service.close()
