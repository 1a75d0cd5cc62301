"""Model-card metrics as scvi-hub computes them (spec §8), and the card's model summary.

Posterior predictive samples (``n_samples``, 3 on scvi-hub) are compared with the raw counts,
separately for each modality (``rna``, then ``protein``):

* **coefficient of variation** (CV = population std / mean) per cell across features
  ("cell-wise", split into the model's training and validation cells when it has them) and
  per feature across cells ("gene-wise"). The model CV is the mean over samples of the
  per-sample CV (NaN skipped); the raw CV has NaN set to 0. Rows: Mean Absolute Error,
  Pearson, Spearman, and R² = ``r2_score(y_true=model, y_pred=raw)`` (scvi's order).
* **DE metric** per cell type: scanpy ``normalize_total(1e4)`` + ``log1p`` +
  ``rank_genes_groups(method="t-test")`` on the raw counts and on the first posterior sample
  (the same tables from per-group sums a chunk of cells at a time,
  :mod:`dashboard.backend.group_ttest`, so neither count matrix is copied);
  top-n F1, lfc MAE / Pearson / Spearman, ROC AUC and average precision of the sample's
  t-scores against raw ``pvals_adj < 0.2`` (fallback: raw top-n), rows by n_cells descending.

Deliberate, documented deviations keep the tables defined where scvi-tools would raise or
degenerate: features whose model CV is NaN in every sample (all-zero samples) are left out of
the CV rows; groups with fewer than two cells are left out of the DE table (scanpy's t-test
needs two); the top-n of the DE metric is at least 1 (scvi's ``int(0.1 * n_vars)`` is 0 below
10 features, which makes every F1 0 and every ROC AUC undefined); a ROC AUC or average
precision whose labels are all one class is NaN (shown "–"), not an sklearn warning.
``E[X²] - E[X]²`` is clipped at 0 before the square root.

Reading the tables: the card's advice (generated data should not be used downstream below a
squared Pearson correlation of 0.4) is on r², while the table's row is Pearson r; the page
shows both (:func:`cv_display_table`). R² is ``r2_score(model, raw)`` over a model CV that
averages only ``n_samples`` (3) posterior samples, so it moves from one draw to the next.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from dashboard.backend.denoise import unmeasured_proteins
from dashboard.backend.group_ttest import GroupTTest
from model.protein_scale import (
    EFFICIENCY_FREE,
    MEASURED,
    SCALE_SHORT,
    ProteinScale,
    check_protein_scale,
)
from model.read_options import DEFAULT_PROTEIN_OBSM_KEY, OURS, ReadOptions

if TYPE_CHECKING:
    from model.data import CiteSeqData
    from model.totalvi import TotalVI

MODALITIES = ("rna", "protein")
CV_ROWS = ("Mean Absolute Error", "Pearson Correlation", "Spearman Correlation", "R² (R-Squared)")
DE_COLUMNS = ("gene_f1", "lfc_mae", "lfc_pearson", "lfc_spearman", "roc_auc", "pr_auc", "n_cells")
PEARSON_R2_ROW = "Pearson r² (card: ≥ 0.4)"
CV_DISPLAY_ROWS = (CV_ROWS[0], CV_ROWS[1], PEARSON_R2_ROW, *CV_ROWS[2:])
PEARSON_R2_THRESHOLD = 0.4  # the card template's advice, on the squared Pearson correlation
DEFAULT_N_TOP = 100  # scvi-tools' DEFAULT_DE_N_TOP_GENES_OVERLAP
DEFAULT_P_VAL_THRESH = 0.2
PPC_BATCH_SIZE = 32  # scvi-tools' PosteriorPredictiveCheck draws its samples 32 cells at a time
#: scvi-tools' ``calibration_error`` quantiles: 7 central intervals, 95% down to 65%
CALIBRATION_QUANTILES = (
    0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.825, 0.85, 0.875, 0.9, 0.925, 0.95, 0.975,
)  # fmt: skip
CALIBRATION_SAMPLES = 20  # posterior predictive draws per cell for the calibration row
CALIBRATION_CELLS = 500  # RNA calibration on at most this many cells
#: Protein calibration on at most this many cells: 2,000 cells x 111 proteins are 222,000
#: entries (a coverage's standard error about 0.001), and the draws cost O(cells)
CALIBRATION_PROTEIN_CELLS = 2000
CALIBRATION_ERROR = "calibration error"
PROTEIN_ROWS = {
    MEASURED: f"Protein ({SCALE_SHORT[MEASURED]})",
    EFFICIENCY_FREE: f"Protein ({SCALE_SHORT[EFFICIENCY_FREE]}, as scvi-tools samples)",
}
MEASURED_CARD_NOTE = (
    "Protein metrics from posterior predictive samples on the measured scale (the learned "
    "capture efficiency applied, as in the likelihood the model was trained with); "
    "scvi-tools 1.4.2 leaves it out (its issue #4022)."
)
WHY_SCALES_DIFFER = (
    "scvi-tools 1.4.2 trains on protein counts times a learned capture efficiency per batch "
    "and protein but leaves that efficiency out when it samples (its issue #4022), so its "
    "generated proteins sit on another scale than the counts; ours sample from the likelihood "
    "the model was trained with."
)


@dataclass
class MetricsResult:
    """All model-card metric tables, per modality, and their scvi-hub markdown.

    ``protein_scale`` says which protein samples the protein tables come from;
    ``other_scale`` holds the same tables from protein samples on the other scale (for the
    measured result, scvi-tools 1.4.2's: capture efficiency left out; the RNA tables are the
    same objects) when the two differ; the two results point at each other.
    ``calibration`` (rows per modality and protein scale) and ``protein_means`` (observed vs
    sampled mean per protein) are shared by both.
    """

    cell_wise_cv: dict[str, pd.DataFrame] = field(default_factory=dict)
    gene_wise_cv: dict[str, pd.DataFrame] = field(default_factory=dict)
    diff_exp: dict[str, pd.DataFrame] = field(default_factory=dict)
    n_samples: int = 3
    groups: str = ""  # which groups the DE metric compares (shown on the page)
    n_features: dict[str, int] = field(default_factory=dict)  # per modality
    n_top: dict[str, int] = field(default_factory=dict)  # top-n of the DE metric, per modality
    gene_cv_points: dict[str, pd.DataFrame] = field(
        default_factory=dict
    )  # feature, observed, generated
    protein_scale: str = MEASURED
    other_scale: MetricsResult | None = field(default=None, repr=False, compare=False)
    calibration: pd.DataFrame | None = None
    protein_means: pd.DataFrame | None = None
    one_scale: bool = False  # the model has no learned efficiency: both scales are these

    def for_scale(self, scale: str) -> MetricsResult:
        """The tables from protein samples on ``scale`` (itself when the model has no
        efficiency, so both scales are one); ValueError when that scale was not computed."""
        check_protein_scale(scale)
        if scale == self.protein_scale or self.one_scale:
            return self
        if self.other_scale is None:
            msg = f"these metrics have no tables from {scale} protein samples"
            raise ValueError(msg)
        return self.other_scale

    def markdown(self) -> dict[str, str]:
        """``{"cell_wise_cv", "gene_wise_cv", "diff_exp"}`` as scvi's ``metrics.json``."""
        out = {"cell_wise_cv": "", "gene_wise_cv": "", "diff_exp": ""}
        for mod in self.cell_wise_cv:
            out["cell_wise_cv"] += (
                f"Modality: {mod}\n\n" + cv_table_markdown(self.cell_wise_cv[mod]) + "\n\n"
            )
            out["gene_wise_cv"] += (
                f"Modality: {mod}\n\n" + cv_table_markdown(self.gene_wise_cv[mod]) + "\n\n"
            )
            out["diff_exp"] += (
                f"Modality: {mod}\n\n" + dataframe_to_markdown(self.diff_exp[mod]) + "\n\n"
            )
        return out


# ------------------------------------------------------------------- coefficient of variation
def coefficient_of_variation(x: np.ndarray | sp.spmatrix, axis: int) -> np.ndarray:
    """Population std / mean along ``axis`` of a 2-D array (NaN where the mean is 0)."""
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float64)
        mean = np.asarray(x.mean(axis=axis)).ravel()
        sq = np.asarray(x.multiply(x).mean(axis=axis)).ravel()
    else:
        x = np.asarray(x)
        mean = x.mean(axis=axis, dtype=np.float64)
        sq = np.square(x, dtype=np.float64).mean(axis=axis)
    std = np.sqrt(np.maximum(sq - mean**2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return std / mean


CV_CHUNK_CELLS = 2048  # cells per chunk of the CV moments (memory: one chunk in float64)


class CVMoments:
    """Coefficients of variation of ``(cells, features, n_samples)`` arrays given a chunk of
    cells at a time, as :func:`coefficient_of_variation` computes them on the whole array.

    Cell-wise CVs (across features) are computed per chunk; feature-wise ones (across cells)
    from float64 running sums of x and x² per feature and sample, so memory is the chunk and
    ``features x n_samples`` sums, not the cells x features x samples array.
    """

    def __init__(self, n_cells: int, n_features: int, n_samples: int) -> None:
        self.n_cells = n_cells
        self.cell = np.full((n_samples, n_cells), np.nan)
        self.sums = np.zeros((n_samples, n_features))
        self.squares = np.zeros((n_samples, n_features))
        self.filled = 0

    def add(self, chunk: np.ndarray | sp.spmatrix) -> None:
        """The next cells: ``(cells, features, n_samples)``, or 2-D (one sample, may be
        sparse)."""
        parts = [chunk] if chunk.ndim == 2 else [chunk[..., s] for s in range(chunk.shape[-1])]
        if len(parts) != self.cell.shape[0]:
            msg = f"expected {self.cell.shape[0]} samples, got {len(parts)}"
            raise ValueError(msg)
        rows = chunk.shape[0]
        stop = self.filled + rows
        if stop > self.n_cells:
            msg = f"more than the {self.n_cells} cells expected"
            raise ValueError(msg)
        for s, x in enumerate(parts):
            self.cell[s, self.filled : stop] = coefficient_of_variation(x, 1)
            if sp.issparse(x):
                x = sp.csr_matrix(x, dtype=np.float64)
                self.sums[s] += np.asarray(x.sum(axis=0)).ravel()
                self.squares[s] += np.asarray(x.multiply(x).sum(axis=0)).ravel()
            else:
                x = np.asarray(x)
                self.sums[s] += x.sum(axis=0, dtype=np.float64)
                self.squares[s] += np.square(x, dtype=np.float64).sum(axis=0)
        self.filled = stop

    def per_sample(self, *, cell_wise: bool) -> np.ndarray:
        """``(n_samples, cells)`` or ``(n_samples, features)`` CVs, NaN where the mean is 0."""
        if self.filled != self.n_cells:
            msg = f"{self.filled} of {self.n_cells} cells given"
            raise ValueError(msg)
        if cell_wise:
            return self.cell
        mean = self.sums / self.n_cells
        std = np.sqrt(np.maximum(self.squares / self.n_cells - mean**2, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            return std / mean

    def model_cv(self, *, cell_wise: bool) -> np.ndarray:
        """The model CV: the mean over samples of the per-sample CV, NaN skipped."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN
            return np.nanmean(self.per_sample(cell_wise=cell_wise), axis=0)

    def raw_cv(self, *, cell_wise: bool) -> np.ndarray:
        """The raw CV (one sample: the counts), NaN set to 0."""
        return np.nan_to_num(self.per_sample(cell_wise=cell_wise)[0])


def raw_cvs(
    x: np.ndarray | sp.spmatrix, *, chunk: int = CV_CHUNK_CELLS
) -> tuple[np.ndarray, np.ndarray]:
    """Cell-wise and feature-wise CV of the counts ``x`` (cells x features), NaN -> 0,
    ``chunk`` cells at a time: dense counts through :class:`CVMoments`, sparse ones through
    :func:`sparse_cvs` (bit for bit scipy's whole-matrix result, so Spearman's ties stay)."""
    if sp.issparse(x):
        cell, feature = sparse_cvs(x, chunk=chunk)
        return np.nan_to_num(cell), np.nan_to_num(feature)
    moments = CVMoments(x.shape[0], x.shape[1], 1)
    for start in range(0, x.shape[0], chunk):
        moments.add(x[start : start + chunk])
    return moments.raw_cv(cell_wise=True), moments.raw_cv(cell_wise=False)


def sparse_cvs(x: sp.spmatrix, *, chunk: int = CV_CHUNK_CELLS) -> tuple[np.ndarray, np.ndarray]:
    """:func:`coefficient_of_variation` of sparse ``x`` along axis 1 (per cell) and 0 (per
    feature), ``chunk`` cells at a time, with the same bits as on the whole matrix.

    On the whole matrix scipy copies it to float64 twice (x and x*x: 2 GB at 72k cells);
    here one chunk is. The feature-wise means follow scipy's order of operations: every
    value times ``1 / n_cells``, added into its feature's sum in storage order
    (``np.add.at`` keeps that order across chunks, as scipy's sparse-times-ones does).
    """
    x = sp.csr_matrix(x)  # no copy when already CSR
    n_cells, n_features = x.shape
    cell = np.empty(n_cells)
    mean = np.zeros(n_features)
    square = np.zeros(n_features)
    scale = 1.0 / n_cells
    for start in range(0, n_cells, chunk):
        part = x[start : start + chunk]
        cell[start : start + part.shape[0]] = coefficient_of_variation(part, 1)
        part.sum_duplicates()  # what scipy's x * x does first
        values = part.data.astype(np.float64)
        np.add.at(mean, part.indices, values * scale)
        np.add.at(square, part.indices, (values * values) * scale)
    std = np.sqrt(np.maximum(square - mean**2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return cell, std / mean


def model_and_raw_cv(
    samples: np.ndarray,
    raw: np.ndarray | sp.spmatrix,
    *,
    cell_wise: bool,
    chunk: int = CV_CHUNK_CELLS,
) -> tuple[np.ndarray, np.ndarray]:
    """Model CV (mean over samples, NaN skipped) and raw CV (NaN -> 0).

    ``samples`` is ``(cells, features, n_samples)``; ``cell_wise`` computes across features
    for every cell (scvi's ``dim="features"``), else across cells for every feature. Both
    are accumulated ``chunk`` cells at a time (:class:`CVMoments`).
    """
    moments = CVMoments(*samples.shape)
    for start in range(0, samples.shape[0], chunk):
        moments.add(samples[start : start + chunk])
    raw_cv = raw_cvs(raw, chunk=chunk)[0 if cell_wise else 1]
    return moments.model_cv(cell_wise=cell_wise), raw_cv


def cv_metrics(model_cv: np.ndarray, raw_cv: np.ndarray) -> dict[str, float]:
    """The four card rows for one split (features with a NaN model CV left out)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, r2_score

    ok = np.isfinite(model_cv) & np.isfinite(raw_cv)
    m, r = model_cv[ok], raw_cv[ok]
    if m.size < 2:
        return dict.fromkeys(CV_ROWS, float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input -> NaN correlation
        return {
            "Mean Absolute Error": float(mean_absolute_error(m, r)),
            "Pearson Correlation": float(pearsonr(m, r)[0]),
            "Spearman Correlation": float(spearmanr(m, r)[0]),
            "R² (R-Squared)": float(r2_score(m, r)),  # y_true = model, as scvi-tools
        }


def cv_table(
    model_cv: np.ndarray,
    raw_cv: np.ndarray,
    *,
    train_indices: np.ndarray | None = None,
    validation_indices: np.ndarray | None = None,
) -> pd.DataFrame:
    """Card table: rows :data:`CV_ROWS`; "Training Value" (+ "Validation Value" when both
    index sets are non-empty, as scvi-tools does for the cell-wise table)."""
    train = np.asarray([] if train_indices is None else train_indices, dtype=np.int64)
    val = np.asarray([] if validation_indices is None else validation_indices, dtype=np.int64)
    if train.size and val.size:
        cols = {
            "Training Value": cv_metrics(model_cv[train], raw_cv[train]),
            "Validation Value": cv_metrics(model_cv[val], raw_cv[val]),
        }
    else:
        cols = {"Training Value": cv_metrics(model_cv, raw_cv)}
    frame = pd.DataFrame(cols).loc[list(CV_ROWS)]
    frame.index.name = "Metric"
    return frame


def cv_table_markdown(table: pd.DataFrame) -> str:
    """The card's CV markdown, spacing as scvi-tools' ``_cv_metrics`` writes it."""
    v = {row: table.loc[row] for row in CV_ROWS}
    if "Validation Value" in table.columns:
        t, q = "Training Value", "Validation Value"
        return (
            "| Metric                  | Training Value | Validation Value |\n"
            "|-------------------------|----------------|------------------|\n"
            f"| Mean Absolute Error | {v[CV_ROWS[0]][t]:.2f}  | "
            f"{v[CV_ROWS[0]][q]:.2f}           |\n"
            f"| Pearson Correlation | {v[CV_ROWS[1]][t]:.2f}  | {v[CV_ROWS[1]][q]:.2f}  |\n"
            f"| Spearman Correlation | {v[CV_ROWS[2]][t]:.2f} | {v[CV_ROWS[2]][q]:.2f}  |\n"
            f"| R² (R-Squared) | {v[CV_ROWS[3]][t]:.2f}  | {v[CV_ROWS[3]][q]:.2f}      |"
        )
    t = "Training Value"
    return (
        "| Metric                  | Training Value |\n"
        "|-------------------------|----------------|\n"
        f"| Mean Absolute Error | {v[CV_ROWS[0]][t]:.2f}   |\n"
        f"| Pearson Correlation | {v[CV_ROWS[1]][t]:.2f}  |\n"
        f"| Spearman Correlation | {v[CV_ROWS[2]][t]:.2f} |\n"
        f"| R² (R-Squared) | {v[CV_ROWS[3]][t]:.2f}  |"
    )


def cv_display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The CV table as the page shows it: the card's rows plus Pearson r², right after
    Pearson r, since the card's 0.4 threshold is on r² (rows :data:`CV_DISPLAY_ROWS`)."""
    out = table.copy()
    out.loc[PEARSON_R2_ROW] = table.loc["Pearson Correlation"] ** 2
    return out.loc[list(CV_DISPLAY_ROWS)]


def cv_advice(table: pd.DataFrame) -> str:
    """One line on the card's advice for a CV table: which columns have Pearson r² < 0.4."""
    r2 = table.loc["Pearson Correlation"] ** 2
    low = [
        f"{col} {v:.2f}" for col, v in r2.items() if np.isfinite(v) and v < PEARSON_R2_THRESHOLD
    ]
    if low:
        return (
            f"Pearson r² below {PEARSON_R2_THRESHOLD} ({', '.join(low)}): the card advises "
            "against using these generated data downstream."
        )
    if not np.isfinite(r2.to_numpy(dtype=float)).any():
        return "Pearson r² is undefined here (constant CVs)."
    return f"Pearson r² ≥ {PEARSON_R2_THRESHOLD} in every column: within the card's advice."


def de_top_note(n_features: int, n_top: int, feature: str = "features") -> str:
    """What the top-n of the DE metric is for ``n_features`` features, and why."""
    scvi = n_top_features(n_features, clamp=False)
    if n_top == DEFAULT_N_TOP:
        rule = f"scvi-tools' {DEFAULT_N_TOP}"
    elif scvi < 1:
        rule = (
            f"10% of {n_features}, at least 1; scvi-tools' int(0.1 × {n_features}) = 0 would "
            "make every F1 0 and every ROC AUC undefined"
        )
    else:
        rule = f"10% of {n_features}, rounded down, as scvi-tools"
    note = f"Top {n_top} of {n_features:,} {feature} per group ({rule})."
    if n_top == 1:
        note += " With one top feature, F1 is 0 or 1: whether the top feature agrees."
    return note


def dataframe_to_markdown(df: pd.DataFrame) -> str:
    """scvi-tools' ``_dataframe_to_markdown``: ``| Index | ... |``, values ``.2f`` unless a
    Python int.

    Values keep their numpy type (as in scvi's object-dtype table), so an ``int64`` column
    such as ``n_cells`` renders as ``1234.00`` exactly like the hub cards.
    """
    header = "| Index | " + " | ".join(map(str, df.columns)) + " |"
    separator = "| --- | " + " | ".join("---" for _ in df.columns) + " |"
    columns = [df[c].to_numpy() for c in df.columns]
    rows = "\n".join(
        "| "
        + " | ".join(
            [str(index)]
            + [f"{value:.2f}" if not isinstance(value, int) else f"{value}" for value in row]
        )
        + " |"
        for index, row in zip(df.index, zip(*columns, strict=True), strict=True)
    )
    return f"{header}\n{separator}\n{rows}"


# ----------------------------------------------------------------------------- DE metric
def n_top_features(n_vars: int, n_top: int = DEFAULT_N_TOP, *, clamp: bool = True) -> int:
    """scvi's cap, ``int(0.1 * n_vars)`` when ``10 * n_top > n_vars``, but at least 1.

    ``clamp=False`` gives scvi-tools' value, which is 0 below 10 features (8 proteins:
    ``int(0.8) = 0`` top features, so F1 is 0 and ROC AUC undefined for every group).
    """
    n = int(0.1 * n_vars) if 10 * n_top > n_vars else n_top
    return max(1, n) if clamp else n


DE_CHUNK_CELLS = 4096  # cells per chunk of the DE metric's t-test sums


def de_groups(labels: Sequence[Any] | np.ndarray | pd.Series) -> tuple[np.ndarray, list[str]]:
    """The DE metric's labels (as strings) and the groups it ranks: those of two or more
    cells (scanpy's t-test needs two), in category order."""
    lab = pd.Series(np.asarray(labels).astype(str)).astype("category")
    counts = lab.value_counts()
    groups = [str(g) for g in lab.cat.categories if counts[g] >= 2]
    if len(groups) < 2 or len(lab.cat.categories) < 2:
        msg = "the DE metric needs at least two groups with two or more cells each"
        raise ValueError(msg)
    return lab.to_numpy(dtype=str), groups


def group_ttest(
    counts: np.ndarray | sp.spmatrix,
    labels: np.ndarray,
    groups: Sequence[str],
    names: Sequence[str],
    *,
    chunk: int = DE_CHUNK_CELLS,
) -> GroupTTest:
    """The one-vs-rest t-test sums of ``counts`` (cells x features), ``chunk`` cells at a
    time."""
    test = GroupTTest(labels, groups, names)
    for start in range(0, counts.shape[0], chunk):
        test.add(counts[start : start + chunk])
    return test


def de_metric_table(
    raw: np.ndarray | sp.spmatrix,
    sample: np.ndarray | sp.spmatrix,
    labels: Sequence[Any] | np.ndarray | pd.Series,
    *,
    feature_names: Sequence[str],
    n_top: int = DEFAULT_N_TOP,
    p_val_thresh: float = DEFAULT_P_VAL_THRESH,
) -> pd.DataFrame:
    """DE agreement between raw counts and one posterior predictive sample, per group
    (:func:`de_metric_from_tests` of both counts' t-tests).

    Columns :data:`DE_COLUMNS`, index = group, sorted by ``n_cells`` descending.
    """
    lab, groups = de_groups(labels)
    names = [str(f) for f in feature_names]
    return de_metric_from_tests(
        group_ttest(raw, lab, groups, names),
        group_ttest(sample, lab, groups, names),
        n_top=n_top,
        p_val_thresh=p_val_thresh,
    )


def de_metric_from_tests(
    raw: GroupTTest,
    sample: GroupTTest,
    *,
    n_top: int = DEFAULT_N_TOP,
    p_val_thresh: float = DEFAULT_P_VAL_THRESH,
) -> pd.DataFrame:
    """The DE metric's table from the t-tests of the raw counts and of the sample (same
    labels, groups and features; scanpy's ``rank_genes_groups`` tables, which scvi-tools
    uses, to float rounding: :mod:`dashboard.backend.group_ttest`)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    n_top = n_top_features(len(raw.names), n_top)
    rows = {}
    for g, group in enumerate(raw.groups):
        rg = raw.table(group).set_index("names")
        sg = sample.table(group).set_index("names")
        f1 = top_overlap_f1(rg.index[:n_top], sg.index[:n_top])
        sg = sg.reindex(rg.index)
        rgd = rg["logfoldchanges"].to_numpy(dtype=np.float64)
        sgd = sg["logfoldchanges"].to_numpy(dtype=np.float64)
        raw_p = rg["pvals_adj"].to_numpy()
        true = (raw_p < p_val_thresh).astype(float)
        pred = sg["scores"].to_numpy()
        if true.sum() == 0 or true.sum() > 0.5 * len(true):
            true = np.zeros_like(pred)
            true[np.argsort(raw_p)[:n_top]] = 1
        both_classes = 0 < true.sum() < len(true)  # else ROC/PR are undefined: NaN, shown "–"
        rows[group] = {
            "gene_f1": f1,
            "lfc_mae": float(np.mean(np.abs(rgd - sgd))),
            "lfc_pearson": _correlation(rgd, sgd, "pearson"),
            "lfc_spearman": _correlation(rgd, sgd, "spearman"),
            "roc_auc": float(roc_auc_score(true, pred)) if both_classes else float("nan"),
            "pr_auc": float(average_precision_score(true, pred)) if both_classes else float("nan"),
            "n_cells": np.int64(raw.counts[g]),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")[list(DE_COLUMNS)]
    table.index.name = "group"
    return table.sort_values("n_cells", ascending=False, kind="stable")


def top_overlap_f1(true_top: Sequence[str], pred_top: Sequence[str]) -> float:
    """Binary F1 of the predicted top features against the true ones (as scvi's
    ``precision_recall_fscore_support`` over all features): ``2|T∩P| / (|T| + |P|)``."""
    t, q = set(true_top), set(pred_top)
    return 2 * len(t & q) / (len(t) + len(q)) if t or q else float("nan")


def _correlation(a: np.ndarray, b: np.ndarray, kind: Literal["pearson", "spearman"]) -> float:
    """Pearson or Spearman r of two vectors; NaN (no scipy warning) when one is constant."""
    from scipy.stats import pearsonr, spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float((pearsonr if kind == "pearson" else spearmanr)(a, b)[0])


# ---------------------------------------------------------------------------- calibration
def central_intervals(quantiles: Sequence[float] = CALIBRATION_QUANTILES) -> list[tuple[int, int]]:
    """Index pairs ``(lo, hi)`` of the central intervals, widest first, as scvi-tools pairs
    its quantiles (the i-th from the start with the i-th from the end)."""
    if len(quantiles) % 2:
        msg = "calibration quantiles must come in pairs"
        raise ValueError(msg)
    n = len(quantiles)
    return [(i, n - 1 - i) for i in range(n // 2)]


def interval_widths(quantiles: Sequence[float] = CALIBRATION_QUANTILES) -> list[float]:
    """Nominal width of each central interval (0.95 ... 0.65 for scvi-tools' quantiles)."""
    return [quantiles[hi] - quantiles[lo] for lo, hi in central_intervals(quantiles)]


def interval_hits(
    samples: np.ndarray,
    observed: np.ndarray | sp.spmatrix,
    quantiles: Sequence[float] = CALIBRATION_QUANTILES,
    *,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """How many observed entries fall inside each central interval of their samples.

    ``samples`` is ``(cells, features, n_samples)``, ``observed`` ``(cells, features)``.
    Per entry the interval is ``[q_lo, q_hi]`` of its samples (linear interpolation, as
    xarray's quantile), ends included. ``mask`` (cells x features, bool) keeps only some
    entries (e.g. the proteins a batch measured). Returns counts per interval (widest
    first), so chunks of cells add up.
    """
    obs = observed.toarray() if sp.issparse(observed) else np.asarray(observed)
    q = sample_quantiles(samples, quantiles)
    keep = np.ones(obs.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return np.array(
        [
            np.count_nonzero((obs >= q[lo]) & (obs <= q[hi]) & keep)
            for lo, hi in central_intervals(quantiles)
        ],
        dtype=np.int64,
    )


def sample_quantiles(samples: np.ndarray, quantiles: Sequence[float]) -> list[np.ndarray]:
    """``np.quantile(samples, quantiles, axis=-1)`` (linear method, numpy's interpolation
    formula) from one sort of the last axis: many times faster for a few samples."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64), axis=-1)
    n = ordered.shape[-1]
    out = []
    for q in quantiles:
        pos = q * (n - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n - 1)
        t = pos - lo
        a, b = ordered[..., lo], ordered[..., hi]
        diff = b - a
        out.append(a + diff * t if t < 0.5 else b - diff * (1 - t))
    return out


def calibration_error(
    coverage: Sequence[float], quantiles: Sequence[float] = CALIBRATION_QUANTILES
) -> float:
    """scvi-tools' ``calibration_error``: the sum over central intervals of (observed
    coverage - nominal width)²; 0 for a perfectly calibrated predictive, lower is better."""
    widths = interval_widths(quantiles)
    return float(sum((c - w) ** 2 for c, w in zip(coverage, widths, strict=True)))


def calibration_row(hits: np.ndarray, n_entries: int) -> dict[str, float]:
    """Coverage per nominal interval (``"95%"`` ... ``"65%"``) and the calibration error;
    NaN throughout when there are no entries (no cells, or no measured protein)."""
    widths = interval_widths()
    if n_entries <= 0:
        row = {f"{round(100 * w)}%": float("nan") for w in widths}
        row[CALIBRATION_ERROR] = float("nan")
        return row
    coverage = hits / n_entries
    row = {f"{round(100 * w)}%": float(c) for w, c in zip(widths, coverage, strict=True)}
    row[CALIBRATION_ERROR] = calibration_error(coverage)
    return row


def sampled_hits(
    model: TotalVI,
    data: CiteSeqData,
    raw: np.ndarray | sp.spmatrix,
    cells: np.ndarray,
    *,
    modality: Modality,
    n_samples: int,
    seed: int,
    protein_scale: ProteinScale,
    mask: np.ndarray | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """:func:`interval_hits` of fresh posterior predictive samples of one modality over
    ``cells`` (``data`` aligned to the model), drawn a chunk of cells at a time so memory
    stays one chunk of samples; ``mask`` (all cells x features) keeps measured entries."""
    total = np.zeros(len(central_intervals()), dtype=np.int64)
    only = {"protein_list": []} if modality == "rna" else {"gene_list": []}
    for k, start in enumerate(range(0, len(cells), chunk)):
        idx = cells[start : start + chunk]
        pp = model.posterior_predictive_sample(
            data,
            indices=idx,
            n_samples=n_samples,
            seed=seed + k,
            protein_scale=protein_scale,
            batch_size=chunk,
            **only,
        )
        samples = _with_sample_axis(pp[modality])
        total += interval_hits(samples, raw[idx], mask=None if mask is None else mask[idx])
    return total


def measured_proteins(model: TotalVI, data: CiteSeqData) -> np.ndarray | None:
    """``(cells, proteins)`` bool: the entries whose protein the cell's batch measured
    (``None``: all). Unmeasured ones are zero-filled counts, not observations."""
    missing = unmeasured_proteins(model, data)
    return None if missing is None else ~missing


def calibration_table(
    model: TotalVI,
    data: CiteSeqData,
    raw: Mapping[str, np.ndarray | sp.spmatrix],
    *,
    scales: Sequence[ProteinScale],
    n_samples: int = CALIBRATION_SAMPLES,
    max_cells: int = CALIBRATION_CELLS,
    max_protein_cells: int = CALIBRATION_PROTEIN_CELLS,
    seed: int = 0,
) -> pd.DataFrame:
    """Posterior predictive calibration per modality: coverage of each central interval of
    ``n_samples`` fresh draws per cell vs its nominal width, and scvi-tools' calibration
    error (its definition; scvi-tools' own number uses the card's 3 draws).

    Rows ``"RNA"`` (at most ``max_cells`` cells, drawn with ``seed``: RNA draws are the
    costly part) and one protein row per scale in ``scales`` (at most ``max_protein_cells``
    cells, drawn after the RNA's; measured entries only). ``raw`` holds the counts aligned
    to the model's features. The draws cost time in proportion to the cells, so the table
    takes about the same time at any size of data.
    """
    data = model.aligned(data)  # once, not once per chunk
    rng = np.random.default_rng(seed)
    n = data.n_cells

    def some_cells(at_most: int) -> np.ndarray:
        return np.sort(rng.choice(n, at_most, replace=False)) if n > at_most else np.arange(n)

    rna_cells = some_cells(max_cells)
    protein_cells = some_cells(max_protein_cells)
    rows = {}
    hits = sampled_hits(
        model,
        data,
        raw["rna"],
        rna_cells,
        modality="rna",
        n_samples=n_samples,
        seed=seed,
        protein_scale=MEASURED,
    )
    rows["RNA"] = calibration_row(hits, len(rna_cells) * raw["rna"].shape[1])
    mask = measured_proteins(model, data)
    n_protein = (
        len(protein_cells) * raw["protein"].shape[1]
        if mask is None
        else int(mask[protein_cells].sum())
    )
    for scale in scales:
        hits = sampled_hits(
            model,
            data,
            raw["protein"],
            protein_cells,
            modality="protein",
            n_samples=n_samples,
            seed=seed,
            protein_scale=scale,
            mask=mask,
        )
        label = PROTEIN_ROWS[scale] if len(scales) > 1 else "Protein"
        rows[label] = calibration_row(hits, n_protein)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "modality"
    table["cells"] = [len(rna_cells)] + [len(protein_cells)] * len(scales)
    return table


def protein_means_table(
    observed: np.ndarray | sp.spmatrix,
    samples: Mapping[str, np.ndarray],
    names: Sequence[str],
    *,
    mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per protein: observed mean count, and the mean of posterior predictive samples on
    each scale (columns named by the scale) with its ratio to the observed (1 when the
    scale matches the counts). ``mask`` (cells x proteins): only the measured entries
    count; a protein with none (or no cells) is NaN."""
    obs = observed.toarray() if sp.issparse(observed) else np.asarray(observed)
    keep = np.ones(obs.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    count = keep.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        obs_mean = np.where(keep, obs, 0).sum(axis=0, dtype=np.float64) / count
        table = pd.DataFrame(
            {"observed mean": obs_mean}, index=pd.Index(list(names), name="protein")
        )
        for scale, smp in samples.items():
            per_cell = np.asarray(smp, dtype=np.float64).mean(axis=2)
            sampled = np.where(keep, per_cell, 0).sum(axis=0) / count
            table[f"sampled mean ({scale})"] = sampled
            table[f"ratio ({scale})"] = sampled / obs_mean
    return table


# ------------------------------------------------------------------------------- pipeline
#: Minibatches of the posterior predictive draws between two progress reports.
PROGRESS_EVERY = 25


def compute_metrics(
    model: TotalVI,
    data: CiteSeqData,
    labels: Sequence[Any] | np.ndarray | pd.Series,
    *,
    n_samples: int = 3,
    seed: int = 0,
    use_model_split: bool = True,
    groups: str = "",
    protein_scale: ProteinScale = MEASURED,
    batch_size: int = PPC_BATCH_SIZE,
    calibration_samples: int = CALIBRATION_SAMPLES,
    calibration_cells: int = CALIBRATION_CELLS,
    calibration_protein_cells: int = CALIBRATION_PROTEIN_CELLS,
    progress: Any = None,
) -> MetricsResult:
    """Posterior predictive samples, then CV and DE tables for ``rna`` and ``protein``.

    The draws are scvi-tools 1.4.2's (same random stream, ``batch_size`` 32 as its
    ``PosteriorPredictiveCheck``): with ``protein_scale="efficiency-free"`` the tables are
    those of its model card. On the measured scale (default) the protein samples are drawn
    again with the capture efficiency applied, and the scvi-tools tables are kept as
    ``other_scale``. The cell-wise table is split into ``model.train_indices`` /
    ``validation_indices`` when ``use_model_split`` and both exist and fit ``data``
    (positions in the training data). ``labels`` are the DE metric's groups, ``groups`` says
    what they are (kept on the result). ``calibration_samples`` (0: none) draws per cell
    give the calibration table (RNA over at most ``calibration_cells`` cells, proteins over
    at most ``calibration_protein_cells``).
    """
    check_protein_scale(protein_scale)
    if progress is not None:
        progress(0.0, f"drawing {n_samples} posterior predictive samples")
    raw = {"rna": _aligned(data.rna, data.var_names, model.var_names)}
    raw["protein"] = _aligned(data.protein, data.protein_names, model.protein_names)
    names = {"rna": list(model.var_names), "protein": list(model.protein_names)}
    de_labels, de_group_names = de_groups(labels)
    # RNA: CV moments and the DE metric's t-test sums of the first sample, a minibatch at a
    # time (memory: the minibatch and the sums; no sample is kept)
    rna_moments, pro_parts = None, []
    first_rna = GroupTTest(de_labels, de_group_names, names["rna"])
    drawn = 0
    for cells, rna_part, pro_part in model.iter_posterior_predictive_sample(
        data,
        n_samples=n_samples,
        seed=seed,
        batch_size=batch_size,
        protein_scale=EFFICIENCY_FREE,
    ):
        rna_part = _with_sample_axis(rna_part)
        if rna_moments is None:
            rna_moments = CVMoments(data.n_cells, rna_part.shape[1], rna_part.shape[2])
        rna_moments.add(rna_part)
        first_rna.add(rna_part[..., 0])
        pro_parts.append(pro_part)
        drawn += len(cells)
        if progress is not None and len(pro_parts) % PROGRESS_EVERY == 0:  # and a cancel point
            progress(0.45 * drawn / data.n_cells, f"posterior predictive samples: {drawn:,} cells")
    if rna_moments is None:
        msg = "the metrics need at least one cell"
        raise ValueError(msg)
    protein = {EFFICIENCY_FREE: _with_sample_axis(np.concatenate(pro_parts))}
    del pro_parts
    if protein_scale == MEASURED and model.has_protein_efficiency:
        protein[MEASURED] = _with_sample_axis(
            model.posterior_predictive_sample(
                data,
                gene_list=[],
                n_samples=n_samples,
                seed=seed,
                batch_size=batch_size,
                protein_scale=MEASURED,
            )["protein"]
        )
    train = val = None
    if use_model_split:
        ti, vi = model.train_indices, model.validation_indices
        if (
            ti is not None
            and vi is not None
            and len(ti)
            and len(vi)
            and max(np.max(ti), np.max(vi)) < data.n_cells
        ):
            train, val = np.asarray(ti), np.asarray(vi)
    raw_cv = {mod: raw_cvs(raw[mod]) for mod in MODALITIES}  # (cell-wise, feature-wise)
    raw_test = {
        mod: group_ttest(raw[mod], de_labels, de_group_names, names[mod]) for mod in MODALITIES
    }

    def tables(result: MetricsResult, mod: str, moments: CVMoments, first: GroupTTest) -> None:
        result.n_features[mod] = len(names[mod])
        result.n_top[mod] = n_top_features(len(names[mod]))
        m_cell = moments.model_cv(cell_wise=True)
        r_cell = raw_cv[mod][0]
        result.cell_wise_cv[mod] = cv_table(
            m_cell, r_cell, train_indices=train, validation_indices=val
        )
        m_gene = moments.model_cv(cell_wise=False)
        r_gene = raw_cv[mod][1]
        result.gene_wise_cv[mod] = cv_table(m_gene, r_gene)
        result.gene_cv_points[mod] = pd.DataFrame(
            {"feature": names[mod], "observed": r_gene, "generated": m_gene}
        )
        result.diff_exp[mod] = de_metric_from_tests(raw_test[mod], first)

    def protein_tables(result: MetricsResult, samples: np.ndarray) -> None:
        moments = CVMoments(*samples.shape)
        for start in range(0, samples.shape[0], CV_CHUNK_CELLS):
            moments.add(samples[start : start + CV_CHUNK_CELLS])
        first = group_ttest(samples[..., 0], de_labels, de_group_names, names["protein"])
        tables(result, "protein", moments, first)

    # without a learned efficiency (or one of 1) the two scales are one: the draws above
    result = MetricsResult(
        n_samples=n_samples,
        groups=groups,
        protein_scale=protein_scale,
        one_scale=not model.has_protein_efficiency,
    )
    tables(result, "rna", rna_moments, first_rna)
    del first_rna
    if progress is not None:
        progress(0.5, "protein: CV and DE metric")
    protein_tables(result, protein.get(protein_scale, protein[EFFICIENCY_FREE]))
    result.protein_means = protein_means_table(
        raw["protein"], protein, names["protein"], mask=measured_proteins(model, data)
    )
    if calibration_samples > 0:
        if progress is not None:
            progress(0.75, f"calibration: {calibration_samples} samples per cell")
        result.calibration = calibration_table(
            model,
            data,
            raw,
            scales=[s for s in PROTEIN_ROWS if s in protein],
            n_samples=calibration_samples,
            max_cells=calibration_cells,
            max_protein_cells=calibration_protein_cells,
            seed=seed,
        )
    if MEASURED in protein:  # scvi-tools' tables: the same but for the protein ones
        per_modality = (
            "cell_wise_cv", "gene_wise_cv", "diff_exp", "gene_cv_points", "n_features", "n_top"
        )  # fmt: skip
        scvi = dataclasses.replace(
            result,
            protein_scale=EFFICIENCY_FREE,
            **{name: dict(getattr(result, name)) for name in per_modality},
        )
        protein_tables(scvi, protein[EFFICIENCY_FREE])
        result.other_scale, scvi.other_scale = scvi, result
    if progress is not None:
        progress(1.0, "done")
    return result


def _with_sample_axis(samples: np.ndarray) -> np.ndarray:
    """Samples as float32 ``(cells, features, n_samples)`` (one sample comes 2-D)."""
    out = np.asarray(samples, dtype=np.float32)
    return out[..., None] if out.ndim == 2 else out


def _aligned(x: Any, have: Sequence[str], want: Sequence[str]) -> Any:
    pos = pd.Index(have).get_indexer(list(want))
    if (pos < 0).any():
        msg = "the data lack some of the model's features; align the data to the model first"
        raise ValueError(msg)
    if np.array_equal(pos, np.arange(len(have))):
        return x
    return x[:, pos]


# ------------------------------------------------------------------------- model summary
def model_card_properties(
    model: TotalVI,
    data: CiteSeqData | None,
    *,
    options: ReadOptions | None = None,
) -> dict[str, Any]:
    """The card's "Model Properties": parameters, setup arguments, registry, summary stats.

    The setup arguments are the checkpoint's own (scvi-tools' ``setup_anndata`` /
    ``setup_mudata`` arguments) where it has them; the data registry says where the counts
    and keys were read from (``options``: how the dataset was opened).
    """
    cfg = model.config.to_dict()
    for k in ("n_genes", "n_proteins", "n_batch", "n_labels"):
        cfg.pop(k, None)
    non_kwargs = {k: v for k, v in cfg.items() if not isinstance(v, dict)}
    kwargs = {k2: v2 for v in cfg.values() if isinstance(v, dict) for k2, v2 in v.items()}
    params = (
        {**non_kwargs, **kwargs} if not set(kwargs) & set(non_kwargs) else cfg
    )  # scvi-hub flattens nested kwargs the same way
    opts = options or ReadOptions.from_setup_args(model.setup_args)
    setup = {k: v for k, v in model.setup_args.items() if k != OURS}
    if model.setup_args.get("setup_method_name") is None:  # ours: say it as setup_anndata
        setup = {
            "layer": opts.layer,
            "protein_expression_obsm_key": opts.protein_obsm_key or DEFAULT_PROTEIN_OBSM_KEY,
            **setup,
        }
    source = (data.source if data is not None else "") or ""
    mudata_source = source.lower().endswith(".h5mu")
    rna_mod = opts.rna_modality or "rna"
    pro_mod = opts.protein_modality or "protein"
    counts = "X" if opts.layer is None else f"layers['{opts.layer}']"
    proteins = "X" if opts.protein_layer is None else f"layers['{opts.protein_layer}']"
    obsm = opts.protein_obsm_key or DEFAULT_PROTEIN_OBSM_KEY
    registry = {
        "X": f"adata.mod['{rna_mod}'].{counts}" if mudata_source else f"adata.{counts}",
        "batch": "adata.obs['_scvi_batch']",
        "labels": "adata.obs['_scvi_labels']",
        "proteins": f"adata.mod['{pro_mod}'].{proteins}"
        if mudata_source
        else f"adata.obsm['{obsm}']",
    }
    stats = dict(model.summary())
    if data is not None:
        stats["n_cells"] = data.n_cells
    return {
        "model_parameters": params,
        "setup_arguments": setup,
        "data_registry": registry,
        "summary_statistics": stats,
    }


def summary_stats_markdown(stats: Mapping[str, Any]) -> str:
    """scvi's ``_view_summary_stats(as_markdown=True)``."""
    rows = ["| Summary Stat Key          | Value |", "|--------------------------|-------|"]
    rows += [f"| {k:<25} | {v} |" for k, v in stats.items()]
    return "\n".join(rows)


def data_registry_markdown(registry: Mapping[str, str]) -> str:
    """scvi's ``_view_data_registry(as_markdown=True)``."""
    rows = [
        "| Registry Key             | scvi-tools Location                  |",
        "|--------------------------|--------------------------------------|",
    ]
    rows += [f"| {k:<25} | {v:<36} |" for k, v in registry.items()]
    return "\n".join(rows)


def model_card_markdown(
    properties: Mapping[str, Any], metrics: Mapping[str, str] | None = None, *, note: str = ""
) -> str:
    """Metrics and Model Properties sections of an scvi-hub TOTALVI card (``note``: a
    paragraph before the metrics, e.g. which protein samples they come from)."""
    na = "Not provided by uploader"
    m = metrics or {}
    return (
        "# Metrics\n\n"
        + (f"{note}\n\n" if note else "")
        + "**Cell-wise Coefficient of Variation**:\n\n"
        f"{m.get('cell_wise_cv', na)}\n\n"
        "**Gene-wise Coefficient of Variation**:\n\n"
        f"{m.get('gene_wise_cv', na)}\n\n"
        "**Differential expression**:\n\n"
        f"{m.get('diff_exp', na)}\n\n"
        "# Model Properties\n\n"
        "**Model Parameters**:\n```json\n"
        f"{json.dumps(properties['model_parameters'], indent=4, default=str)}\n```\n\n"
        "**Setup Data Arguments**:\n```json\n"
        f"{json.dumps(properties['setup_arguments'], indent=4, default=str)}\n```\n\n"
        "**Data Registry**:\n"
        f"{data_registry_markdown(properties['data_registry'])}\n\n"
        "**Summary Statistics**:\n\n"
        f"{summary_stats_markdown(properties['summary_statistics'])}\n"
    )


Modality = Literal["rna", "protein"]
