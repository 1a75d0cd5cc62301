"""Model QC on the cells: per-cell diagnostics to paint on the embedding, and a posterior
predictive check of one gene or protein.

Per cell (:meth:`CellQC.cell_qc`, names :data:`QC_QUANTITIES`):

* ``recon_rna`` / ``recon_protein``: the cell's reconstruction loss (negative log-likelihood
  of its counts under the decoder), the terms whose mean is the model's
  ``get_reconstruction_error`` (:func:`model.cell_qc.cell_diagnostics`);
* ``latent_uncertainty``: mean variance of q(z | x) over the latent dimensions;
* ``protein_background``: mean log background rate over the measured proteins (measured
  scale: the log of the geometric-mean background count expected in the cell);
* ``cv_ratio_rna`` / ``cv_ratio_protein``: log2 of the cell's model CV over its observed CV
  (CV across features; 0: the generated counts vary as much as the observed), the cell-wise
  CV of the model card (:mod:`dashboard.backend.metrics`: same draws, same definition), per
  cell instead of summarised.

Per feature (:meth:`CellQC.feature_check`): a histogram of the observed counts and of
posterior predictive counts on the same bins, the zero fraction of both, and the coverage
of the central 50% and 90% predictive intervals (scvi-tools' calibration, one feature).

All cached by content (:class:`~dashboard.backend.results.Results`). What needs counts
(reconstruction, CV, the predictive check) raises
:class:`~dashboard.backend.errors.MinifiedData` for minified data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.metrics import (
    PPC_BATCH_SIZE,
    interval_hits,
    measured_proteins,
    model_and_raw_cv,
)
from dashboard.backend.results import CachedQueries
from model.cell_qc import cell_diagnostics, iter_predictive_samples
from model.protein_scale import EFFICIENCY_FREE, MEASURED

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.results import ProgressFn
    from model.data import CiteSeqData
    from model.totalvi import TotalVI

#: The per-cell quantities, and whether each needs the counts (minified data lacks them).
QC_QUANTITIES = {
    "recon_rna": True,
    "recon_protein": True,
    "latent_uncertainty": False,
    "protein_background": False,
    "cv_ratio_rna": True,
    "cv_ratio_protein": True,
}
#: Which diagnostic of :func:`model.cell_qc.cell_diagnostics` each quantity is.
_DIAGNOSTIC = {
    "recon_rna": "reconstruction_loss_gene",
    "recon_protein": "reconstruction_loss_protein",
    "latent_uncertainty": "latent_variance",
    "protein_background": "log_protein_background",
}
DIAGNOSTICS_BATCH_SIZE = 1024  # get_reconstruction_error's default: its draws
CHECK_SAMPLES = 10  # posterior predictive draws per cell of the one-feature check
CHECK_CELLS = 1000  # at most this many cells (a seeded sample): a gene costs a decoder pass
CHECK_QUANTILES = (0.05, 0.25, 0.75, 0.95)  # central 90% and 50% intervals
CHECK_INTERVALS = ("90%", "50%")  # widest first, as metrics.central_intervals pairs them
CHECK_BINS = 40  # log-spaced bins above this many distinct counts
CHECK_BATCH_SIZE = 64  # cells per decoder pass of a gene (all genes' rates x samples)
_VERSION = 1  # of these definitions (part of the cache keys)


@dataclass(frozen=True)
class FeatureCheck:
    """Observed vs posterior predictive counts of one feature over the cells that measured
    it: cells per bin (``predicted``: mean over the draws), zero fractions, and the
    fraction of cells whose count lies in the central 50% / 90% interval of their own
    draws (ends included)."""

    feature: str
    edges: np.ndarray  # bin edges in counts (bins [edge_i, edge_i+1), the last closed)
    observed: np.ndarray  # cells per bin
    predicted: np.ndarray  # cells per bin, averaged over the draws
    zero_observed: float
    zero_predicted: float
    coverage: dict[str, float]  # {"50%": ..., "90%": ...}
    n_cells: int  # cells checked (at most CHECK_CELLS of those that measured the feature)
    n_samples: int
    log_bins: bool  # log-spaced bins (counts too spread for one bin per count)
    n_measured: int = 0  # cells that measured the feature (the sample is drawn from them)


class CellQC(CachedQueries):
    """Per-cell model diagnostics and one-feature posterior predictive checks of a pair
    (settings: seed, posterior samples of the CV, protein scale of the background)."""

    def cell_qc(self, pair: Pair, name: str, *, progress: ProgressFn | None = None) -> np.ndarray:
        """One per-cell quantity (:data:`QC_QUANTITIES`), float64 in cell order (NaN where
        undefined: no measured protein, an observed CV of 0)."""
        if name not in QC_QUANTITIES:
            shown = str(name)[:40]
            msg = f"unknown cell QC quantity {shown!r}; choose one of {list(QC_QUANTITIES)}"
            raise InvalidSelection(msg)
        if name.startswith("cv_ratio_"):
            table = self.cell_cv(pair, progress=progress)
            return table[f"log2_ratio_{name.removeprefix('cv_ratio_')}"].to_numpy()
        if QC_QUANTITIES[name]:
            self.require_counts(pair, "the per-cell reconstruction errors")
        return self.cell_diagnostics(pair, progress=progress)[_DIAGNOSTIC[name]].to_numpy()

    def cell_diagnostics(self, pair: Pair, *, progress: ProgressFn | None = None) -> pd.DataFrame:
        """:func:`model.cell_qc.cell_diagnostics` of every cell (one encoder-decoder pass;
        the background on the configured protein scale), a frame indexed by cell."""
        scale = self.settings.protein_scale
        params = {
            "seed": self.settings.seed,
            "batch_size": DIAGNOSTICS_BATCH_SIZE,
            "protein_scale": scale,
            "version": _VERSION,
        }
        data = self.registry.dataset(pair)

        def compute() -> pd.DataFrame:
            if progress is not None:
                progress(0.0, "per-cell diagnostics")
            out = cell_diagnostics(
                self.registry.model(pair),
                data,
                batch_size=DIAGNOSTICS_BATCH_SIZE,
                seed=self.settings.seed,
                protein_scale=scale,
            )
            return pd.DataFrame(out, index=data.obs_names)

        return self.results.cached("cell_diagnostics", pair, params, compute, progress)

    def cell_cv(
        self, pair: Pair, *, n_samples: int | None = None, progress: ProgressFn | None = None
    ) -> pd.DataFrame:
        """Per cell and modality: model CV, observed CV and log2 of their ratio (columns
        ``model_rna``, ``observed_rna``, ``log2_ratio_rna`` and the same for ``protein``).

        The model card's cell-wise CV, per cell: ``n_samples`` (default
        ``settings.n_posterior_samples``) posterior predictive draws as the card draws them
        (seed, 32 cells at a time, so RNA draws are the card's; proteins on the measured
        scale), the model CV their mean of per-draw CVs, the observed CV that of the counts
        (:func:`~dashboard.backend.metrics.model_and_raw_cv`). One minibatch of draws in
        memory at a time.
        """
        self.require_counts(pair, "the cell-wise CVs (observed vs generated counts)")
        n = int(n_samples or self.settings.n_posterior_samples)
        params = self._cv_params(n)

        def compute() -> pd.DataFrame:
            model = self.registry.model(pair)
            data = model.aligned(self.registry.dataset(pair))
            return cell_cv_table(model, data, n_samples=n, seed=self.settings.seed)

        return self.results.cached("cell_cv", pair, params, compute, progress)

    def has_cell_cv(self, pair: Pair) -> bool:
        """True if :meth:`cell_cv` (default draws) is in the cache (nothing is computed)."""
        if self.registry.dataset(pair).minified is not None:
            return False
        params = self._cv_params(self.settings.n_posterior_samples)
        return self.results.has("cell_cv", pair, params)

    def _cv_params(self, n_samples: int) -> dict[str, Any]:
        return {"n_samples": int(n_samples), "seed": self.settings.seed, "version": _VERSION}

    def feature_check(
        self,
        pair: Pair,
        feature: str,
        *,
        n_samples: int = CHECK_SAMPLES,
        progress: ProgressFn | None = None,
    ) -> FeatureCheck:
        """Posterior predictive check of ``feature`` (``"gene:<name>"`` or
        ``"protein:<name>"``): :class:`FeatureCheck` from ``n_samples`` draws per cell
        (proteins on the measured scale, the counts'), over at most :data:`CHECK_CELLS`
        cells drawn with the seed from those whose batch measured the feature."""
        self.require_counts(pair, "the posterior predictive checks (observed counts)")
        model = self.registry.model(pair)
        kind, name = _feature(model, feature)
        if not 1 <= int(n_samples) <= 200:
            msg = f"n_samples must be between 1 and 200, not {n_samples}"
            raise InvalidSelection(msg)
        params = {
            "feature": f"{kind}:{name}",
            "n_samples": int(n_samples),
            "seed": self.settings.seed,
            "max_cells": CHECK_CELLS,
            "version": _VERSION,
        }

        def compute() -> FeatureCheck:
            data = model.aligned(self.registry.dataset(pair))
            return feature_check(
                model, data, kind, name, n_samples=int(n_samples), seed=self.settings.seed
            )

        return self.results.cached("feature_check", pair, params, compute, progress)


def _feature(model: TotalVI, feature: str) -> tuple[str, str]:
    """``(kind, name)`` of a ``"gene:<name>"`` / ``"protein:<name>"`` the model has."""
    kind, _, name = str(feature).partition(":")
    names = {"gene": model.var_names, "protein": model.protein_names}.get(kind)
    if names is None or name not in names:
        shown = str(feature) if len(str(feature)) <= 60 else str(feature)[:57] + "..."
        msg = f"{shown!r} is not a gene or protein of this model"
        raise InvalidSelection(msg)
    return kind, name


def cell_cv_table(model: TotalVI, data: CiteSeqData, *, n_samples: int, seed: int) -> pd.DataFrame:
    """The per-cell CV frame of :meth:`CellQC.cell_cv` (``data`` aligned to the model)."""
    parts: dict[str, list[np.ndarray]] = {"rna": [], "protein": []}
    efficiency = model.has_protein_efficiency
    # the card's first draws (proteins efficiency-free); its measured proteins come from a
    # protein-only pass of the same seed
    full = iter_predictive_samples(
        model,
        data,
        n_samples=n_samples,
        batch_size=PPC_BATCH_SIZE,
        seed=seed,
        protein_scale=EFFICIENCY_FREE,
    )
    for idx, rna, protein in full:
        parts["rna"].append(
            np.stack(model_and_raw_cv(_samples(rna), data.rna[idx], cell_wise=True))
        )
        if not efficiency:
            parts["protein"].append(
                np.stack(model_and_raw_cv(_samples(protein), data.protein[idx], cell_wise=True))
            )
    if efficiency:
        measured = iter_predictive_samples(
            model,
            data,
            n_samples=n_samples,
            gene_list=[],
            batch_size=PPC_BATCH_SIZE,
            seed=seed,
            protein_scale=MEASURED,
        )
        for idx, _, protein in measured:
            parts["protein"].append(
                np.stack(model_and_raw_cv(_samples(protein), data.protein[idx], cell_wise=True))
            )
    out = {}
    for mod, chunks in parts.items():
        model_cv, raw_cv = np.concatenate(chunks, axis=1)
        out[f"model_{mod}"] = model_cv
        out[f"observed_{mod}"] = raw_cv
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.log2(model_cv / raw_cv)
        out[f"log2_ratio_{mod}"] = np.where(np.isfinite(ratio), ratio, np.nan)
    return pd.DataFrame(out, index=data.obs_names)


def _samples(x: np.ndarray) -> np.ndarray:
    """Draws as ``(cells, features, n_samples)`` (one draw comes 2-D)."""
    return x[..., None] if x.ndim == 2 else x


def feature_check(
    model: TotalVI,
    data: CiteSeqData,
    kind: str,
    name: str,
    *,
    n_samples: int,
    seed: int,
    max_cells: int = CHECK_CELLS,
) -> FeatureCheck:
    """The :class:`FeatureCheck` of gene or protein ``name`` (``data`` aligned) over at
    most ``max_cells`` of the cells that measured it (drawn with ``seed``)."""
    cells = np.arange(data.n_cells)
    if kind == "protein":
        mask = measured_proteins(model, data)
        if mask is not None:
            cells = np.flatnonzero(mask[:, data.protein_names.get_loc(name)])
    n_measured = len(cells)
    if n_measured > max_cells:
        cells = np.sort(np.random.default_rng(seed).choice(cells, max_cells, replace=False))
    if kind == "gene":
        observed = data.rna[cells][:, data.var_names.get_loc(name)]
        observed = observed.toarray().ravel() if sp.issparse(observed) else np.ravel(observed)
        lists = {"gene_list": [name], "protein_list": []}
        batch_size = CHECK_BATCH_SIZE
    else:
        observed = np.asarray(data.protein[cells, data.protein_names.get_loc(name)])
        lists = {"gene_list": [], "protein_list": [name]}
        batch_size = 256
    chunks = []
    draws = iter_predictive_samples(
        model,
        data,
        indices=cells,
        n_samples=n_samples,
        batch_size=batch_size,
        seed=seed,
        protein_scale=MEASURED,
        **lists,
    )
    for _, rna, protein in draws:
        chunks.append(_samples(rna if kind == "gene" else protein)[:, 0, :])
    samples = np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, n_samples))
    check = summarise_check(f"{kind}:{name}", np.asarray(observed, dtype=np.float64), samples)
    return dataclasses.replace(check, n_measured=n_measured)


def summarise_check(feature: str, observed: np.ndarray, samples: np.ndarray) -> FeatureCheck:
    """:class:`FeatureCheck` of ``observed`` counts (cells) and their draws (cells x draws).

    One bin per count up to :data:`CHECK_BINS`; beyond, at most :data:`CHECK_BINS` bins
    evenly spaced in log1p(count), their edges whole counts (one count per bin at the low
    end). The bins reach the largest observed count or the 99.9th
    percentile of the draws, whichever is higher; draws above go in the last bin, so both
    histograms count every cell.
    """
    n_cells, n_samples = samples.shape
    top = float(observed.max()) if observed.size else 0.0
    if samples.size:
        top = max(top, float(np.quantile(samples, 0.999)))
    log_bins = top > CHECK_BINS
    if log_bins:  # whole counts per bin, so no bin falls between two counts
        spaced = np.expm1(np.linspace(0.0, np.log1p(top + 1.0), CHECK_BINS + 1))
        edges = np.unique(np.floor(spaced))
    else:
        edges = np.arange(int(np.floor(top)) + 2, dtype=np.float64)  # [k, k+1) per count
    clipped = np.minimum(samples, edges[-1])
    obs_hist = np.histogram(observed, bins=edges)[0]
    smp_hist = np.histogram(clipped.ravel(), bins=edges)[0] / max(n_samples, 1)
    hits = interval_hits(samples[:, None, :], observed[:, None], CHECK_QUANTILES)
    with np.errstate(invalid="ignore", divide="ignore"):
        coverage = {
            w: float(h / n_cells) if n_cells else float("nan")
            for w, h in zip(CHECK_INTERVALS, hits, strict=True)
        }
        zero_obs = float(np.mean(observed == 0)) if n_cells else float("nan")
        zero_smp = float(np.mean(samples == 0)) if samples.size else float("nan")
    return FeatureCheck(
        feature=feature,
        edges=edges,
        observed=obs_hist.astype(np.int64),
        predicted=smp_hist.astype(np.float64),
        zero_observed=zero_obs,
        zero_predicted=zero_smp,
        coverage=coverage,
        n_cells=int(n_cells),
        n_samples=int(n_samples),
        log_bins=bool(log_bins),
    )
