"""Export analysis results: a ``.h5mu`` with embeddings and annotations, CSV tables.

The MuData holds ``rna`` (raw counts) and ``protein`` (raw counts, ``layers["denoised"]``,
``layers["foreground_probability"]``) modalities; ``obsm["X_totalvi"]`` (latent mean),
``obsm["X_umap"]``, and ``obs["leiden"]`` / ``obs["cell_type"]`` at the MuData level.
``obs["cell_type"]`` holds the names the user gave the cell types (renamed on the Explore
page), ``obs["cell_type_auto"]`` the automatic names; the tables name the types the same way.
Each label set of the workspace exporting (the CLI's ``--workspace``) is a categorical
``obs["labels_<set name>"]`` (unlabelled cells: ``"unlabelled"``).
The var names are the dataset's unique names; ``rna.var["gene_symbols"]`` and
``protein.var["protein_symbols"]`` hold each feature's name as the source file spells it
(they differ only where duplicate names were made unique: ``COG8-1`` has symbol ``COG8``).
The DE table has the same ``symbol`` column.

Denoised proteins are on the server's protein scale (``protein.uns["denoised_scale"]``:
``"measured"``, rate x the batch's learned capture efficiency as the counts, or
``"efficiency-free"`` as scvi-tools 1.4.2; ``protein.varm["capture_efficiency"]`` holds the
efficiency per protein and batch). The metric tables come from protein samples on that scale
(``metrics_*``); those of the other scale are written beside them (``metrics_scvi_tools_*``
or ``metrics_measured_*``, protein only: RNA is the same), with the calibration
(``metrics_calibration.csv``) and observed vs sampled protein means
(``metrics_protein_means.csv``); ``scales.json`` says which scale each table is on. The
gene-protein concordance (``gene_protein_concordance.csv``, ``..._per_type.csv``) and, once
computed on the Metrics page, the integration scorecard (``integration_scorecard.csv``) are
written too; the DE table carries each LFC's 95% credible interval (``lfc_lower``,
``lfc_upper``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from model.protein_scale import (
    DE_PROTEIN_SCALE,
    EFFICIENCY_FREE,
    MEASURED,
    SCALE_DESCRIPTIONS,
)

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService


def _with_symbols(de: pd.DataFrame, data: Any) -> pd.DataFrame:
    """``de`` (index: gene names, protein names + ``"_protein"``) with a first ``symbol``
    column: the original name of each feature (the name itself if unknown)."""
    from model.differential import PROTEIN_SUFFIX

    lookup = dict(zip(data.var_names, data.original_var_names, strict=True))
    proteins = dict(zip(data.protein_names, data.original_protein_names, strict=True))
    modality = (
        de["modality"].astype(str).to_numpy() if "modality" in de else np.full(len(de), "rna")
    )
    symbols = []
    for name, mod in zip(de.index.astype(str), modality, strict=True):
        if mod == "protein":
            key = name[: -len(PROTEIN_SUFFIX)] if name.endswith(PROTEIN_SUFFIX) else name
            symbols.append(proteins.get(key, key))
        else:
            symbols.append(lookup.get(name, name))
    out = de.copy()
    out.insert(0, "symbol", symbols)
    return out


def label_set_column(name: str) -> str:
    """The obs column of label set ``name`` in the export (``labels_<name>``; ``/``, which
    HDF5 reads as a group, becomes ``_``)."""
    return "labels_" + name.replace("/", "_")


def build_mudata(
    service: AnalysisService,
    pair: Pair,
    *,
    labels_key: str | None = None,
    resolution: float | None = None,
    include_denoised_rna: bool = False,
) -> Any:
    """A MuData of the pair's dataset with the model's results attached."""
    import anndata as ad
    import mudata as md

    from model.data import GENE_SYMBOLS, PROTEIN_SYMBOLS

    data = service.dataset(pair)
    obs_names = pd.Index(data.obs_names.astype(str))
    rna = ad.AnnData(
        X=data.rna.copy(),
        obs=pd.DataFrame(index=obs_names),
        var=pd.DataFrame(
            {GENE_SYMBOLS: np.asarray(data.original_var_names, dtype=object)},
            index=data.var_names.astype(str),
        ),
    )
    protein = ad.AnnData(
        X=np.asarray(data.protein, dtype=np.float32).copy(),
        obs=pd.DataFrame(index=obs_names),
        var=pd.DataFrame(
            {PROTEIN_SYMBOLS: np.asarray(data.original_protein_names, dtype=object)},
            index=data.protein_names.astype(str),
        ),
    )
    denoised = service.denoised_protein(pair)
    protein.layers["denoised"] = denoised.loc[:, protein.var_names].to_numpy(np.float32)
    scale = service.protein_scale()
    protein.uns["denoised_scale"] = scale
    protein.uns["denoised_scale_description"] = SCALE_DESCRIPTIONS[scale]
    model = service.model(pair)
    efficiency = model.protein_efficiency()
    if efficiency is not None:  # proteins x the model's batches; NaN where not measured
        if model.protein_batch_mask is not None:
            efficiency = efficiency.where(np.asarray(model.protein_batch_mask, dtype=bool))
        protein.varm["capture_efficiency"] = (
            efficiency.T.reindex(protein.var_names)
            .astype(np.float32)
            .set_axis([str(b) for b in efficiency.index], axis=1)
        )
    fg = service.foreground_probability(pair)
    protein.layers["foreground_probability"] = fg.loc[:, protein.var_names].to_numpy(np.float32)
    if include_denoised_rna:
        rna.layers["denoised"] = (
            service.denoised_rna(pair).loc[:, rna.var_names].to_numpy(np.float32)
        )
    mdata = md.MuData({"rna": rna, "protein": protein})
    obs = data.obs.copy()
    obs.index = obs_names
    for col in obs.columns:
        mdata.obs[str(col)] = obs[col].to_numpy()
    mdata.obs["leiden"] = pd.Categorical(service.clusters(pair, resolution).astype(str))
    types = service.cell_types(pair, labels_key=labels_key, resolution=resolution)
    shown = service.shown_cell_types(pair, labels_key=labels_key, resolution=resolution)
    mdata.obs["cell_type"] = pd.Categorical(
        shown.astype(str).to_numpy(), categories=[str(c) for c in shown.cat.categories]
    )
    mdata.obs["cell_type_auto"] = pd.Categorical(
        types.astype(str).to_numpy(), categories=[str(c) for c in types.cat.categories]
    )
    for s in service.label_sets.sets(pair, data.n_cells):  # the workspace's label sets
        labels = s.series(obs_names)
        mdata.obs[label_set_column(s.name)] = pd.Categorical(
            labels.astype(str).to_numpy(), categories=[str(c) for c in labels.cat.categories]
        )
    mdata.obsm["X_totalvi"] = np.asarray(service.latent(pair), dtype=np.float32)
    mdata.obsm["X_umap"] = service.umap(pair).to_numpy(np.float32)
    mdata.uns["totalvi_explorer"] = json.dumps(
        {
            "pair": pair.to_dict(),
            "summary": service.model_summary(pair),
            "protein_scale": scale,
        },
        default=str,
    )
    return mdata


def write_h5mu(
    service: AnalysisService,
    pair: Pair,
    path: str | os.PathLike[str],
    **kwargs: Any,
) -> Path:
    """Write :func:`build_mudata` to ``path`` (``.h5mu``); returns the path.

    With ``include_denoised_rna=True`` the ``rna`` layer ``denoised`` is streamed from the
    stored gene blocks into the file by chunks of cells (:func:`write_denoised_rna_layer`),
    never held whole; the file holds the same dataset ``build_mudata`` would write.
    """
    out = Path(path)
    if out.suffix != ".h5mu":
        msg = f"{out}: the export file must end in .h5mu"
        raise ValueError(msg)
    out.parent.mkdir(parents=True, exist_ok=True)
    include_rna = bool(kwargs.pop("include_denoised_rna", False))
    mdata = build_mudata(service, pair, **kwargs)
    var_names = list(mdata["rna"].var_names)
    mdata.write(str(out))
    del mdata
    if include_rna:
        write_denoised_rna_layer(service, pair, out, var_names)
    return out


def write_denoised_rna_layer(
    service: AnalysisService,
    pair: Pair,
    path: str | os.PathLike[str],
    var_names: list[str],
) -> None:
    """Add ``mod/rna/layers/denoised`` (cells x ``var_names``, float32, as anndata writes a
    dense layer) to an ``.h5mu`` file, chunk of cells by chunk of cells from the blocks.

    A block found corrupt is recomputed and the layer written again.
    """
    import h5py

    from dashboard.backend.blocks import BlockCorrupt
    from dashboard.backend.denoise import chunk_cells_for

    for attempt in range(2):
        manifest = service.denoised_rna_manifest(pair)
        key = service.denoised_rna_key(pair)
        index = {g: i for i, g in enumerate(manifest.columns)}
        missing = [g for g in var_names if g not in index]
        if missing:
            raise KeyError(f"no denoised RNA for gene(s) {missing[:5]}")
        order = np.asarray([index[g] for g in var_names], dtype=np.int64)
        same_order = np.array_equal(order, np.arange(len(manifest.columns)))
        with h5py.File(path, "r+") as f:
            layers = f["mod/rna/layers"]
            if "denoised" in layers:
                del layers["denoised"]
            ds = layers.create_dataset(
                "denoised", shape=(manifest.n_cells, len(var_names)), dtype="float32"
            )
            ds.attrs["encoding-type"] = "array"
            ds.attrs["encoding-version"] = "0.2.0"
            try:
                chunks = service.blocks.iter_cells(manifest, chunk_cells_for(len(order)))
                for start, values in chunks:
                    ds[start : start + len(values)] = values if same_order else values[:, order]
            except BlockCorrupt:
                del layers["denoised"]
                if attempt:
                    raise
                service.blocks.invalidate(key, manifest)
                continue
        return


def _model_reading_tables(
    service: AnalysisService,
    pair: Pair,
    out: Path,
    labels_key: str | None,
    resolution: float | None,
) -> list[Path]:
    """The gene-protein concordance (pairs and per cell type, when any protein has its
    gene in the model) and the integration scorecard (when it was computed: scib-metrics
    is a long job, not started by an export)."""
    written = []
    grouping = {"labels_key": labels_key, "resolution": resolution}
    concordance = service.gene_protein_concordance(pair, **grouping)
    if len(concordance.pairs):
        for name, table in (("", concordance.pairs), ("_per_type", concordance.per_type)):
            path = out / f"gene_protein_concordance{name}.csv"
            table.to_csv(path, index=False)
            written.append(path)
    if service.has_integration_scores(pair, **grouping):
        path = out / "integration_scorecard.csv"
        service.integration_scores(pair, **grouping).table.to_csv(path)
        written.append(path)
    return written


def write_tables(
    service: AnalysisService,
    pair: Pair,
    folder: str | os.PathLike[str],
    *,
    labels_key: str | None = None,
    resolution: float | None = None,
) -> list[Path]:
    """DE (all cell types vs rest) and metric tables as CSV, the card as markdown.

    Minified data has no counts to recompute the model-card metrics from: the scvi-hub
    card's own tables are written instead (``card_*.csv``), and the card without metrics.

    The DE table's first column after ``feature`` (the unique name) is ``symbol``, the name
    as the source file spells it; ``group1`` names the cell type as shown (renamed types
    under their new name), ``group1_auto`` by its automatic name. The DE-metric tables and
    the card name the types as shown.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    de = service.de_one_vs_rest(pair, labels_key=labels_key, resolution=resolution)
    de = _with_symbols(de, service.dataset(pair))
    names = service.cell_type_names(pair, labels_key=labels_key, resolution=resolution)
    group = de.columns.get_loc("group1")
    de.insert(group + 1, "group1_auto", de["group1"].astype(str))
    de["group1"] = de["group1_auto"].map(lambda t: names.get(t, t))
    path = out / "de_one_vs_rest.csv"
    de.to_csv(path, index_label="feature")
    written.append(path)
    minified = service.dataset(pair).minified is not None
    if minified:  # no counts to recompute the metrics from: the hub card's own tables
        card = service.hub_card(pair)
        tables_of = (
            {}
            if card is None
            else {
                "card_cell_wise_cv": card.cell_wise_cv,
                "card_gene_wise_cv": card.gene_wise_cv,
                "card_diff_exp": card.diff_exp,
            }
        )
    else:
        metrics = service.shown_metrics(pair, labels_key=labels_key, resolution=resolution)
        tables_of = {
            "metrics_cell_wise_cv": metrics.cell_wise_cv,
            "metrics_gene_wise_cv": metrics.gene_wise_cv,
            "metrics_diff_exp": metrics.diff_exp,
        }
        other = metrics.other_scale
        if other is not None:  # the protein tables of the other scale, beside
            tag = "scvi_tools" if other.protein_scale == EFFICIENCY_FREE else MEASURED
            tables_of |= {
                f"metrics_{tag}_cell_wise_cv": {"protein": other.cell_wise_cv["protein"]},
                f"metrics_{tag}_gene_wise_cv": {"protein": other.gene_wise_cv["protein"]},
                f"metrics_{tag}_diff_exp": {"protein": other.diff_exp["protein"]},
            }
        extra = {"calibration": metrics.calibration, "protein_means": metrics.protein_means}
        for name, table in extra.items():
            if table is not None:
                path = out / f"metrics_{name}.csv"
                table.to_csv(path)
                written.append(path)
    for name, tables in tables_of.items():
        for mod, table in tables.items():
            path = out / f"{name}_{mod}.csv"
            table.to_csv(path)
            written.append(path)
    if not minified:
        path = out / "metrics.json"
        path.write_text(json.dumps(metrics.markdown(), indent=4))
        written.append(path)
    written += _model_reading_tables(service, pair, out, labels_key, resolution)
    path = out / "scales.json"  # which scale each table's protein values are on
    scale = service.protein_scale()
    path.write_text(
        json.dumps(
            {
                "denoised_protein": SCALE_DESCRIPTIONS[scale],
                "de_one_vs_rest.csv": DE_PROTEIN_SCALE,
                "metrics_*": None
                if minified
                else f"protein posterior predictive samples: {SCALE_DESCRIPTIONS[scale]}",
            },
            indent=2,
        )
        + "\n"
    )
    written.append(path)
    path = out / "model_card.md"
    card_md = service.model_card(
        pair, with_metrics=not minified, labels_key=labels_key, resolution=resolution
    )
    path.write_text(card_md, encoding="utf-8")
    written.append(path)
    return written
