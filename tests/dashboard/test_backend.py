"""Analysis service on a real PBMC slice: caching, invalidation, concurrency, corruption,
cell types, denoised values and the model-card metric tables."""

from __future__ import annotations

import multiprocessing
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dashboard.backend import metrics as card_metrics
from dashboard.backend.cache import ResultCache
from dashboard.backend.errors import CacheError, InvalidSelection
from dashboard.backend.sampling import string_categories
from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.backend.testing import count_compute_worker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def service(cache_dir, trained):
    data, model = trained
    svc = AnalysisService(Settings(cache_dir=cache_dir))
    pair = svc.add_model(svc.add_dataset(data), model)
    yield svc, pair
    svc.close()


def fresh_service(cache_dir: Path, data, model, **settings) -> tuple[AnalysisService, object]:
    """A second 'start' of the app on the same cache folder."""
    svc = AnalysisService(Settings(cache_dir=cache_dir, **settings))
    return svc, svc.add_model(svc.add_dataset(data), model)


# ------------------------------------------------------------------------------ caching
def test_cache_hit_after_first_computation(service) -> None:
    svc, pair = service
    svc.latent(pair)  # clusters build on it
    before = svc.cache.stats.computed
    first = svc.clusters(pair, 0.8)
    assert svc.cache.stats.computed == before + 1
    second = svc.clusters(pair, 0.8)
    assert svc.cache.stats.computed == before + 1
    pd.testing.assert_series_equal(first, second)


def test_second_start_computes_nothing(service, cache_dir, trained) -> None:
    svc, pair = service
    latent = svc.latent(pair)
    fg = svc.foreground_probability(pair)
    types = svc.cell_types(pair)
    svc2, pair2 = fresh_service(cache_dir, *trained)
    try:
        assert pair2 == pair
        np.testing.assert_array_equal(svc2.latent(pair2), latent)
        pd.testing.assert_frame_equal(svc2.foreground_probability(pair2), fg)
        pd.testing.assert_series_equal(svc2.cell_types(pair2), types)
        assert svc2.cache.stats.computed == 0
        assert svc2.cache.stats.hits >= 3
    finally:
        svc2.close()


def test_changed_data_is_never_served_stale(service, trained) -> None:
    svc, pair = service
    data, model = trained
    svc.latent(pair)
    changed = data.subset(np.arange(data.n_cells))
    changed.rna.data[0] += 7.0  # one count differs; fingerprint is computed after the edit
    ref = svc.add_dataset(changed, name="changed")
    assert ref.fingerprint != pair.dataset.fingerprint
    pair2 = svc.add_model(ref, model)
    before = svc.cache.stats.computed
    latent2 = svc.latent(pair2)
    assert svc.cache.stats.computed == before + 1
    assert not np.array_equal(latent2[0], svc.latent(pair)[0])
    np.testing.assert_array_equal(latent2[1:], svc.latent(pair)[1:])


def test_changed_model_or_params_recompute(service, trained, tmp_path) -> None:
    from model.totalvi import TotalVI

    svc, pair = service
    data, model = trained
    svc.latent(pair)
    model.save(tmp_path / "same")
    same = TotalVI.load(tmp_path / "same", data=data)
    assert svc.add_model(pair.dataset, same) == pair  # same weights -> same key
    perturbed = TotalVI.load(tmp_path / "same", data=data)
    with torch.no_grad():
        next(perturbed.module.parameters()).add_(0.01)
    pair_p = svc.add_model(pair.dataset, perturbed)
    assert pair_p.model.fingerprint != pair.model.fingerprint
    before = svc.cache.stats.computed
    svc.latent(pair_p)
    assert svc.cache.stats.computed == before + 1
    svc.clusters(pair, 0.61)
    svc.clusters(pair, 0.62)  # a new resolution is a new result
    svc.clusters(pair, 0.61)
    assert svc.cache.stats.computed == before + 3
    assert svc.key("clusters", pair, {"resolution": 0.8}) != svc.key(
        "clusters", pair, {"resolution": 0.55}
    )


def test_concurrent_threads_compute_once(service) -> None:
    svc, pair = service
    svc.latent(pair)
    before = svc.cache.stats.computed
    barrier = threading.Barrier(5)
    results: list[pd.Series] = []

    def ask() -> None:
        barrier.wait()
        results.append(svc.clusters(pair, 0.71))

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 5
    assert svc.cache.stats.computed == before + 1
    for r in results[1:]:
        pd.testing.assert_series_equal(r, results[0])


def test_concurrent_processes_compute_once(tmp_path) -> None:
    ctx = multiprocessing.get_context("spawn")
    counter = tmp_path / "computations.txt"
    procs = [
        ctx.Process(
            target=count_compute_worker,
            args=(str(tmp_path), "slow/v1/key", str(counter), 1.5, str(tmp_path / f"out{i}")),
        )
        for i in range(3)
    ]
    for p in procs:
        p.start()
    # this process asks too, at the same time
    cache = ResultCache(tmp_path / "results", locks_dir=tmp_path / "locks")
    calls = []

    def compute() -> dict[str, float]:
        calls.append(1)
        with counter.open("a") as fh:
            fh.write("parent\n")
        return {"value": 42.0}

    import time

    time.sleep(1.0)
    assert cache.get_or_compute("slow/v1/key", compute)["value"] == 42.0
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(counter.read_text().splitlines()) == 1
    for i in range(3):
        assert (tmp_path / f"out{i}").read_text() == "42.0"


def test_corrupt_or_partial_entry_is_recomputed(service, cache_dir, trained) -> None:
    svc, pair = service
    latent = svc.latent(pair)  # 1500 x 10 float32: stored in a file by diskcache
    key = svc.key("latent", pair, {"seed": svc.settings.seed})
    path = svc.cache.entry_path(key)
    assert path is not None and path.is_file()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # flip one byte
    path.write_bytes(bytes(raw))
    svc2, pair2 = fresh_service(cache_dir, *trained)
    try:
        np.testing.assert_array_equal(svc2.latent(pair2), latent)  # recomputed, not served
        assert svc2.cache.stats.corrupt == 1
        assert svc2.cache.stats.computed == 1
        # a partial (truncated) entry
        path = svc2.cache.entry_path(key)
        path.write_bytes(path.read_bytes()[:100])
        svc2.cache.forget_memory()
        np.testing.assert_array_equal(svc2.latent(pair2), latent)
        assert svc2.cache.stats.corrupt == 2
        assert svc2.cache.stats.computed == 2
    finally:
        svc2.close()


def test_small_entry_with_wrong_checksum_and_failed_compute(tmp_path) -> None:
    cache = ResultCache(tmp_path / "results", memory_items=0)
    cache.set("k", {"a": 1})
    payload, tag = cache._disk.get("k", tag=True)
    cache._disk.set("k", payload[:-1] + b"\x00", tag=tag)  # same length, other bytes
    assert cache.get("k", "missing") == "missing"
    assert cache.stats.corrupt == 1 and "k" not in cache

    def boom() -> None:
        raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        cache.get_or_compute("k", boom)
    assert "k" not in cache  # nothing stored ...
    assert cache.get_or_compute("k", lambda: 5) == 5  # ... and the lock was released


def test_lock_timeout_raises(tmp_path) -> None:
    cache = ResultCache(tmp_path / "results", lock_timeout=0.2)
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache.lock("busy"):
            started.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    started.wait(5)
    try:
        with pytest.raises(CacheError, match="waited"):
            cache.get_or_compute("busy", lambda: 1)
    finally:
        release.set()
        t.join()


# -------------------------------------------------------------------------- queries
def test_cell_types_are_named_by_markers(service, trained) -> None:
    svc, pair = service
    data, _ = trained
    types = svc.cell_types(pair)
    assert len(types) == data.n_cells and types.index.equals(data.obs_names)
    names = list(types.cat.categories)
    assert len(set(names)) == len(names) == len(svc.clusters(pair).cat.categories)
    cd14 = pd.Series(np.log1p(data.protein[:, 1]), index=data.obs_names)  # CD14_TotalSeqB
    mono = cd14.groupby(types.to_numpy(), observed=True).mean().idxmax()
    assert mono.startswith("CD14+ "), mono
    cd19 = pd.Series(np.log1p(data.protein[:, 4]), index=data.obs_names)
    b = cd19.groupby(types.to_numpy(), observed=True).mean().idxmax()
    assert b.startswith("CD19+ "), b
    nk = svc.denoised_rna(pair, ["GNLY"])["GNLY"].groupby(types.to_numpy(), observed=True)
    assert "CD56+" in nk.mean().idxmax()  # the NK cells: named by CD56, not CD15


def _named_proteins(name: str) -> list[str]:
    head = name.split(" ")[0]
    return [p for p in head.split("+") if p] if head.endswith("+") else []


def test_cell_type_names_are_short_distinct_and_name_only_proteins_that_are_up(
    service, trained
) -> None:
    from dashboard.backend.clustering import MAX_NAME_LENGTH
    from dashboard.backend.names import short_protein_name

    svc, pair = service
    clusters = svc.clusters(pair).astype(str).to_numpy()
    names = svc.cluster_names(pair)
    assert len(set(names.values())) == len(names)
    assert all(len(n) <= MAX_NAME_LENGTH for n in names.values()), names
    # no two names with the same marker set (proteins in any order, same genes)
    sets = [
        (frozenset(_named_proteins(n)), frozenset(n.split(" ")[-1].split("/")))
        for n in names.values()
    ]
    assert len(set(sets)) == len(sets), names
    # a protein is named only where most cells have it above background and it is
    # clearly (2-fold) higher than in the rest
    fg = svc.foreground_probability(pair)
    den = svc.denoised_protein(pair)
    column = {short_protein_name(p): p for p in den.columns}
    for cluster, name in names.items():
        inside = clusters == cluster
        for protein in _named_proteins(name):
            up = fg[column[protein]].to_numpy() > 0.5
            assert up[inside].mean() >= 0.5, (name, protein)
            assert up[inside].mean() - up[~inside].mean() >= 0.2, (name, protein)
            level = den[column[protein]].to_numpy()
            assert level[inside].mean() + 1 >= 2 * (level[~inside].mean() + 1), (name, protein)


def test_renamed_cell_types_persist_per_pair_and_keep_results_keyed(
    service, cache_dir, trained
) -> None:
    svc, pair = service
    types = svc.cell_types(pair)
    first, second = (str(c) for c in types.cat.categories[:2])
    de_key = svc.key("de_one_vs_rest", pair, {})
    try:
        names = svc.rename_cell_type(pair, first, "  My monocytes ")
        assert names[first] == "My monocytes" and names[second] == second
        shown = svc.shown_cell_types(pair)
        assert list(shown.cat.categories) == [names[str(c)] for c in types.cat.categories]
        np.testing.assert_array_equal(shown.cat.codes, types.cat.codes)
        pd.testing.assert_series_equal(svc.cell_types(pair), types)  # ids stay
        assert svc.key("de_one_vs_rest", pair, {}) == de_key
        with pytest.raises(InvalidSelection, match="already the name of another") as err:
            svc.rename_cell_type(pair, second, "my MONOCYTES")
        assert "\n" not in str(err.value)
        # a new service over the same cache folder (a restart, the CLI) shows the name
        svc2, pair2 = fresh_service(cache_dir, *trained)
        try:
            assert svc2.cell_type_names(pair2)[first] == "My monocytes"
            assert list(svc2.shown_cell_types(pair2).cat.categories) == list(shown.cat.categories)
        finally:
            svc2.close()
        assert svc.reset_cell_type_names(pair)[first] == first
        assert list(svc.shown_cell_types(pair).cat.categories) == list(types.cat.categories)
    finally:
        svc.reset_cell_type_names(pair)


def test_cell_types_from_obs_column(service, trained) -> None:
    svc, _pair = service
    data, model = trained
    labelled = data.subset(np.arange(data.n_cells))
    labelled.obs["kind"] = np.where(np.arange(data.n_cells) % 3 == 0, "a", "b")
    pair2 = svc.add_model(svc.add_dataset(labelled), model)
    assert "kind" in svc.label_columns(pair2)
    types = svc.cell_types(pair2, labels_key="kind")
    assert list(types.cat.categories) == ["a", "b"]
    with pytest.raises(InvalidSelection, match="no obs column"):
        svc.cell_types(pair2, labels_key="nope")


@pytest.mark.parametrize(
    "column",
    [
        pd.Series(pd.Categorical(["b", "a", "c", "a"], categories=["c", "b", "a", "zz"])),
        pd.Series(pd.Categorical([3, 1, 10, 1])),  # numbers: sorted as strings ("10" < "3")
        pd.Series(pd.Categorical(["a", None, "b", "a"])),  # a missing value: "nan"
        pd.Series(pd.Categorical([1, "1", 2], categories=[1, "1", 2])),  # alike as strings
        pd.Series(["t", "b", "t"], dtype=object),
        pd.Series(pd.Categorical([], categories=["a"])),
    ],
)
def test_cell_type_labels_read_through_the_categories_as_through_the_strings(
    column: pd.Series,
) -> None:
    """The fast path (recode the categories) gives what ``astype(str)`` gives."""
    got = string_categories(column)
    want = pd.Categorical(column.astype(str))
    assert list(got.categories) == list(want.categories)
    assert list(got.astype(str)) == list(want.astype(str))


def test_denoised_foreground_and_imputed(service, trained) -> None:
    svc, pair = service
    data, _ = trained
    fg = svc.foreground_probability(pair)
    assert fg.shape == (data.n_cells, data.n_proteins)
    assert fg.to_numpy().min() >= 0 and fg.to_numpy().max() <= 1
    den = svc.denoised_protein(pair)
    assert den.shape == fg.shape and (den.to_numpy() >= 0).all()
    rna = svc.denoised_rna(pair, ["LYZ", "MS4A1"])
    assert list(rna.columns) == ["LYZ", "MS4A1"] and (rna.to_numpy() >= 0).all()
    full = svc.denoised_rna(pair)
    np.testing.assert_allclose(full.sum(1), 1e4, rtol=1e-3)  # per 10k counts
    values, imputed = svc.imputed_proteins(pair)
    assert values.shape == fg.shape and not imputed.to_numpy().any()  # one batch, all measured
    with pytest.raises(InvalidSelection, match="unknown gene"):
        svc.denoised_rna(pair, ["NOT_A_GENE"])


def test_de_groups_validation_and_cache(service, trained) -> None:
    svc, pair = service
    data, _ = trained
    with pytest.raises(InvalidSelection, match="empty"):
        svc.de_groups(pair, np.zeros(data.n_cells, dtype=bool))
    with pytest.raises(InvalidSelection, match="share cells"):
        svc.de_groups(pair, [1, 2, 3], [3, 4])
    sel = np.arange(0, 200)
    table = svc.de_groups(pair, sel, name1="first 200")
    assert (table["comparison"] == "first 200 vs Rest").all()
    before = svc.cache.stats.computed
    pd.testing.assert_frame_equal(svc.de_groups(pair, sel, name1="first 200"), table)
    assert svc.cache.stats.computed == before


# -------------------------------------------------------------------------- metrics
def test_cv_hand_case_and_r2_argument_order() -> None:
    samples = np.array([[[1, 3], [3, 1]], [[0, 0], [2, 2]]], dtype=np.float32)  # (2, 2, 2)
    raw = np.array([[2, 2], [0, 4]], dtype=np.float32)
    model_cv, raw_cv = card_metrics.model_and_raw_cv(samples, raw, cell_wise=True)
    # cell 0: per sample [1,3] and [3,1] -> std 1, mean 2 -> 0.5; cell 1: [0,2] -> 1.0 (twice)
    np.testing.assert_allclose(model_cv, [0.5, 1.0])
    np.testing.assert_allclose(raw_cv, [0.0, 1.0])
    gene_model, gene_raw = card_metrics.model_and_raw_cv(samples, raw, cell_wise=False)
    # sample 0 is [[1, 3], [0, 2]], sample 1 is [[3, 1], [0, 2]] (cells x features):
    # gene 0: [1, 0] -> 1.0 and [3, 0] -> 1.0; gene 1: [3, 2] -> 0.2 and [1, 2] -> 1/3
    np.testing.assert_allclose(gene_model, [1.0, (0.2 + 1 / 3) / 2])
    np.testing.assert_allclose(gene_raw, [1.0, 1 / 3])
    m = np.array([1.0, 2.0, 3.0, 4.0])
    r = np.array([1.5, 2.0, 2.0, 5.0])
    rows = card_metrics.cv_metrics(m, r)
    # y_true = model: 1 - sum((m - r)^2) / sum((m - mean m)^2) = 1 - 2.25 / 5
    assert rows["R² (R-Squared)"] == pytest.approx(1 - 2.25 / 5)
    assert rows["Mean Absolute Error"] == pytest.approx(0.625)
    table = card_metrics.cv_table(
        m, r, train_indices=np.array([0, 1, 2]), validation_indices=np.array([3])
    )
    assert list(table.index) == list(card_metrics.CV_ROWS)
    assert np.isnan(table.loc["Pearson Correlation", "Validation Value"])  # one cell


def test_markdown_matches_scvi_hub_format() -> None:
    df = pd.DataFrame(
        {"gene_f1": [0.5, 0.25], "n_cells": np.array([10, 3], dtype=np.int64)},
        index=pd.Index(["T", "B"], name="group"),
    )
    assert card_metrics.dataframe_to_markdown(df) == (
        "| Index | gene_f1 | n_cells |\n| --- | --- | --- |\n"
        "| T | 0.50 | 10.00 |\n| B | 0.25 | 3.00 |"
    )
    table = pd.DataFrame(
        {"Training Value": [0.1, 0.9, 0.8, 0.7], "Validation Value": [0.2, 0.85, 0.75, 0.6]},
        index=list(card_metrics.CV_ROWS),
    )
    assert card_metrics.cv_table_markdown(table) == (
        "| Metric                  | Training Value | Validation Value |\n"
        "|-------------------------|----------------|------------------|\n"
        "| Mean Absolute Error | 0.10  | 0.20           |\n"
        "| Pearson Correlation | 0.90  | 0.85  |\n"
        "| Spearman Correlation | 0.80 | 0.75  |\n"
        "| R² (R-Squared) | 0.70  | 0.60      |"
    )


def test_metric_groups_follow_the_checkpoints_registered_labels(service) -> None:
    svc, pair = service
    types, groups = svc.metric_groups(pair)
    assert groups.startswith("our Leiden clusters of the latent space, named by markers")
    assert groups.endswith("the checkpoint has no registered labels")
    pd.testing.assert_series_equal(types, svc.cell_types(pair))
    setup = svc.model(pair).setup_args
    saved = dict(setup)
    try:
        setup["labels_key"] = "batch"  # as if set up with labels_key="batch"
        types, groups = svc.metric_groups(pair)
        assert groups == (
            "the checkpoint's registered labels, obs column 'batch' (as scvi-tools' model card)"
        )
        assert list(types.astype(str)) == list(svc.dataset(pair).obs["batch"].astype(str))
        setup["labels_key"] = "annotation"  # registered, but not in this dataset
        types, groups = svc.metric_groups(pair)
        assert groups.endswith("the checkpoint's labels 'annotation' are not in this dataset")
        pd.testing.assert_series_equal(types, svc.cell_types(pair))
        setup["labels_key"] = "_scvi_labels"  # scvi-tools' placeholder: no labels
        assert svc.metric_groups(pair)[1].endswith("the checkpoint has no registered labels")
    finally:
        setup.clear()
        setup.update(saved)
    _, groups = svc.metric_groups(pair, labels_key="batch")
    assert groups == "obs column 'batch' (chosen)"


def test_metric_tables_on_real_data(service, trained) -> None:
    svc, pair = service
    data, _model = trained
    result = svc.metrics(pair)
    types = svc.cell_types(pair)
    assert result.groups == svc.metric_groups(pair)[1]
    assert result.n_features == {"rna": data.n_genes, "protein": data.n_proteins}
    assert result.n_top == {"rna": 100, "protein": 1}  # 10% of 14 proteins, at least 1
    for mod in ("rna", "protein"):
        cell = result.cell_wise_cv[mod]
        assert list(cell.index) == list(card_metrics.CV_ROWS)
        assert list(cell.columns) == ["Training Value", "Validation Value"]
        gene = result.gene_wise_cv[mod]
        assert list(gene.columns) == ["Training Value"]
        for table in (cell, gene):
            assert (table.loc["Mean Absolute Error"] >= 0).all()
            for row in ("Pearson Correlation", "Spearman Correlation"):
                assert table.loc[row].between(-1, 1).all()
            assert (table.loc["R² (R-Squared)"] <= 1).all()
        # gene-wise CV of a trained model tracks the data well
        assert gene.loc["Pearson Correlation", "Training Value"] > 0.5
        de = result.diff_exp[mod]
        assert list(de.columns) == list(card_metrics.DE_COLUMNS)
        assert set(de.index) == set(types.cat.categories)
        assert de["n_cells"].is_monotonic_decreasing
        assert de["n_cells"].sum() == data.n_cells
        for col in ("gene_f1", "roc_auc", "pr_auc"):
            assert de[col].between(0, 1).all(), col
        assert (de["lfc_mae"] >= 0).all()
    assert result.diff_exp["rna"]["lfc_spearman"].mean() > 0.5
    md = result.markdown()
    assert set(md) == {"cell_wise_cv", "gene_wise_cv", "diff_exp"}
    assert md["cell_wise_cv"].startswith("Modality: rna\n\n| Metric                  |")
    assert "\n\nModality: protein\n\n" in md["gene_wise_cv"]
    de_lines = md["diff_exp"].splitlines()
    assert de_lines[2] == (
        "| Index | gene_f1 | lfc_mae | lfc_pearson | lfc_spearman | roc_auc | pr_auc | n_cells |"
    )
    first_rna = result.diff_exp["rna"]
    assert de_lines[4].endswith(f"| {float(first_rna['n_cells'].iloc[0]):.2f} |")  # 123.00
    body = [ln for ln in de_lines if ln.startswith("| ") and not ln.startswith("| Index")]
    body = [ln for ln in body if "---" not in ln]
    for line in body:
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert all(re.fullmatch(r"-?\d+\.\d\d|nan", c) for c in cells), line


def test_model_summary_and_card(service, trained) -> None:
    svc, pair = service
    data, _model = trained
    summary = svc.model_summary(pair)
    assert summary["summary_statistics"] == {
        "n_cells": data.n_cells,
        "n_vars": data.n_genes,
        "n_proteins": 14,
        "n_batch": 1,
        "n_labels": 1,
        "n_latent": 10,
    }
    assert summary["model_parameters"]["n_latent"] == 10
    assert summary["model_parameters"]["n_hidden"] == 64
    assert summary["setup_arguments"]["batch_key"] == "batch"
    assert summary["data_registry"]["proteins"] == "adata.obsm['protein_expression']"
    card = svc.model_card(pair)
    assert "| n_cells                   | 1500 |" in card
    assert "| X                         | adata.X                              |" in card
    assert "Modality: rna" in card and "**Differential expression**:" in card


def test_leiden_past_scanpys_approximate_knn_threshold() -> None:
    """From 8192 cells scanpy switches to pynndescent, which broke on scipy sparse arrays."""
    from dashboard.backend.clustering import leiden_clusters

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 10)) * 6
    truth = rng.integers(0, 4, 8300)
    x = centers[truth] + rng.normal(size=(8300, 10))
    labels = leiden_clusters(x, seed=0, resolution=0.1)
    assert len(labels) == 8300
    # each true group lands (almost) wholly in one cluster
    table = pd.crosstab(truth, labels)
    assert (table.max(axis=1) / table.sum(axis=1)).min() > 0.95
