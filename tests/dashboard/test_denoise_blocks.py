"""Denoised RNA stored as gene blocks: same values as the dense computation, one block per
gene read, missing or corrupt blocks recomputed (never served half), bounded memory, and the
export's streamed layer."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from dashboard.backend import denoise
from dashboard.backend.blocks import BlockCorrupt, BlockStore, BlockWriter
from dashboard.backend.denoise import Sampling, denoised_chunks, denoised_expression
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings

pytestmark = pytest.mark.slow

BLOCK = 64  # 1002 genes: 15 full blocks and a ragged one of 42


@pytest.fixture(scope="module")
def dense(trained):
    data, model = trained
    return denoised_expression(model, data, library_size=1e4, how=Sampling(n_samples=5, seed=0))


def new_service(cache_dir: Path, trained, **settings):
    data, model = trained
    svc = AnalysisService(Settings(cache_dir=cache_dir, denoise_block_genes=BLOCK, **settings))
    return svc, svc.add_model(svc.add_dataset(data), model)


@pytest.fixture
def service(tmp_path, trained):
    svc, pair = new_service(tmp_path / "cache", trained)
    yield svc, pair
    svc.close()


def test_blocked_values_equal_the_dense_table(service, trained, dense) -> None:
    svc, pair = service
    data, _ = trained
    rna, pro = dense
    full = svc.denoised_rna(pair)
    manifest = svc.denoised_rna_manifest(pair)
    assert manifest.n_blocks == -(-data.n_genes // BLOCK) > 2
    first, stop = manifest.block_columns(manifest.n_blocks - 1)
    assert 0 < stop - first < BLOCK  # ragged last block
    np.testing.assert_array_equal(full.to_numpy(), rna.to_numpy())  # bit for bit
    assert full.index.equals(rna.index) and full.columns.equals(rna.columns)
    # the protein table comes out of the same pass, equal to a protein-only pass
    np.testing.assert_array_equal(svc.denoised_protein(pair).to_numpy(), pro.to_numpy())
    data_, model = trained
    only = denoise.denoised_protein(model, data_, denoise.Sampling(n_samples=5, seed=0))
    np.testing.assert_array_equal(only.to_numpy(), pro.to_numpy())
    genes = ["MS4A1", "LYZ", str(rna.columns[-1])]
    np.testing.assert_array_equal(svc.denoised_rna(pair, genes).to_numpy(), rna[genes].to_numpy())


def test_chunking_keeps_the_random_draws(trained, dense) -> None:
    data, model = trained
    rna, pro = dense
    # 300: not a multiple of the model's minibatch; the RNA buffer is reused, so copy
    parts = [(i, r.copy(), p) for i, r, p in denoised_chunks(model, data, chunk_cells=300)]
    assert len(parts) > 2 and [p[0] for p in parts] == sorted(p[0] for p in parts)
    got = np.concatenate([r for _, r, _ in parts])
    np.testing.assert_array_equal(got, rna.to_numpy())
    np.testing.assert_array_equal(np.concatenate([p for _, _, p in parts]), pro.to_numpy())


def test_one_gene_reads_one_row_of_one_block(service) -> None:
    svc, pair = service
    manifest = svc.denoised_rna_manifest(pair)
    stats = svc.blocks.stats
    before = (stats.blocks_read, stats.rows_read)
    svc.denoised_rna(pair, ["LYZ"])
    assert (stats.blocks_read, stats.rows_read) == (before[0] + 1, before[1] + 1)
    a, b = manifest.columns[0], manifest.columns[-1]  # first and last block
    svc.denoised_rna(pair, [a, b])
    assert (stats.blocks_read, stats.rows_read) == (before[0] + 3, before[1] + 3)
    computed = svc.cache.stats.computed
    svc.denoised_rna(pair, ["MS4A1"])
    assert svc.cache.stats.computed == computed


def _block_file(svc: AnalysisService, pair, gene: str) -> Path:
    m = svc.denoised_rna_manifest(pair)
    b = m.columns.index(gene) // m.block
    return svc.blocks.root / m.folder / m.file_name(b)


def test_missing_block_is_a_cache_miss(service, trained, dense, tmp_path) -> None:
    svc, pair = service
    rna, _ = dense
    m = svc.denoised_rna_manifest(pair)
    other = next(
        g for g in m.columns if m.columns.index(g) // BLOCK != m.columns.index("LYZ") // BLOCK
    )
    _block_file(svc, pair, other).unlink()
    # a second start on the same cache: the manifest is there, a block is not
    svc2, pair2 = new_service(tmp_path / "cache", trained)
    try:
        got = svc2.denoised_rna(pair2, ["LYZ"])  # another block, still recomputed first
        assert svc2.cache.stats.computed == 1 and svc2.blocks.stats.corrupt == 1
        np.testing.assert_array_equal(got.to_numpy(), rna[["LYZ"]].to_numpy())
        np.testing.assert_array_equal(svc2.denoised_rna(pair2).to_numpy(), rna.to_numpy())
        # only the new generation is left on disk
        key_folders = list(svc2.blocks.root.iterdir())
        assert len(key_folders) == 1 and len(list(key_folders[0].iterdir())) == 1
    finally:
        svc2.close()


def test_corrupt_row_is_recomputed_not_served(service, dense) -> None:
    svc, pair = service
    rna, _ = dense
    m = svc.denoised_rna_manifest(pair)
    path = _block_file(svc, pair, "LYZ")
    raw = bytearray(path.read_bytes())
    row = m.columns.index("LYZ") % m.block
    at = m.offsets[m.columns.index("LYZ") // m.block] + row * m.n_cells * 4 + 40
    raw[at] ^= 0xFF  # same size, one bad byte in LYZ's row
    path.write_bytes(bytes(raw))
    with pytest.raises(BlockCorrupt):
        svc.blocks.read(m, ["LYZ"])
    computed = svc.cache.stats.computed
    got = svc.denoised_rna(pair, ["LYZ"])
    np.testing.assert_array_equal(got.to_numpy(), rna[["LYZ"]].to_numpy())
    assert svc.cache.stats.computed == computed + 1
    assert svc.denoised_rna_manifest(pair).folder != m.folder


def test_a_second_process_follows_a_recomputation(service, trained, dense, tmp_path) -> None:
    svc, pair = service
    rna, _ = dense
    svc2, pair2 = new_service(tmp_path / "cache", trained)  # own memory layer: a process
    try:
        svc.denoised_rna(pair, ["LYZ"])
        svc2.denoised_rna(pair2, ["LYZ"])  # both now hold the same manifest in memory
        old = svc.denoised_rna_manifest(pair)
        _block_file(svc, pair, "LYZ").write_bytes(b"")  # truncated
        svc.denoised_rna(pair, ["LYZ"])  # recomputed: a new generation, the old one removed
        new = svc.denoised_rna_manifest(pair)
        assert new.folder != old.folder and not (svc.blocks.root / old.folder).exists()
        computed = svc.cache.stats.computed + svc2.cache.stats.computed
        got = svc2.denoised_rna(pair2, ["MS4A1", "LYZ"])  # stale copy: re-read from disk
        np.testing.assert_array_equal(got.to_numpy(), rna[["MS4A1", "LYZ"]].to_numpy())
        assert svc2.denoised_rna_manifest(pair2).folder == new.folder
        svc.denoised_rna(pair, ["LYZ"])
        assert svc.cache.stats.computed + svc2.cache.stats.computed == computed  # no ping-pong
    finally:
        svc2.close()


def test_failed_computation_stores_nothing(service, dense, monkeypatch) -> None:
    svc, pair = service
    rna, _ = dense
    key = svc.denoised_rna_key(pair)
    original = BlockWriter.write
    calls = []

    def write_then_fail(self: BlockWriter, values: np.ndarray) -> None:
        assert key not in svc.cache  # the manifest is stored last
        original(self, values)
        calls.append(len(values))
        if len(calls) == 2:
            raise RuntimeError("killed mid-way")

    monkeypatch.setattr(BlockWriter, "write", write_then_fail)
    monkeypatch.setattr(denoise, "chunk_cells_for", lambda n_genes: 512)
    with pytest.raises(RuntimeError, match="mid-way"):
        svc.denoised_rna_manifest(pair)
    assert key not in svc.cache
    assert not any(p.is_file() for p in svc.blocks.root.rglob("*"))  # temp folder removed
    monkeypatch.setattr(BlockWriter, "write", original)
    np.testing.assert_array_equal(svc.denoised_rna(pair).to_numpy(), rna.to_numpy())


def test_memory_is_one_chunk_not_cells_by_genes(tmp_path, monkeypatch) -> None:
    from model.data import from_anndata
    from model.simulate import simulate_cite_seq
    from model.totalvi import TotalVI

    adata = simulate_cite_seq(
        n_cells=6000, n_genes=2000, n_proteins=10, n_batches=2, n_cell_types=4, seed=1
    )
    data = from_anndata(adata, batch_key="batch")
    model = TotalVI(data, n_latent=5, seed=0)
    svc = AnalysisService(Settings(cache_dir=tmp_path / "c", denoise_block_genes=256))
    pair = svc.add_model(svc.add_dataset(data), model)
    chunk = 256
    monkeypatch.setattr(denoise, "chunk_cells_for", lambda n_genes: chunk)
    sizes = []
    original = BlockWriter.write

    def spy(self: BlockWriter, values: np.ndarray) -> None:
        sizes.append(values.shape)
        original(self, values)

    monkeypatch.setattr(BlockWriter, "write", spy)
    table = data.n_cells * data.n_genes * 4  # 48 MB
    try:
        tracemalloc.start()
        svc.denoised_rna_manifest(pair)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert max(s[0] for s in sizes) <= chunk and sum(s[0] for s in sizes) == data.n_cells
        assert peak < table / 4, f"peak {peak / 1e6:.1f} MB for a {table / 1e6:.1f} MB table"
        tracemalloc.start()
        one = svc.denoised_rna(pair, [str(data.var_names[7])])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert one.shape == (data.n_cells, 1) and peak < table / 50
    finally:
        svc.close()


def test_export_streams_the_same_layer(service, trained, dense, tmp_path) -> None:
    import anndata as ad
    import mudata as md
    import pandas as pd

    from dashboard.backend.export import write_denoised_rna_layer

    svc, pair = service
    data, _ = trained
    rna, _ = dense

    def mudata(with_layer: bool) -> md.MuData:
        a = ad.AnnData(
            X=data.rna.copy(),
            obs=pd.DataFrame(index=data.obs_names.astype(str)),
            var=pd.DataFrame(index=data.var_names.astype(str)),
        )
        if with_layer:  # what build_mudata(include_denoised_rna=True) holds in memory
            a.layers["denoised"] = svc.denoised_rna(pair).loc[:, a.var_names].to_numpy()
        return md.MuData({"rna": a})

    streamed, whole = tmp_path / "s.h5mu", tmp_path / "w.h5mu"
    mudata(False).write(str(streamed))
    write_denoised_rna_layer(svc, pair, streamed, list(data.var_names.astype(str)))
    mudata(True).write(str(whole))
    with h5py.File(streamed) as s, h5py.File(whole) as w:
        a, b = s["mod/rna/layers/denoised"], w["mod/rna/layers/denoised"]
        layout = ("shape", "dtype", "chunks", "compression")
        assert [getattr(a, k) for k in layout] == [getattr(b, k) for k in layout]
        assert dict(a.attrs) == dict(b.attrs)
        np.testing.assert_array_equal(a[()], b[()])
        np.testing.assert_array_equal(a[()], rna.to_numpy())
    back = md.read_h5mu(streamed)
    np.testing.assert_array_equal(back["rna"].layers["denoised"], rna.to_numpy())


def test_block_store_alone(tmp_path) -> None:
    from dashboard.backend.cache import ResultCache

    store = BlockStore(ResultCache(tmp_path / "r"), tmp_path / "b")
    table = np.arange(7 * 5, dtype=np.float32).reshape(7, 5)

    def fill(open_writer) -> None:
        w = open_writer(7, list("abcde"), 2)
        w.write(table[:3])
        w.write(table[3:])

    m = store.manifest("t/v1/x", fill)
    assert m.n_blocks == 3 and store.manifest("t/v1/x", fill) == m
    np.testing.assert_array_equal(store.read(m), table)
    np.testing.assert_array_equal(store.read(m, ["e", "a"]), table[:, [4, 0]])
    got = np.concatenate([c for _, c in store.iter_cells(m, 3)])
    np.testing.assert_array_equal(got, table)
    with pytest.raises(KeyError):
        store.read(m, ["z"])


# ------------------------------------------------------------------ size limit
MB = 1024**2
#: Bytes on disk beyond what the cache accounts for (measured: about 20 kB, SQLite's files
#: against diskcache's size counter; the write-ahead log itself is counted and kept <= 1 MiB).
SLACK = 256 * 1024


def _bytes_on_disk(cache_dir: Path) -> int:
    return sum(
        p.stat().st_size
        for sub in ("results", "blocks")
        for p in (cache_dir / sub).rglob("*")
        if p.is_file()
    )


def test_blocks_count_against_the_cache_size_limit(tmp_path, trained, dense) -> None:
    rna, _ = dense
    cache_dir, limit = tmp_path / "cache", 10 * MB  # one set (6 MB) fits, two do not
    svc0, pair0 = new_service(cache_dir, trained, cache_size_limit=limit)
    svc1, pair1 = new_service(cache_dir, trained, cache_size_limit=limit, seed=1)
    try:
        a = svc0.denoised_rna_manifest(pair0)
        assert _bytes_on_disk(cache_dir) <= limit + SLACK
        svc1.latent(pair1)  # a result, then a second set: the first (least recent) goes
        b = svc1.denoised_rna_manifest(pair1)
        assert not (svc1.blocks.root / a.folder).exists()
        assert (svc1.blocks.root / b.folder).exists()
        assert svc1.denoised_rna_key(pair1) in svc1.cache
        assert svc0.denoised_rna_key(pair0) not in svc1.cache  # its manifest went too
        assert _bytes_on_disk(cache_dir) <= limit + SLACK
        assert svc1.blocks.usage() <= limit
        # reading the evicted table recomputes it, with the same values
        computed = svc0.cache.stats.computed
        got = svc0.denoised_rna(pair0)[["LYZ", "MS4A1"]]
        np.testing.assert_array_equal(got.to_numpy(), rna[["LYZ", "MS4A1"]].to_numpy())
        assert svc0.cache.stats.computed == computed + 1
        assert not (svc0.blocks.root / b.folder).exists()  # now the other one went
        assert _bytes_on_disk(cache_dir) <= limit + SLACK
    finally:
        svc0.close()
        svc1.close()


def test_a_block_set_larger_than_the_limit(tmp_path, trained, dense) -> None:
    """Written, served, then evicted first at the next write (or start)."""
    rna, _ = dense
    cache_dir, limit = tmp_path / "cache", 3 * MB  # the set is 6 MB
    svc, pair = new_service(cache_dir, trained, cache_size_limit=limit)
    try:
        m = svc.denoised_rna_manifest(pair)
        got = svc.denoised_rna(pair, ["LYZ"])  # read from the stored table
        np.testing.assert_array_equal(got.to_numpy(), rna[["LYZ"]].to_numpy())
        assert svc.blocks.volume() > limit  # kept while it is the newest thing written
        svc.latent(pair)  # anything else written: the oversize set goes first
        assert not (svc.blocks.root / m.folder).exists()
        assert svc.blocks.volume() == 0 and _bytes_on_disk(cache_dir) <= limit + SLACK
        got = svc.denoised_rna(pair, ["LYZ", "MS4A1"])  # the table is gone: on demand
        np.testing.assert_allclose(got.to_numpy(), rna[["LYZ", "MS4A1"]].to_numpy(), rtol=2e-5)
        assert svc.blocks.volume() == 0  # a few genes did not rewrite every gene
        got = svc.denoised_rna(pair)[["LYZ", "MS4A1"]]  # every gene: recomputed
        np.testing.assert_array_equal(got.to_numpy(), rna[["LYZ", "MS4A1"]].to_numpy())
    finally:
        svc.close()
    svc2, _ = new_service(cache_dir, trained, cache_size_limit=limit)  # a restart
    try:
        assert svc2.blocks.volume() == 0 and _bytes_on_disk(cache_dir) <= limit + SLACK
    finally:
        svc2.close()


def test_leftovers_go_first(tmp_path) -> None:
    """An abandoned ``.tmp-`` folder and a generation no manifest names are removed."""
    from dashboard.backend.cache import ResultCache

    cache = ResultCache(tmp_path / "r", size_limit=1 * MB)
    store = BlockStore(cache, tmp_path / "b")
    table = np.ones((1000, 100), dtype=np.float32)  # 400 kB

    def fill(open_writer) -> None:
        open_writer(1000, [f"g{i}" for i in range(100)], 50).write(table)

    m = store.manifest("t/v1/kept", fill)
    orphan = store.manifest("t/v1/orphan", fill)
    cache.delete("t/v1/orphan")  # e.g. evicted by diskcache alone
    abandoned = tmp_path / "b" / "x" / ".tmp-y"  # a writer that died (key not locked)
    abandoned.mkdir(parents=True)
    (abandoned / "key.txt").write_text("t/v1/dead")
    (abandoned / "block-00000.npy").write_bytes(b"\0" * 400_000)
    assert store.usage() > cache.size_limit
    store.enforce_limit()
    assert not abandoned.exists() and not (tmp_path / "b" / orphan.folder).exists()
    assert (tmp_path / "b" / m.folder).exists()  # the used set stays
    np.testing.assert_array_equal(store.read(m), table)
    assert store.usage() <= cache.size_limit
