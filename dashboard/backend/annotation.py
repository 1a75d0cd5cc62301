"""Cell types of a pair's cells: an obs column, the dataset's labels, or Leiden clusters
named by their markers; and the names users give them.

Results stay keyed by the automatic names (the categories of :meth:`Annotation.cell_types`);
the user's names (:class:`~dashboard.backend.names.CellTypeNames`, one file per pair) are
applied only where types are shown (:meth:`Annotation.shown_cell_types`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dashboard.backend.clustering import NAMING_VERSION, name_clusters
from dashboard.backend.errors import InvalidSelection
from dashboard.backend.label_sets import LIVE_PREFIX, SNAPSHOT_PREFIX, LabelSet
from dashboard.backend.results import CachedQueries
from dashboard.backend.sampling import MIN_PER_GROUP, stratified_subsample, string_categories
from model.protein_scale import EFFICIENCY_FREE

if TYPE_CHECKING:
    from dashboard.backend.embeddings import Embeddings
    from dashboard.backend.expression import Expression
    from dashboard.backend.label_sets import LabelSets
    from dashboard.backend.names import CellTypeNames
    from dashboard.backend.refs import DatasetRef, Pair
    from dashboard.backend.registry import Registry
    from dashboard.backend.results import Results
    from dashboard.backend.settings import Settings

#: Cells of denoised RNA that name clusters of minified data, at most (a seeded sample
#: per cluster beyond it, so memory stays bounded at any size).
MINIFIED_NAMING_CELLS = 50_000


class Annotation(CachedQueries):
    """Cell types per cell, cluster names, and the names shown for the types.

    Parameters
    ----------
    results, registry, settings
        As :class:`~dashboard.backend.results.CachedQueries`.
    embeddings, expression
        The clusters, and the denoised values that name them.
    type_names
        The names users gave the cell types.
    label_sets
        The label sets users made (:mod:`~dashboard.backend.label_sets`): a ``labels_key``
        ``"labels:<set name>"`` (the current workspace's set, in a request) or
        ``"labels@<digest>"`` (a snapshot, for jobs) groups cells by one.
    """

    def __init__(
        self,
        results: Results,
        registry: Registry,
        settings: Settings,
        *,
        embeddings: Embeddings,
        expression: Expression,
        type_names: CellTypeNames,
        label_sets: LabelSets,
    ) -> None:
        super().__init__(results, registry, settings)
        self.embeddings = embeddings
        self.expression = expression
        self.type_names = type_names
        self.label_sets = label_sets

    def cluster_names(self, pair: Pair, resolution: float | None = None) -> dict[str, str]:
        """Short, distinct name per Leiden cluster from the proteins really up in it and its
        most specific gene (:func:`~dashboard.backend.clustering.name_clusters`); the key
        holds the naming rules' version, so changed rules rename."""
        clusters = self.embeddings.clusters(pair, resolution)
        params = {
            "clusters": np.asarray(clusters.astype(str)),
            "seed": self.settings.seed,
            "naming": NAMING_VERSION,
        }

        def compute() -> dict[str, str]:
            data = self.registry.dataset(pair)
            # efficiency-free, as DE: names stay those of any scale setting
            protein = self.expression.denoised_protein(pair, protein_scale=EFFICIENCY_FREE)
            foreground = self.expression.foreground_probability(pair).loc[:, protein.columns]
            labels = clusters.astype(str).to_numpy()
            rna, var_names = data.rna, data.var_names
            cells = np.arange(data.n_cells)
            if data.minified is not None:  # no counts: name by the denoised RNA instead
                cells = stratified_subsample(
                    labels, MINIFIED_NAMING_CELLS, seed=self.settings.seed
                )
                rna, var_names = self.expression.denoised_rna_rows(pair, cells)
            return name_clusters(
                labels[cells],
                rna=rna,
                protein=protein.to_numpy()[cells],
                foreground=foreground.to_numpy()[cells],
                var_names=var_names,
                protein_names=protein.columns,
            )

        return self.results.cached("cluster_names", pair, params, compute)

    def label_columns(self, pair: Pair | DatasetRef) -> list[str]:
        """obs columns that can serve as cell-type labels (categorical or string)."""
        obs = self.registry.dataset(pair).obs
        out = []
        for c in obs.columns:
            col = obs[c]
            if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object:
                n = col.nunique(dropna=True)
                if 1 < n < max(2, len(col) // 2):
                    out.append(str(c))
        return out

    def cell_types(
        self, pair: Pair, *, labels_key: str | None = None, resolution: float | None = None
    ) -> pd.Series:
        """Cell type per cell: the chosen obs column, the dataset's labels, or named clusters.

        With ``labels_key`` the obs column is used; else the labels the dataset was opened
        with; else Leiden clusters named by their markers (:meth:`cluster_names`).
        """
        data = self.registry.dataset(pair)
        if labels_key and is_label_set(labels_key):
            found = self.label_set(pair, labels_key)
            return found.series(data.obs_names).rename("cell_type")
        key = labels_key or data.labels_key
        if key is not None:
            if key not in data.obs.columns:
                msg = f"no obs column {key!r}; choose one of {self.label_columns(pair)}"
                raise InvalidSelection(msg)
            return pd.Series(
                string_categories(data.obs[key]), index=data.obs_names, name="cell_type"
            )
        clusters = self.embeddings.clusters(pair, resolution)
        names = self.cluster_names(pair, resolution)
        cats = [names[str(c)] for c in clusters.cat.categories]
        return pd.Series(
            pd.Categorical.from_codes(clusters.cat.codes.to_numpy(), categories=cats),
            index=data.obs_names,
            name="cell_type",
        )

    def shown_cells(self, pair: Pair) -> np.ndarray | None:
        """Sorted positions (int32) of the cells the cell views plot, or ``None`` when
        the dataset has at most ``Settings.max_points`` cells (all are plotted).

        Stratified by cell type (every type keeps ``min(size, 50)`` cells, the rest in
        proportion), seeded by ``Settings.seed``; cached per (dataset, model, max_points).
        One of the first view's preparation steps, so no page request draws it.
        """
        k = int(self.settings.max_points)
        if self.registry.dataset(pair).n_cells <= k:
            return None
        params = {"max_points": k, "seed": int(self.settings.seed), "min": MIN_PER_GROUP}

        def compute() -> np.ndarray:
            types = self.cell_types(pair)  # categorical: ranked codes, not strings
            return stratified_subsample(types, k, seed=params["seed"]).astype(np.int32)

        return self.results.cached("overview", pair, params, compute)

    # ------------------------------------------------------------ cell-type names
    def shown_cell_types(
        self, pair: Pair, *, labels_key: str | None = None, resolution: float | None = None
    ) -> pd.Series:
        """:meth:`cell_types` under the names the user gave them (the one place renames
        are applied): what pages, hover texts and exports show. Results stay keyed by the
        automatic names (the categories of :meth:`cell_types`)."""
        types = self.cell_types(pair, labels_key=labels_key, resolution=resolution)
        if labels_key and is_label_set(labels_key):  # a user's own names already
            return types
        names = self._shown_names(pair, [str(c) for c in types.cat.categories])
        return types.cat.rename_categories([names[str(c)] for c in types.cat.categories])

    def label_set(self, pair: Pair, key: str) -> LabelSet:
        """The label set a ``labels_key`` names: ``"labels:<name>"`` (the current
        workspace's) or ``"labels@<digest>"`` (a snapshot)."""
        n = self.registry.dataset(pair).n_cells
        if key.startswith(SNAPSHOT_PREFIX):
            return self.label_sets.snapshot(pair, n, key)
        return self.label_sets.get(pair, n, key[len(LIVE_PREFIX) :])

    def label_set_snapshot(self, pair: Pair, name: str) -> str:
        """The ``labels@<digest>`` key of the current workspace's set ``name``: what a job
        is given to group cells by it (:meth:`~dashboard.backend.label_sets.LabelSets.
        snapshot_key`)."""
        n = self.registry.dataset(pair).n_cells
        return self.label_sets.snapshot_key(pair, n, name)

    def cell_type_names(
        self, pair: Pair, *, labels_key: str | None = None, resolution: float | None = None
    ) -> dict[str, str]:
        """``{type id: shown name}`` of every cell type (id = automatic name; shown = the
        user's name, else the id), in the types' order."""
        types = self.cell_types(pair, labels_key=labels_key, resolution=resolution)
        if labels_key and is_label_set(labels_key):
            return {str(c): str(c) for c in types.cat.categories}
        return self._shown_names(pair, [str(c) for c in types.cat.categories])

    def rename_cell_type(self, pair: Pair, type_id: str, name: str) -> dict[str, str]:
        """Show cell type ``type_id`` as ``name`` from now on, for every page, export and
        process using this cache folder; returns :meth:`cell_type_names`.

        Refused with :class:`InvalidSelection` (one line) when the name is empty, longer
        than 60 characters, not printable or shown by another type.
        """
        ids = [str(c) for c in self.cell_types(pair).cat.categories]
        self.type_names.rename(pair, str(type_id), name, ids)
        return self.cell_type_names(pair)

    def undo_cell_type_name(self, pair: Pair) -> dict[str, str]:
        """Undo the last rename (or reset) of the pair's cell types; returns
        :meth:`cell_type_names` (one line when there is nothing to undo)."""
        self.type_names.undo(pair)
        return self.cell_type_names(pair)

    def reset_cell_type_names(self, pair: Pair) -> dict[str, str]:
        """Forget the user's names: every type shows its automatic name again."""
        self.type_names.reset(pair)
        return self.cell_type_names(pair)

    def _shown_names(self, pair: Pair, ids: list[str]) -> dict[str, str]:
        renamed = self.type_names.get(pair)
        shown = {t: renamed.get(t, t) for t in ids}
        if len(set(shown.values())) < len(shown):  # a hand-edited file: keep types apart
            return {t: t for t in ids}
        return shown


def is_label_set(labels_key: str) -> bool:
    """True if ``labels_key`` names a user's label set rather than an obs column."""
    return labels_key.startswith((LIVE_PREFIX, SNAPSHOT_PREFIX))
