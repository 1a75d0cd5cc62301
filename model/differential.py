"""Bayesian differential expression for TotalVI: scvi-tools' "change" mode (spec §7.7).

For two groups of cells, scvi-tools draws ``n_samples_overall`` (5000) cells per group with
replacement, takes one normalized-expression sample per draw (``px_scale`` for genes, the
foreground protein rate plus ``protein_prior_count`` for proteins), pairs draw *i* of group 1
with draw *i* of group 2 and studies the log fold change of each pair::

    lfc = log2(s1 + pc) - log2(s2 + pc)                     pc = pseudocounts (1e-5)
    proba_de = max(P(lfc >= delta), P(lfc < -delta))         ("three" test mode)
    bayes_factor = log(proba_de + 1e-8) - log(1 - proba_de + 1e-8)
    lfc_mean/median/std/min/max  on  log2(s1 + 1e-3 pc) - log2(s2 + 1e-3 pc)

Beyond scvi-tools' columns, ``lfc_lower`` and ``lfc_upper`` bound the central
``credible_level`` (95%) interval of the same log fold changes (numpy's linear quantiles of
the paired draws): a credible interval of the LFC, which scvi-tools does not report.

``batch_correction`` (scvi-tools' option): every batch category ``b`` of the model gets
``int(n_samples_overall / n_batch)`` draws per group, decoded as if measured in ``b``
(``transform_batch=b``), and draws are paired within the same batch (spec §7.7). Those draws
are decoded per comparison, as scvi-tools does; nothing is shared between comparisons.

``is_de_fdr_<fdr>`` flags the largest set of features, taken in decreasing ``proba_de``, whose
posterior expected FDR ``cumsum(1 - p) / k`` stays at or below the target.

**How this differs from scvi-tools, and why.** scvi-tools runs the full encoder and decoder
once per draw (10 000 forward passes per comparison, repeated for every comparison). Here the
normalized expression of every *cell* needed is computed once (``z_samples_per_cell`` z draws
per cell, default 1), ``log2(s + pc)`` is taken once per cell, and each comparison only gathers
the drawn columns. Each draw is still one sample of ``q(z | x)`` pushed through the decoder for
a uniformly drawn cell of its group, so every draw has exactly scvi-tools' marginal
distribution; the only difference is that repeated draws of the same cell reuse the same z
sample (occurrence ``j`` of a cell uses sample ``j mod z_samples_per_cell``) instead of a fresh
one. With ``z_samples_per_cell`` at least the largest number of times a cell is drawn, the
joint distribution is scvi-tools' too. The statistics run on the model's device, vectorised
over features in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from model.protein_scale import EFFICIENCY_FREE

if TYPE_CHECKING:
    from model.data import CiteSeqData
    from model.totalvi import TotalVI

EPS = 1e-8  # scvi-tools' eps in the Bayes factor
LFC_PSEUDOCOUNT_FACTOR = 1e-3  # lfc_mean/median/... use 1e-3 * pseudocounts (spec §7.7)
PROTEIN_SUFFIX = "_protein"

Field = Literal["rna", "protein"]
ProgressFn = Callable[[float, str], None]

STAT_COLUMNS = (
    "proba_de",
    "proba_not_de",
    "bayes_factor",
    "scale1",
    "scale2",
    "pseudocounts",
    "delta",
    "lfc_mean",
    "lfc_median",
    "lfc_std",
    "lfc_min",
    "lfc_max",
)
#: The credible interval of the LFC (not in scvi-tools' table).
INTERVAL_COLUMNS = ("lfc_lower", "lfc_upper")
RAW_COLUMNS = (
    "raw_mean1",
    "raw_mean2",
    "non_zeros_proportion1",
    "non_zeros_proportion2",
    "raw_normalized_mean1",
    "raw_normalized_mean2",
)


# ---------------------------------------------------------------------------- pure statistics
def fdr_de_prediction(proba_de: np.ndarray, fdr: float = 0.05) -> np.ndarray:
    """Flag features as DE while the posterior expected FDR stays ``<= fdr``.

    Features are sorted by ``proba_de`` (descending, stable); with ``cumFDR_k =
    sum_{i<=k}(1 - p_i) / k`` the first ``#{k : cumFDR_k <= fdr}`` features are flagged.
    Returns a boolean array in the input order.
    """
    p = np.asarray(proba_de, dtype=np.float64).ravel()
    order = np.argsort(-p, kind="stable")
    cumulative = np.cumsum(1.0 - p[order]) / np.arange(1, p.size + 1)
    n_de = int((cumulative <= fdr).sum())
    flags = np.zeros(p.size, dtype=bool)
    flags[order[:n_de]] = True
    return flags


def _median_last(x: torch.Tensor) -> torch.Tensor:
    """numpy's median along the last dim (mean of the two middle values when even)."""
    n = x.shape[-1]
    lower = x.median(dim=-1).values  # torch returns the lower middle value (k = n // 2)
    if n % 2 == 1:
        return lower
    # the upper middle value is the next order statistic: ``lower`` again if it occurs more
    # than ``n // 2`` times among the smallest, else the smallest value above it
    low = lower.unsqueeze(-1)
    repeats = (x <= low).sum(-1) > n // 2
    above = torch.where(x > low, x, torch.full_like(x, float("inf"))).amin(-1)
    upper = torch.where(repeats, lower, above)
    return (lower + upper) / 2


def _quantiles_last(x: torch.Tensor, qs: Sequence[float]) -> list[torch.Tensor]:
    """Quantiles ``qs`` along the last dim with numpy's default (linear) interpolation.

    Only the order statistics the quantiles interpolate are found: those among the lowest
    or highest quarter by a partial sort (``topk``) from that end, which for the tails of a
    credible interval is about 4x cheaper than sorting every row; a full sort if one lies
    in the middle. The order statistics are exact values, so the result equals a sort's
    (and ``torch.quantile`` would refuse inputs over 2**24 values).
    """
    n = x.shape[-1]
    parts = []
    for q in qs:
        pos = q * (n - 1)
        lo = int(np.floor(pos))
        parts.append((lo, min(lo + 1, n - 1), pos - lo))
    ranks = {r for lo, hi, _ in parts for r in (lo, hi)}
    low = [r for r in ranks if r < n // 4]
    high = [r for r in ranks if r >= n - n // 4]
    if len(low) + len(high) < len(ranks):
        ordered = torch.sort(x, dim=-1).values
        stat = {r: ordered[..., r] for r in ranks}
    else:
        stat = {}
        if low:  # the k smallest, ascending: position r is rank r
            smallest = torch.topk(x, max(low) + 1, dim=-1, largest=False).values
            stat.update({r: smallest[..., r] for r in low})
        if high:  # the k largest, descending: position j is rank n - 1 - j
            largest = torch.topk(x, n - min(high), dim=-1, largest=True).values
            stat.update({r: largest[..., n - 1 - r] for r in high})
    return [stat[lo] * (1 - w) + stat[hi] * w for lo, hi, w in parts]


def change_mode_statistics(
    lfc_test: torch.Tensor,
    lfc: torch.Tensor,
    *,
    delta: float = 0.25,
    test_mode: Literal["three", "two"] = "three",
    credible_level: float = 0.95,
) -> dict[str, np.ndarray]:
    """Change-mode statistics from paired log fold changes laid out ``(n_pairs, features)``.

    ``lfc_test`` is ``log2(s1 + pc) - log2(s2 + pc)`` (the test); ``lfc`` uses ``1e-3 pc``
    (the reported summaries and the ``credible_level`` interval ``lfc_lower..lfc_upper``).
    Row ``i`` is pair ``i``. Returns numpy arrays per feature.
    """
    n = lfc_test.shape[0]
    p_plus = (lfc_test >= delta).sum(0).double() / n
    p_minus = (lfc_test < -delta).sum(0).double() / n
    proba_de = p_plus + p_minus if test_mode == "two" else torch.maximum(p_plus, p_minus)
    mean = lfc.mean(0)
    std = (lfc - mean).square_().mean(0).sqrt()  # two-pass variance, as numpy's std
    tail = (1.0 - credible_level) / 2
    by_feature = lfc.T.contiguous()  # each feature's draws contiguous: faster selection
    lower, upper = _quantiles_last(by_feature, (tail, 1.0 - tail))
    out = {
        "proba_de": proba_de,
        "lfc_lower": lower,
        "lfc_upper": upper,
        "lfc_mean": mean,
        "lfc_median": _median_last(by_feature),
        "lfc_std": std,
        "lfc_min": lfc.amin(0),
        "lfc_max": lfc.amax(0),
    }
    return {k: v.cpu().numpy() for k, v in out.items()}


def bayes_factor(proba_de: np.ndarray) -> np.ndarray:
    """``log(p + 1e-8) - log(1 - p + 1e-8)``, as scvi-tools."""
    p = np.asarray(proba_de, dtype=np.float64)
    return np.log(p + EPS) - np.log(1.0 - p + EPS)


def change_mode_from_scales(
    scales1: np.ndarray | torch.Tensor,
    scales2: np.ndarray | torch.Tensor,
    *,
    delta: float = 0.25,
    pseudocounts: float = 1e-5,
    test_mode: Literal["three", "two"] = "three",
    fdr: float = 0.05,
) -> pd.DataFrame:
    """Change-mode table for already paired scale samples ``(n_pairs, features)``.

    The reference form of the test (no caching, no gathering), used by unit tests and for
    small inputs. Columns as in :data:`STAT_COLUMNS` plus ``is_de_fdr_<fdr>``; input order.
    """
    s1 = torch.as_tensor(np.asarray(scales1, dtype=np.float32))
    s2 = torch.as_tensor(np.asarray(scales2, dtype=np.float32))
    small = LFC_PSEUDOCOUNT_FACTOR * pseudocounts
    stats = change_mode_statistics(
        torch.log2(s1 + pseudocounts) - torch.log2(s2 + pseudocounts),
        torch.log2(s1 + small) - torch.log2(s2 + small),
        delta=delta,
        test_mode=test_mode,
    )
    frame = _stats_frame(
        stats,
        scale1=s1.mean(0).numpy(),
        scale2=s2.mean(0).numpy(),
        delta=delta,
        pseudocounts=pseudocounts,
    )
    frame[f"is_de_fdr_{fdr}"] = fdr_de_prediction(frame["proba_de"].to_numpy(), fdr)
    return frame


def _stats_frame(
    stats: dict[str, np.ndarray],
    *,
    scale1: np.ndarray,
    scale2: np.ndarray,
    delta: float,
    pseudocounts: float,
    index: Sequence[str] | None = None,
) -> pd.DataFrame:
    p = stats["proba_de"]
    cols = {
        "proba_de": p,
        "proba_not_de": 1.0 - p,
        "bayes_factor": bayes_factor(p),
        "scale1": scale1,
        "scale2": scale2,
        "pseudocounts": np.full(p.shape, pseudocounts),
        "delta": np.full(p.shape, delta),
        **{k: stats[k] for k in ("lfc_mean", "lfc_median", "lfc_std", "lfc_min", "lfc_max")},
        **{k: stats[k] for k in INTERVAL_COLUMNS if k in stats},
    }
    return pd.DataFrame(cols, index=None if index is None else pd.Index(index))


# --------------------------------------------------------------------------- raw statistics
def raw_counts_properties(
    rna: sp.csr_matrix | np.ndarray,
    protein: np.ndarray,
    idx1: np.ndarray,
    idx2: np.ndarray,
    *,
    use_field: Sequence[Field] = ("rna", "protein"),
    library: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Raw-count summaries of two groups (scvi-tools' ``cite_seq_raw_counts_properties``).

    ``raw_mean``, ``non_zeros_proportion`` for genes and proteins; ``raw_normalized_mean``
    (counts * 1e4 / cell total over all genes) for genes and NaN for proteins. ``library`` is
    the per-cell RNA total (computed when not given).
    """
    out: dict[str, list[np.ndarray]] = {k: [] for k in RAW_COLUMNS}
    if "rna" in use_field:
        if library is None:
            library = np.asarray(rna.sum(axis=1)).ravel()
        with np.errstate(divide="ignore"):
            scaling = 1e4 / np.asarray(library, dtype=np.float64)
        for j, idx in ((1, idx1), (2, idx2)):
            x = rna[idx]
            if sp.issparse(x):
                x = sp.csr_matrix(x)
                out[f"raw_mean{j}"].append(np.asarray(x.mean(axis=0)).ravel())
                out[f"non_zeros_proportion{j}"].append(np.asarray((x != 0).mean(axis=0)).ravel())
                norm = x.multiply(scaling[idx][:, None])
                out[f"raw_normalized_mean{j}"].append(np.asarray(norm.mean(axis=0)).ravel())
            else:
                x = np.asarray(x)
                out[f"raw_mean{j}"].append(x.mean(0))
                out[f"non_zeros_proportion{j}"].append((x != 0).mean(0))
                out[f"raw_normalized_mean{j}"].append((x * scaling[idx][:, None]).mean(0))
    if "protein" in use_field:
        pro = np.asarray(protein)
        nan = np.full(pro.shape[1], np.nan)
        for j, idx in ((1, idx1), (2, idx2)):
            y = pro[idx]
            out[f"raw_mean{j}"].append(y.mean(0))
            out[f"non_zeros_proportion{j}"].append((y > 0).mean(0))
            out[f"raw_normalized_mean{j}"].append(nan)
    return {k: np.concatenate(v).astype(np.float64) for k, v in out.items()}


# ------------------------------------------------------------------------------- the engine
def occurrence_index(draws: np.ndarray) -> np.ndarray:
    """For each draw, how many earlier draws picked the same cell (0 for the first)."""
    draws = np.asarray(draws)
    order = np.argsort(draws, kind="stable")
    sorted_draws = draws[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_draws)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, sorted_draws.size]))
    occurrence = np.empty(draws.size, dtype=np.int64)
    occurrence[order] = np.arange(draws.size) - run_start
    return occurrence


def _as_positions(idx: Any, n_cells: int, name: str) -> np.ndarray:
    arr = np.asarray(idx)
    if arr.dtype == bool:
        if arr.size != n_cells:
            msg = f"{name}: boolean mask has {arr.size} entries for {n_cells} cells"
            raise ValueError(msg)
        arr = np.flatnonzero(arr)
    arr = arr.astype(np.int64).ravel()
    if arr.size == 0:
        msg = f"{name} selects no cells; DE needs at least one cell per group"
        raise ValueError(msg)
    if arr.min() < 0 or arr.max() >= n_cells:
        msg = f"{name}: cell positions must lie in 0..{n_cells - 1}"
        raise ValueError(msg)
    return arr


@dataclass(frozen=True)
class ChangeMode:
    """How a change-mode comparison draws and decides, with scvi-tools' defaults: the
    change threshold ``delta``, the posterior FDR target, ``pseudocounts`` and the protein
    prior count of the fold changes, ``n_samples_overall`` draws per group, z draws per
    cell (see the module docstring), the test mode, the modalities compared, cells per
    forward pass, the seed, ``batch_correction`` (draws decoded in every batch, paired
    within a batch) and the ``credible_level`` of the LFC interval (ours). The entry points
    take these as keywords."""

    delta: float = 0.25
    fdr_target: float = 0.05
    pseudocounts: float = 1e-5
    protein_prior_count: float = 0.1
    n_samples_overall: int = 5000
    z_samples_per_cell: int = 1
    test_mode: Literal["three", "two"] = "three"
    use_field: Sequence[Field] = ("rna", "protein")
    batch_size: int = 512
    seed: int | None = 0
    batch_correction: bool = False
    credible_level: float = 0.95

    def __post_init__(self) -> None:
        if not 0.0 < self.credible_level < 1.0:
            msg = f"credible_level must lie in (0, 1), got {self.credible_level}"
            raise ValueError(msg)
        if not 0.0 <= self.fdr_target <= 1.0:
            msg = f"fdr_target must lie in [0, 1], got {self.fdr_target}"
            raise ValueError(msg)
        if self.delta < 0:
            msg = f"delta must be >= 0, got {self.delta}"
            raise ValueError(msg)
        if self.n_samples_overall < 1:
            msg = f"n_samples_overall must be >= 1, got {self.n_samples_overall}"
            raise ValueError(msg)


class DifferentialEngine:
    """Normalized expression cached per cell; any number of comparisons gather from it.

    Parameters
    ----------
    model
        A trained :class:`~model.totalvi.TotalVI`.
    data
        The cells to compare (aligned to the model's genes and proteins by the model).
    cells
        Positions of the cells whose expression is needed (default: all cells).
    mode
        How comparisons draw and decide (:class:`ChangeMode`); ``change`` overrides its
        fields (``z_samples_per_cell``: z draws decoded per cell; a cell drawn ``m`` times
        uses samples ``0..m-1`` cyclically; ``seed`` seeds the forward passes).
    scale_protein, sample_protein_mixing, include_protein_background
        As scvi-tools' ``TOTALVI.differential_expression``.
    feature_chunk
        Features per chunk in the statistics (bounds memory to ``chunk x n_samples``).
    """

    def __init__(
        self,
        model: TotalVI,
        data: CiteSeqData,
        *,
        cells: np.ndarray | None = None,
        mode: ChangeMode = ChangeMode(),  # frozen: one default shared safely
        scale_protein: bool = False,
        sample_protein_mixing: bool = False,
        include_protein_background: bool = False,
        feature_chunk: int = 256,
        **change: Any,
    ) -> None:
        self.mode = mode = replace(mode, **change)
        if mode.z_samples_per_cell < 1:
            msg = f"z_samples_per_cell must be >= 1, got {mode.z_samples_per_cell}"
            raise ValueError(msg)
        use_field = tuple(mode.use_field)
        if not use_field or set(use_field) - {"rna", "protein"}:
            msg = f"use_field must name 'rna' and/or 'protein', got {use_field}"
            raise ValueError(msg)
        self.use_field = use_field
        self.pseudocounts = float(mode.pseudocounts)
        self.feature_chunk = int(feature_chunk)
        self.device = model.device
        self.n_cells = data.n_cells
        self.k = int(mode.z_samples_per_cell)
        self.cells = (
            np.arange(data.n_cells)
            if cells is None
            else np.unique(_as_positions(cells, data.n_cells, "cells"))
        )
        self._pos = np.full(data.n_cells, -1, dtype=np.int64)
        self._pos[self.cells] = np.arange(self.cells.size)

        # raw counts aligned to the model's features
        self.rna, self.protein = _aligned_counts(model, data)
        self.library = np.asarray(self.rna.sum(axis=1)).ravel()
        names: list[str] = []
        modality: list[str] = []
        if "rna" in use_field:
            names += [str(v) for v in model.var_names]
            modality += ["rna"] * len(model.var_names)
        if "protein" in use_field:
            names += [f"{p}{PROTEIN_SUFFIX}" for p in model.protein_names]
            modality += ["protein"] * len(model.protein_names)
        self.feature_names = names
        self.modality = np.asarray(modality)

        self._model = model
        self._expression_options = {
            "scale_protein": scale_protein,
            "sample_protein_mixing": sample_protein_mixing,
            "include_protein_background": include_protein_background,
        }
        self._chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.n_rows = 0
        if mode.batch_correction:
            # every comparison decodes its own draws in every batch: nothing to share
            self._data = model.aligned(data)
            return
        # normalized expression once per (cell, z sample): scvi's _expression_for_de
        joint = self._scales(data, self.cells, n_samples=self.k, seed=mode.seed)
        n_feat = joint.shape[-1]
        # (cells * k, F): row = cell_pos * k + sample, split into feature chunks so that a
        # comparison gathers contiguous rows
        scales = torch.as_tensor(joint.reshape(-1, n_feat))
        del joint
        self.n_rows = scales.shape[0]
        for start in range(0, n_feat, self.feature_chunk):
            sc = scales[:, start : start + self.feature_chunk].contiguous().to(self.device)
            self._chunks.append((sc, *self._logs(sc)))

    def _logs(self, sc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``log2(s + pc)`` (the test) and ``log2(s + 1e-3 pc)`` (the reported LFC)."""
        small = LFC_PSEUDOCOUNT_FACTOR * self.pseudocounts
        return torch.log2(sc + self.pseudocounts), torch.log2(sc + small)

    def _scales(
        self,
        data: CiteSeqData,
        cells: np.ndarray,
        *,
        n_samples: int,
        seed: int | None,
        transform_batch: int | None = None,
    ) -> np.ndarray:
        """Normalized expression of ``cells`` (repeats allowed) as ``(cells, n_samples, F)``
        float32: gene scales, then protein foreground rates plus the protein prior count
        (scvi's ``_expression_for_de``), decoded in ``transform_batch`` (``None``: each
        cell's own batch)."""
        rna, pro = self._model.get_normalized_expression(
            data,
            indices=cells,
            n_samples=n_samples,
            transform_batch=transform_batch,
            return_mean=False,
            return_numpy=True,
            batch_size=self.mode.batch_size,
            seed=seed,
            protein_scale=EFFICIENCY_FREE,  # scvi-tools' DE; a batch's efficiency cancels in LFC
            **self._expression_options,
        )
        parts = []
        if "rna" in self.use_field:
            parts.append(_cells_samples_features(rna, n_samples))
        if "protein" in self.use_field:
            parts.append(
                _cells_samples_features(pro, n_samples) + np.float32(self.mode.protein_prior_count)
            )
        return np.concatenate(parts, axis=-1)

    @property
    def n_features(self) -> int:
        """Genes plus proteins compared."""
        return len(self.feature_names)

    def raw_one_vs_rest(self, codes: np.ndarray, n_groups: int) -> list[dict[str, np.ndarray]]:
        """:func:`raw_counts_properties` of every group ``g`` (cells with ``codes == g``)
        versus the rest, for all groups at once with one sparse product per statistic."""
        n = self.n_cells
        onehot = sp.csr_matrix(
            (np.ones(n), (np.arange(n), np.asarray(codes))), shape=(n, n_groups)
        )
        sizes = np.asarray(onehot.sum(0)).ravel()[:, None]

        def group_and_rest(x: Any) -> tuple[np.ndarray, np.ndarray]:
            """Means in each group and in its rest: two ``(n_groups, features)`` arrays."""
            sums = onehot.T @ x
            sums = np.asarray(sums.todense() if sp.issparse(sums) else sums)
            total = np.asarray(x.sum(0)).ravel()
            with np.errstate(divide="ignore", invalid="ignore"):
                return sums / sizes, (total - sums) / (n - sizes)

        stats: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {
            "raw_mean": [],
            "non_zeros_proportion": [],
            "raw_normalized_mean": [],
        }
        if "rna" in self.use_field:
            x = sp.csr_matrix(self.rna, dtype=np.float64)
            nonzero = x.copy()
            nonzero.data = (nonzero.data != 0).astype(np.float64)
            with np.errstate(divide="ignore"):
                scaling = 1e4 / self.library.astype(np.float64)
            stats["raw_mean"].append(group_and_rest(x))
            stats["non_zeros_proportion"].append(group_and_rest(nonzero))
            stats["raw_normalized_mean"].append(group_and_rest(sp.diags(scaling) @ x))
        if "protein" in self.use_field:
            y = np.asarray(self.protein, dtype=np.float64)
            stats["raw_mean"].append(group_and_rest(y))
            stats["non_zeros_proportion"].append(group_and_rest((y > 0).astype(np.float64)))
            nan = np.full((n_groups, y.shape[1]), np.nan)
            stats["raw_normalized_mean"].append((nan, nan))
        return [
            {
                f"{key}{j}": np.concatenate([pair[j - 1][g] for pair in parts])
                for key, parts in stats.items()
                for j in (1, 2)
            }
            for g in range(n_groups)
        ]

    def _columns(self, draws: np.ndarray) -> torch.Tensor:
        """Column of each draw: its cell's slot and the occurrence-cycled z sample."""
        pos = self._pos[draws]
        if (pos < 0).any():
            msg = "a drawn cell is not among the cells this engine computed"
            raise ValueError(msg)
        cols = pos if self.k == 1 else pos * self.k + occurrence_index(draws) % self.k
        return torch.as_tensor(cols, dtype=torch.long, device=self.device)

    def compare(
        self,
        idx1: Any,
        idx2: Any,
        *,
        rng: np.random.Generator | int | None = 0,
        draws: tuple[np.ndarray, np.ndarray] | None = None,
        raw: dict[str, np.ndarray] | None = None,
        sort: bool = True,
    ) -> pd.DataFrame:
        """Change-mode DE of group ``idx1`` versus ``idx2`` (positions or boolean masks),
        as the engine's :class:`ChangeMode` says.

        ``n_samples_overall`` cells are drawn with replacement from each group (or ``draws``
        gives them); ``raw`` may hold precomputed :func:`raw_counts_properties`. Returns one
        row per feature (genes, then proteins suffixed ``_protein``; sorted by ``proba_de``
        descending when ``sort``) with the statistics, the raw-count summaries,
        ``is_de_fdr_<fdr_target>`` and a ``modality`` column.
        """
        cells1 = _as_positions(idx1, self.n_cells, "idx1")
        cells2 = _as_positions(idx2, self.n_cells, "idx2")
        if self.mode.batch_correction:
            if draws is not None:
                msg = "draws cannot be given with batch_correction (each batch draws its own)"
                raise ValueError(msg)
            stats, scale1, scale2 = self._batch_corrected(
                cells1, cells2, np.random.default_rng(rng)
            )
        else:
            if draws is None:
                gen = np.random.default_rng(rng)
                n = self.mode.n_samples_overall
                draws = (gen.choice(cells1, n, replace=True), gen.choice(cells2, n, replace=True))
            stats, scale1, scale2 = self._gathered(*draws)
        delta = self.mode.delta
        frame = _stats_frame(
            stats,
            scale1=scale1,
            scale2=scale2,
            delta=delta,
            pseudocounts=self.pseudocounts,
            index=self.feature_names,
        )
        if raw is None:
            raw = raw_counts_properties(
                self.rna,
                self.protein,
                cells1,
                cells2,
                use_field=self.use_field,
                library=self.library,
            )
        for key in RAW_COLUMNS:
            frame[key] = raw[key]
        frame["modality"] = self.modality
        if sort:
            frame = frame.sort_values("proba_de", ascending=False, kind="stable")
        fdr_target = self.mode.fdr_target
        frame[f"is_de_fdr_{fdr_target}"] = fdr_de_prediction(
            frame["proba_de"].to_numpy(), fdr_target
        )
        return frame

    def _statistics(self, lfc_test: torch.Tensor, lfc: torch.Tensor) -> dict[str, np.ndarray]:
        return change_mode_statistics(
            lfc_test,
            lfc,
            delta=self.mode.delta,
            test_mode=self.mode.test_mode,
            credible_level=self.mode.credible_level,
        )

    def _gathered(
        self, draws1: np.ndarray, draws2: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Statistics and mean scales of paired draws gathered from the cached expression."""
        draws1, draws2 = (np.asarray(d, dtype=np.int64) for d in (draws1, draws2))
        if draws1.size != draws2.size:
            msg = "the two groups need the same number of draws (they are paired)"
            raise ValueError(msg)
        n = draws1.size
        cols1, cols2 = self._columns(draws1), self._columns(draws2)
        weights = torch.zeros(self.n_rows, dtype=torch.float32, device=self.device)
        ones = torch.ones(n, dtype=torch.float32, device=self.device)
        w1 = weights.index_add(0, cols1, ones) / n
        w2 = weights.index_add(0, cols2, ones) / n
        pieces: list[dict[str, np.ndarray]] = []
        scale1, scale2 = [], []
        for sc, log, log_lfc in self._chunks:
            pieces.append(
                self._statistics(
                    log.index_select(0, cols1) - log.index_select(0, cols2),
                    log_lfc.index_select(0, cols1) - log_lfc.index_select(0, cols2),
                )
            )
            scale1.append((w1 @ sc).cpu().numpy())
            scale2.append((w2 @ sc).cpu().numpy())
        stats = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
        return stats, np.concatenate(scale1), np.concatenate(scale2)

    def _batch_corrected(
        self, cells1: np.ndarray, cells2: np.ndarray, rng: np.random.Generator
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """scvi-tools' ``batch_correction``: ``int(n_samples_overall / n_batch)`` draws per
        group in every batch of the model, decoded as if measured there and paired within
        the batch; statistics and mean scales over all pairs."""
        n_batch = int(self._model.config.n_batch)
        per = self.mode.n_samples_overall // n_batch
        if per == 0:
            msg = (
                f"batch correction needs at least one draw per batch: n_samples_overall "
                f"{self.mode.n_samples_overall} < {n_batch} batches"
            )
            raise ValueError(msg)
        parts1, parts2 = [], []
        for b in range(n_batch):
            d1 = rng.choice(cells1, per, replace=True)
            d2 = rng.choice(cells2, per, replace=True)
            seed = int(rng.integers(2**31 - 2))
            for d, out, s in ((d1, parts1, seed), (d2, parts2, seed + 1)):
                out.append(self._scales(self._data, d, n_samples=1, seed=s, transform_batch=b))
        sc1 = torch.as_tensor(np.concatenate(parts1)[:, 0]).to(self.device)
        sc2 = torch.as_tensor(np.concatenate(parts2)[:, 0]).to(self.device)
        pieces = []
        for start in range(0, sc1.shape[1], self.feature_chunk):
            log1, lfc1 = self._logs(sc1[:, start : start + self.feature_chunk])
            log2, lfc2 = self._logs(sc2[:, start : start + self.feature_chunk])
            pieces.append(self._statistics(log1 - log2, lfc1 - lfc2))
        stats = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
        return stats, sc1.mean(0).cpu().numpy(), sc2.mean(0).cpu().numpy()


def _cells_samples_features(arr: np.ndarray, k: int) -> np.ndarray:
    """Model output as ``(cells, k, features)`` float32."""
    arr = np.asarray(arr, dtype=np.float32)
    if k == 1:
        return arr[:, None, :]
    return np.transpose(arr, (0, 2, 1))  # model gives (cells, features, samples)


def _aligned_counts(model: TotalVI, data: CiteSeqData) -> tuple[sp.csr_matrix, np.ndarray]:
    """Raw RNA (CSR) and protein counts in the model's feature order."""
    rna = sp.csr_matrix(data.rna)
    protein = np.asarray(data.protein)
    gi = pd.Index(data.var_names).get_indexer(model.var_names)
    pi = pd.Index(data.protein_names).get_indexer(model.protein_names)
    if (gi < 0).any() or (pi < 0).any():
        msg = "the data lack some of the model's genes or proteins; align the data first"
        raise ValueError(msg)
    if not np.array_equal(gi, np.arange(rna.shape[1])):
        rna = rna[:, gi]
    if not np.array_equal(pi, np.arange(protein.shape[1])):
        protein = protein[:, pi]
    return rna, protein


# ---------------------------------------------------------------------------- entry points
def differential_expression(
    model: TotalVI,
    data: CiteSeqData,
    idx1: Any,
    idx2: Any | None = None,
    *,
    group1: str = "group1",
    group2: str | None = None,
    scale_protein: bool = False,
    sample_protein_mixing: bool = False,
    include_protein_background: bool = False,
    **change: Any,
) -> pd.DataFrame:
    """Change-mode DE between two groups of cells (``idx2=None``: the rest of the cells).

    ``change``: any field of :class:`ChangeMode` (``delta``, ``fdr_target``, ...). Only the
    cells drawn are pushed through the model. Adds ``comparison`` (``"g1 vs g2"``),
    ``group1`` and ``group2`` columns (``group2`` defaults to ``"Rest"`` or ``"group2"``).
    """
    mode = ChangeMode(**change)
    pos1 = _as_positions(idx1, data.n_cells, "idx1")
    if idx2 is None:
        rest = np.ones(data.n_cells, dtype=bool)
        rest[pos1] = False
        pos2 = _as_positions(rest, data.n_cells, "the rest (idx2)")
        group2 = group2 or "Rest"
    else:
        pos2 = _as_positions(idx2, data.n_cells, "idx2")
        group2 = group2 or "group2"
    rng = np.random.default_rng(mode.seed)
    options = {
        "mode": mode,
        "scale_protein": scale_protein,
        "sample_protein_mixing": sample_protein_mixing,
        "include_protein_background": include_protein_background,
    }
    if mode.batch_correction:  # the draws are decoded per batch inside the comparison
        frame = DifferentialEngine(model, data, **options).compare(pos1, pos2, rng=rng)
        return _label(frame, group1, group2)
    draws1 = rng.choice(pos1, mode.n_samples_overall, replace=True)
    draws2 = rng.choice(pos2, mode.n_samples_overall, replace=True)
    engine = DifferentialEngine(model, data, cells=np.union1d(draws1, draws2), **options)
    frame = engine.compare(pos1, pos2, draws=(draws1, draws2))
    return _label(frame, group1, group2)


def differential_expression_one_vs_rest(
    model: TotalVI,
    data: CiteSeqData,
    labels: Sequence[Any] | np.ndarray | pd.Series,
    *,
    groups: Sequence[Any] | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    **change: Any,
) -> pd.DataFrame:
    """Each group of ``labels`` versus all other cells, concatenated (scvi's ``groupby``).

    ``change``: any field of :class:`ChangeMode`. The normalized expression of every cell
    is computed once and shared by all comparisons.
    ``progress(fraction, message)`` is called after each group; ``should_stop()`` is polled
    between groups and raises :class:`InterruptedError` when true.
    """
    mode = ChangeMode(**change)
    lab = pd.Series(np.asarray(labels, dtype=object)).astype(str)
    if lab.size != data.n_cells:
        msg = f"labels has {lab.size} entries for {data.n_cells} cells"
        raise ValueError(msg)
    categories = (
        [str(g) for g in groups] if groups is not None else list(pd.Categorical(lab).categories)
    )
    if len(categories) < 2 and groups is None:
        msg = "only a single group in the labels; DE needs at least two"
        raise ValueError(msg)
    if progress is not None:
        progress(0.0, "computing normalized expression")
    engine = DifferentialEngine(model, data, mode=mode)
    rng = np.random.default_rng(mode.seed)
    values = lab.to_numpy()
    codes = pd.Categorical(values, categories=categories).codes
    raw_all = engine.raw_one_vs_rest(
        np.where(codes < 0, len(categories), codes), len(categories) + 1
    )
    frames = []
    for i, g in enumerate(categories):
        if should_stop is not None and should_stop():
            msg = f"DE cancelled after {i} of {len(categories)} groups"
            raise InterruptedError(msg)
        mask = values == g
        frame = engine.compare(mask, ~mask, rng=rng, raw=raw_all[i])
        frames.append(_label(frame, g, "Rest"))
        if progress is not None:
            progress((i + 1) / len(categories), f"DE {g} vs Rest")
    return pd.concat(frames, axis=0)


def _label(frame: pd.DataFrame, group1: str, group2: str) -> pd.DataFrame:
    frame["comparison"] = f"{group1} vs {group2}"
    frame["group1"] = group1
    frame["group2"] = group2
    return frame
