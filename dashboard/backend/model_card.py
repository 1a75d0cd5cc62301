"""The model card of a pair, as scvi-hub writes it: metrics (CV tables and the DE metric
per modality), model properties and training history.

Cached results of :class:`ModelCard` (:class:`~dashboard.backend.results.Results`), computed
by :mod:`dashboard.backend.metrics`. The metrics compare observed with generated counts, so
minified data (counts dropped) gets :class:`~dashboard.backend.errors.MinifiedData` instead.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from dashboard.backend.annotation import is_label_set
from dashboard.backend.metrics import (
    CALIBRATION_CELLS,
    CALIBRATION_PROTEIN_CELLS,
    CALIBRATION_SAMPLES,
    MEASURED_CARD_NOTE,
    PPC_BATCH_SIZE,
    MetricsResult,
    compute_metrics,
    model_card_markdown,
    model_card_properties,
)
from dashboard.backend.results import CachedQueries
from model.protein_scale import MEASURED

if TYPE_CHECKING:
    import pandas as pd

    from dashboard.backend.annotation import Annotation
    from dashboard.backend.refs import Pair
    from dashboard.backend.registry import Registry
    from dashboard.backend.results import ProgressFn, Results
    from dashboard.backend.settings import Settings


class ModelCard(CachedQueries):
    """Model-card metrics, summary and markdown of a pair (settings: seed, posterior
    samples, default protein scale; ``annotation``: the cell types the DE metric groups
    cells by, and their shown names)."""

    def __init__(
        self, results: Results, registry: Registry, settings: Settings, annotation: Annotation
    ) -> None:
        super().__init__(results, registry, settings)
        self.annotation = annotation

    def metrics(
        self,
        pair: Pair,
        *,
        labels_key: str | None = None,
        resolution: float | None = None,
        n_samples: int | None = None,
        progress: ProgressFn | None = None,
        computed_only: bool = False,
    ) -> MetricsResult | None:
        """Model-card metrics (CV tables and DE metric per modality), as scvi-hub.

        Protein tables from measured-scale samples, with scvi-tools 1.4.2's (efficiency left
        out) as ``result.other_scale`` and the calibration of both (:meth:`shown_metrics`
        picks a scale). The DE metric's groups are those of :meth:`metric_groups`; the
        result says which. ``computed_only``: the cached result, or ``None`` when it has not
        been computed (nothing is started).
        """
        self.require_counts(pair, "the model-card metrics (observed vs generated counts)")
        model = self.registry.model(pair)
        types, groups = self.metric_groups(pair, labels_key=labels_key, resolution=resolution)
        params = {
            "labels": np.asarray(types.astype(str)),
            "groups": groups,
            "de_n_top": "at least 1",  # older results used scvi's int(0.1 n), 0 below 10
            "n_samples": int(n_samples or self.settings.n_posterior_samples),
            "seed": self.settings.seed,
            "train_indices": model.train_indices,
            "validation_indices": model.validation_indices,
            "protein_scale": "measured, and scvi-tools 1.4.2's",
            "batch_size": PPC_BATCH_SIZE,
            "calibration": [CALIBRATION_SAMPLES, CALIBRATION_CELLS, CALIBRATION_PROTEIN_CELLS],
        }
        if computed_only:
            return self.results.peek("metrics", pair, params)

        def compute() -> MetricsResult:
            return compute_metrics(
                model,
                self.registry.dataset(pair),
                types.astype(str).to_numpy(),
                n_samples=params["n_samples"],
                seed=params["seed"],
                groups=groups,
                progress=progress,
            )

        return self.results.cached("metrics", pair, params, compute, progress)

    def metric_groups(
        self, pair: Pair, *, labels_key: str | None = None, resolution: float | None = None
    ) -> tuple[pd.Series, str]:
        """The DE metric's group per cell, and a line saying what the groups are.

        ``labels_key`` when given; else the labels the checkpoint was set up with, when it has
        them and the dataset holds that obs column (as scvi-tools' ``create_criticism_report``
        uses the registered labels key); else the annotation's cell types (the dataset's
        labels, or our Leiden clusters named by markers, where scvi-tools would cluster the
        raw data).
        """
        cell_types = self.annotation.cell_types
        if labels_key and is_label_set(labels_key):
            chosen = self.annotation.label_set(pair, labels_key)
            return cell_types(
                pair, labels_key=labels_key
            ), f"the label set “{chosen.name}” (chosen)"
        if labels_key:
            return cell_types(pair, labels_key=labels_key), f"obs column '{labels_key}' (chosen)"
        data = self.registry.dataset(pair)
        registered = (self.registry.model(pair).setup_args or {}).get("labels_key")
        if registered in (None, "", "_scvi_labels"):
            registered = None
        if data.labels_key is not None and data.labels_key != registered:  # named when opened
            instead = "" if registered is None else f", instead of the registered {registered!r}"
            return cell_types(pair), (
                f"the dataset's labels, obs column '{data.labels_key}' (named when it was "
                f"opened{instead})"
            )
        if registered is not None and registered in data.obs.columns:
            return cell_types(pair, labels_key=str(registered)), (
                f"the checkpoint's registered labels, obs column '{registered}' "
                "(as scvi-tools' model card)"
            )
        types = cell_types(pair, resolution=resolution)
        if data.labels_key is not None:
            what = f"the dataset's labels, obs column '{data.labels_key}'"
        else:
            what = (
                "our Leiden clusters of the latent space, named by markers (where scvi-tools "
                "would run Leiden on the raw counts)"
            )
        why = (
            f"the checkpoint's labels '{registered}' are not in this dataset"
            if registered is not None
            else "the checkpoint has no registered labels"
        )
        return types, f"{what}: {why}"

    def shown_metrics(
        self, pair: Pair, *, protein_scale: str | None = None, **kwargs: Any
    ) -> MetricsResult | None:
        """:meth:`metrics` (``kwargs``: its options) from protein samples on
        ``protein_scale`` (default ``settings.protein_scale``), the DE-metric rows under the
        cell types' shown names (the cached result keeps the automatic names); ``None``
        only with ``computed_only`` when they have not been computed."""
        result = self.metrics(pair, **kwargs)
        if result is None:
            return None
        result = result.for_scale(self.annotation.expression.protein_scale(protein_scale))
        names = self.annotation.cell_type_names(
            pair, labels_key=kwargs.get("labels_key"), resolution=kwargs.get("resolution")
        )
        if all(k == v for k, v in names.items()):
            return result

        def renamed(r: MetricsResult, other: MetricsResult | None) -> MetricsResult:
            tables = {mod: t.rename(index=names) for mod, t in r.diff_exp.items()}
            return dataclasses.replace(r, diff_exp=tables, other_scale=other)

        other = None if result.other_scale is None else renamed(result.other_scale, None)
        return renamed(result, other)

    def metrics_markdown(self, pair: Pair, **kwargs: Any) -> dict[str, str]:
        """scvi-hub ``metrics.json`` content: markdown per metric, per modality (cell types
        under their shown names)."""
        return self.shown_metrics(pair, **kwargs).markdown()

    def model_summary(self, pair: Pair) -> dict[str, Any]:
        """Model parameters, setup arguments, data registry and summary statistics."""
        return model_card_properties(
            self.registry.model(pair), self.registry.dataset(pair), options=pair.dataset.options
        )

    def model_card(self, pair: Pair, *, with_metrics: bool = True, **kwargs: Any) -> str:
        """Markdown of the card's Metrics and Model Properties sections (with
        ``protein_scale="efficiency-free"``, what scvi-tools 1.4.2 writes; on the measured
        scale a sentence before the metrics says so)."""
        if not with_metrics:
            return model_card_markdown(self.model_summary(pair), None)
        result = self.shown_metrics(pair, **kwargs)
        measured = result.protein_scale == MEASURED and result.other_scale is not None
        return model_card_markdown(
            self.model_summary(pair),
            result.markdown(),
            note=MEASURED_CARD_NOTE if measured else "",
        )

    def training_history(self, pair: Pair) -> pd.DataFrame:
        """Per-epoch training history of the model (empty if unknown)."""
        return self.registry.model(pair).history.copy()
