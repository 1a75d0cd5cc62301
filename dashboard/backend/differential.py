"""Bayesian differential expression of a pair's cells: every cell type versus the rest, and
a selection versus another.

Cached results of :class:`Differential` (:class:`~dashboard.backend.results.Results`),
computed by :mod:`model.differential` after the checks of :mod:`dashboard.backend.de`.
For minified data (counts dropped) the raw-count columns are NaN rather than the zeros
that would read as "never expressed".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from dashboard.backend import de
from dashboard.backend.results import CachedQueries

if TYPE_CHECKING:
    import pandas as pd

    from dashboard.backend.annotation import Annotation
    from dashboard.backend.refs import Pair
    from dashboard.backend.registry import Registry
    from dashboard.backend.results import ProgressFn, Results
    from dashboard.backend.settings import Settings
    from model.data import CiteSeqData
    from model.totalvi import TotalVI


class Differential(CachedQueries):
    """DE tables of a pair, genes and proteins (settings: seed, samples, effect-size
    threshold, FDR target, cell limit; ``annotation``: the cell types compared one versus
    the rest)."""

    def __init__(
        self, results: Results, registry: Registry, settings: Settings, annotation: Annotation
    ) -> None:
        super().__init__(results, registry, settings)
        self.annotation = annotation

    def default_controls(self) -> de.DEControls:
        """The DE controls of the settings (scvi-tools' defaults unless configured)."""
        s = self.settings
        return de.DEControls(
            delta=s.de_delta, fdr_target=s.de_fdr, n_samples_overall=s.de_n_samples
        )

    def de_params(self, controls: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The DE settings a table is computed (and keyed) with: the settings', with the
        user's ``controls`` (:class:`~dashboard.backend.de.DEControls` fields) over them,
        checked (a forged value raises one line)."""
        c = de.DEControls.checked(controls, self.default_controls())
        params = {
            "n_samples_overall": c.n_samples_overall,
            "delta": c.delta,
            "fdr_target": c.fdr_target,
            "z_samples_per_cell": self.settings.de_z_samples_per_cell,
            "seed": self.settings.seed,
        }
        if c.batch_correction:  # keys of uncorrected tables stay as they were
            params["batch_correction"] = True
        return params

    def de_one_vs_rest(
        self,
        pair: Pair,
        *,
        labels_key: str | None = None,
        resolution: float | None = None,
        controls: Mapping[str, Any] | None = None,
        progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> pd.DataFrame:
        """Bayesian DE of every cell type versus the rest (genes and proteins), with the
        user's DE ``controls`` (δ, FDR target, batch correction, samples) if any."""
        change = self.de_params(controls)
        types = self.annotation.cell_types(pair, labels_key=labels_key, resolution=resolution)
        params = {**change, "labels": np.asarray(types.astype(str))}

        def table(model: TotalVI, data: CiteSeqData) -> pd.DataFrame:
            from model.differential import differential_expression_one_vs_rest  # torch

            labels = types.astype(str).to_numpy()
            return differential_expression_one_vs_rest(
                model, data, labels, progress=progress, should_stop=should_stop, **change
            )

        return self._cached("de_one_vs_rest", pair, params, table, progress)

    def de_groups(
        self,
        pair: Pair,
        idx1: Any,
        idx2: Any | None = None,
        *,
        name1: str = "selection",
        name2: str | None = None,
        controls: Mapping[str, Any] | None = None,
        progress: ProgressFn | None = None,
    ) -> pd.DataFrame:
        """Bayesian DE of a selection versus another selection (``idx2=None``: the rest),
        with the user's DE ``controls`` if any.

        Selections are cell positions or boolean masks over the dataset's cells.
        """
        change = self.de_params(controls)
        n = self.registry.dataset(pair).n_cells
        pos1 = de.selection_positions(idx1, n, name="group 1")
        pos2 = None if idx2 is None else de.selection_positions(idx2, n, name="group 2")
        de.check_groups(pos1, pos2, n, max_cells=self.settings.max_de_cells)
        params = {**change, "idx1": pos1, "idx2": pos2, "name1": name1, "name2": name2}
        group2 = name2 or ("Rest" if pos2 is None else "group2")

        def table(model: TotalVI, data: CiteSeqData) -> pd.DataFrame:
            from model.differential import differential_expression  # torch

            return differential_expression(
                model, data, pos1, pos2, group1=name1, group2=group2, **change
            )

        return self._cached("de_groups", pair, params, table, progress)

    def _cached(
        self,
        kind: str,
        pair: Pair,
        params: dict[str, Any],
        table: Callable[[TotalVI, CiteSeqData], pd.DataFrame],
        progress: ProgressFn | None,
    ) -> pd.DataFrame:
        """The cached DE ``table`` of the pair's model and data; its raw-count columns
        (means, non-zero proportions) NaN for minified data, whose all-zero counts would
        read as "never expressed"."""

        def compute() -> pd.DataFrame:
            model, data = self.registry.model(pair), self.registry.dataset(pair)
            out = table(model, data)
            if data.minified is None:
                return out
            from model.differential import RAW_COLUMNS  # torch

            out = out.copy()
            for col in RAW_COLUMNS:
                if col in out:
                    out[col] = np.nan
            return out

        return self.results.cached(kind, pair, params, compute, progress)
