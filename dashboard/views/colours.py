"""What the cells are coloured by: the value layers, a colouring (:class:`ColorSpec`) and
its per-cell values, labels and notes, ready for :func:`dashboard.figures.color_marker`.

:data:`LAYERS` is the one list of the layers a gene or protein can be shown in (raw,
denoised, foreground probability): each says once what it is called, which feature kinds
it applies to and how their values are read. The pages' layer switches, the colour
store's checks, the values and the titles all read it, so a new layer is one entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dashboard.backend.denoise import ALL_BATCHES
from dashboard.backend.errors import InvalidSelection
from dashboard.views.features import OBS_BUILTINS, feature_catalog
from dashboard.views.integration import MIXING_FEATURE, MIXING_NOTE, MIXING_TITLE
from dashboard.views.label_sets import COLUMN_PREFIX, is_set_column
from dashboard.views.scores import SCORES
from dashboard.views.values import (
    NO_COUNTS_NOTE,
    gene_denoised,
    gene_raw,
    imputed_cells,
    is_minified,
    names_list,
    obs_labels,
    protein_denoised,
    protein_foreground,
    protein_raw,
    unmeasured_batches,
)
from model.protein_scale import SCALE_SHORT

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

#: Reads one feature's per-cell values: ``read(service, pair, name)``.
Reader = Callable[["AnalysisService", "Pair", str], np.ndarray]
#: The kinds of feature that have values (annotations, ``obs``, have none: no layer).
FEATURE_KINDS = frozenset({"gene", "protein"})


@dataclass(frozen=True)
class Layer:
    """A value layer: its ``name`` (the colour store's and the link's ``layer``), the
    switch's ``label``, the ``title`` of its values (colour bars, axes), and the ``readers``
    of each feature kind it applies to. ``protein_title`` (with ``{scale}``) replaces the
    title for proteins when their values are on the service's protein scale; ``no_counts``
    names the layer shown instead for minified data (no counts); ``linked``: it is offered
    for the axes of Explore's linked view; ``counterfactual``: its readers take a
    ``batch=`` to decode as if every cell were measured there (:attr:`ColorSpec.batch`)."""

    name: str
    label: str
    title: str
    readers: Mapping[str, Reader]
    protein_title: str | None = None
    no_counts: str | None = None
    linked: bool = False
    counterfactual: bool = False

    def applies(self, kind: str) -> bool:
        """True if a colouring of a ``kind`` feature may keep this layer: a gene or protein
        it reads, or an annotation (no values) when it reads every kind alike."""
        return kind in self.readers or (kind == "obs" and self.readers.keys() >= FEATURE_KINDS)

    def offered(self, kind: str) -> bool:
        """True if the switch offers this layer for a ``kind`` feature (never for an
        annotation; with no feature chosen, when it reads every kind)."""
        if kind in FEATURE_KINDS:
            return kind in self.readers
        return kind != "obs" and kind not in SCORES and self.readers.keys() >= FEATURE_KINDS


def _linked_layer(name: str, gene: Reader, protein: Reader, **extra: Any) -> Layer:
    """A layer of genes and proteins alike, offered for the linked view (label: ``name``
    capitalised; title: ``<name> (log1p)``)."""
    readers = {"gene": gene, "protein": protein}
    return Layer(name, name.capitalize(), f"{name} (log1p)", readers, linked=True, **extra)


#: Every value layer, the default first.
LAYERS: tuple[Layer, ...] = (
    _linked_layer("raw", gene_raw, protein_raw, no_counts="denoised"),
    _linked_layer(
        "denoised",
        gene_denoised,
        protein_denoised,
        protein_title="denoised (log1p, {scale})",
        counterfactual=True,
    ),
    Layer(
        "foreground",
        "Foreground prob.",
        "foreground probability",
        {"protein": protein_foreground},
    ),
)
#: The layers by name.
LAYER = {layer.name: layer for layer in LAYERS}
DEFAULT_LAYER = LAYERS[0].name
DEFAULT_FEATURE = "obs:cell_type"


@dataclass(frozen=True)
class ColorSpec:
    """What the cells are coloured by: ``feature`` is ``"obs:<column>"``, ``"gene:<name>"``
    or ``"protein:<name>"``; ``layer`` is the name of one of :data:`LAYERS` (ignored for
    obs); ``batch``, for a counterfactual layer (denoised), decodes every cell as if
    measured in that batch, or averaged over all (:data:`ALL_BATCHES`); ``""``: each
    cell's own batch."""

    feature: str = DEFAULT_FEATURE
    layer: str = DEFAULT_LAYER
    batch: str = ""

    @property
    def kind(self) -> str:
        """``"obs"``, ``"gene"`` or ``"protein"``."""
        return self.feature.split(":", 1)[0]

    @property
    def name(self) -> str:
        """The column, gene or protein name."""
        return self.feature.split(":", 1)[1] if ":" in self.feature else self.feature

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> ColorSpec:
        """From the colour store (``{"feature", "layer"}``); invalid or empty → default (a
        layer that does not apply to the feature: the default layer)."""
        if not state or not isinstance(state, dict):
            return cls()
        feature = str(state.get("feature") or DEFAULT_FEATURE)
        kinds = {"obs", *SCORES, *FEATURE_KINDS}
        if feature.split(":", 1)[0] not in kinds or ":" not in feature:
            feature = DEFAULT_FEATURE
        layer = LAYER.get(str(state.get("layer") or DEFAULT_LAYER))
        if layer is None or not layer.applies(feature.split(":", 1)[0]):
            return cls(feature, DEFAULT_LAYER)
        batch = state.get("batch")
        if not layer.counterfactual or not isinstance(batch, str) or len(batch) > 200:
            batch = ""  # a forged or misplaced batch: each cell's own (checked on reading)
        return cls(feature, layer.name, batch)

    def to_state(self) -> dict[str, str]:
        """The colour store's JSON form."""
        state = {"feature": self.feature, "layer": self.layer}
        return {**state, "batch": self.batch} if self.batch else state


def layer_choices() -> list[dict[str, str]]:
    """The layer switch as a page first draws it: every layer (the recolour callback then
    disables those the colouring lacks, :func:`layer_options`)."""
    return [{"label": layer.label, "value": layer.name} for layer in LAYERS]


def linked_choices() -> list[dict[str, str]]:
    """The value switch of Explore's linked view (protein vs protein)."""
    return [{"label": layer.label, "value": layer.name} for layer in LAYERS if layer.linked]


def layer_options(feature: str | None) -> list[dict[str, Any]]:
    """The layer switch's options for a feature: those that do not apply are disabled."""
    kind = (feature or "").split(":", 1)[0]
    return [
        {"label": layer.label, "value": layer.name, "disabled": not layer.offered(kind)}
        for layer in LAYERS
    ]


def normalise_layer(feature: str | None, layer: str | None) -> str:
    """A layer valid for ``feature`` (the default where the asked one does not apply)."""
    return ColorSpec.from_state({"feature": feature, "layer": layer}).layer


def feature_of(spec: ColorSpec) -> str | None:
    """The gene or protein a colouring shows (``None`` for an annotation)."""
    return spec.feature if spec.kind in FEATURE_KINDS else None


@dataclass(frozen=True)
class ColorData:
    """Per-cell values of a colouring, ready for :func:`dashboard.figures.color_marker`."""

    values: np.ndarray
    categorical: bool
    categories: list[str] | None
    label: str  # colour-bar / legend title (says where a protein is imputed)
    in_hover_text: bool = False  # the base hover text already shows this value
    imputed: np.ndarray | None = None  # per value: the model's prediction, not measured
    hover_label: str = ""  # what the hover text calls the value (default: ``label``)


def shown_layer(service: AnalysisService, pair: Pair, spec: ColorSpec) -> str:
    """The layer whose values a colouring shows: ``spec.layer``, except its ``no_counts``
    layer for minified data (raw: denoised)."""
    layer = LAYER.get(spec.layer)
    if layer and layer.no_counts and spec.kind != "obs" and is_minified(service, pair):
        return layer.no_counts
    return spec.layer


def feature_values(service: AnalysisService, pair: Pair, spec: ColorSpec) -> np.ndarray:
    """Numeric per-cell values of a gene or protein in the requested layer (the default
    layer's where that one does not apply)."""
    if spec.kind in FEATURE_KINDS:
        layer = LAYER.get(spec.layer)
        if layer is None or spec.kind not in layer.readers:
            layer = LAYER[DEFAULT_LAYER]
        read = layer.readers[spec.kind]
        if layer.counterfactual and spec.batch and not is_minified(service, pair):
            return read(service, pair, spec.name, batch=spec.batch)  # type: ignore[call-arg]
        return read(service, pair, spec.name)
    msg = f"{spec.feature} is not a gene or protein"
    raise InvalidSelection(msg)


def color_note(service: AnalysisService, pair: Pair, spec: ColorSpec) -> str:
    """The line a page shows under a colouring: that raw counts are not in a minified
    file, and where a protein is imputed (``""``: nothing to say)."""
    notes = []
    if spec.kind in {"gene", "protein"} and shown_layer(service, pair, spec) != spec.layer:
        notes.append(NO_COUNTS_NOTE)
    if spec.kind in SCORES:  # what the score is (dashboard.views.scores)
        notes.append(SCORES[spec.kind].note(service, pair, spec.feature))
    if spec.feature == MIXING_FEATURE:
        notes.append(MIXING_NOTE)
    decoded = decoded_in(service, pair, spec)
    if decoded:
        notes.append(
            f"Counterfactual: denoised values {decoded} (the model's transform_batch), "
            "not as measured."
        )
    if spec.kind == "protein":
        missing = unmeasured_batches(service, pair, spec.name)
        if missing:
            shown = feature_catalog(service, pair).shown_name(spec.feature)
            notes.append(
                f"{shown} was not measured in {names_list(missing)}: the model's prediction "
                "is shown for those cells (imputed)."
            )
    return " ".join(notes)


def color_data(
    service: AnalysisService, pair: Pair, spec: ColorSpec, cells: np.ndarray | None = None
) -> ColorData:
    """Values, kind and label of a colouring (of the ``cells`` positions only when given:
    a subsampled view converts and sends 200,000 labels, not a million)."""
    if spec.kind == "obs":
        full = obs_labels(service, pair, spec.name)
        col = full if cells is None else full.iloc[cells]
        label = color_label(service, pair, spec)
        cats = _obs_categories(full)
        if cats is None:
            return ColorData(col.to_numpy(dtype=np.float32), False, None, label)
        return ColorData(
            col.astype(str).to_numpy(),
            True,
            cats,
            label,
            in_hover_text=spec.name in {"cell_type", "batch"},
        )
    if spec.kind in SCORES:  # a per-cell score: model QC, a gene set's
        score = SCORES[spec.kind]
        values = score.values(service, pair, spec.feature)
        title = score.title(spec.feature)
        return ColorData(values if cells is None else values[cells], False, None, title)
    values = feature_values(service, pair, spec)
    imputed = imputed_cells(service, pair, spec.name) if spec.kind == "protein" else None
    if cells is not None:
        values = values[cells]
        imputed = None if imputed is None else imputed[cells]
    return ColorData(
        values,
        False,
        None,
        color_label(service, pair, spec),
        imputed=imputed,
        hover_label=_feature_label(service, pair, spec),
    )


def color_label(service: AnalysisService, pair: Pair, spec: ColorSpec) -> str:
    """What a colouring is called (colour-bar and legend title): ``"Cell type"``,
    ``"CD19 protein · denoised (log1p, measured scale)"``, ``"ADT_90 protein · raw (log1p);
    imputed in s03, s11 (not measured)"`` (a protein some batches did not measure)."""
    if spec.kind == "obs":
        if spec.feature == MIXING_FEATURE:
            return MIXING_TITLE
        if is_set_column(spec.name):
            return f"{spec.name[len(COLUMN_PREFIX) :]} (label set)"
        return OBS_BUILTINS.get(spec.name, spec.name)
    if spec.kind in SCORES:
        return SCORES[spec.kind].title(spec.feature)
    label = _feature_label(service, pair, spec)
    missing = unmeasured_batches(service, pair, spec.name) if spec.kind == "protein" else []
    if missing:
        label += f"; imputed in {names_list(missing)} (not measured)"
    return label


def _feature_label(service: AnalysisService, pair: Pair, spec: ColorSpec) -> str:
    """``"CD19 protein · denoised (log1p, measured scale)"``: the feature and the layer its
    values are of."""
    shown = feature_catalog(service, pair).shown_name(spec.feature)
    return f"{shown} · {layer_title(service, pair, spec)}"


def layer_title(service: AnalysisService, pair: Pair, spec: ColorSpec) -> str:
    """The layer a colouring shows, in words: ``"raw (log1p)"``, ``"denoised (log1p)"``,
    and for a denoised protein its scale, ``"denoised (log1p, measured scale)"`` (the
    counts' scale: rate x the batch's capture efficiency) or ``"denoised (log1p,
    efficiency-free)"``."""
    layer = LAYER[shown_layer(service, pair, spec)]
    title = layer.title
    if spec.kind == "protein" and layer.protein_title:
        title = layer.protein_title.format(scale=SCALE_SHORT[service.protein_scale()])
    decoded = decoded_in(service, pair, spec)
    return f"{title}, {decoded}" if decoded else title


def decoded_in(service: AnalysisService, pair: Pair, spec: ColorSpec) -> str:
    """Where a counterfactual colouring decodes the cells, in words (``"as if measured in
    s03"``, ``"averaged over 17 batches"``); ``""`` for each cell's own batch."""
    layer = LAYER.get(shown_layer(service, pair, spec))
    if not spec.batch or layer is None or not layer.counterfactual or spec.kind == "obs":
        return ""
    if spec.batch == ALL_BATCHES:
        return f"averaged over {len(service.model(pair).batch_categories)} batches"
    return f"as if measured in {spec.batch}"


def submit_decode(service: AnalysisService, pair: Pair, batch: Any) -> str:
    """Start (or find cached) the job decoding every cell's denoised RNA and protein in
    ``batch`` (:data:`ALL_BATCHES`: averaged over all; ``""``: each cell's own, where the
    job stores the decoder state genes are decoded from on demand); a forged
    batch is refused in one line. Returns the job id."""
    if batch not in (None, ""):
        service.expression.decode_batches(pair, batch)  # refuse before starting anything
        return service.submit("denoised_rna_manifest", pair, batch=batch)
    # each cell's own batch: genes are decoded on demand from the stored decoder state
    return service.submit("denoised_rna_state", pair)


def batch_choices(service: AnalysisService, pair: Pair) -> list[dict[str, str]]:
    """Where denoised values may be decoded: each cell's own batch (``""``), averaged over
    every batch, or one batch; only the first for a one-batch model."""
    names = [str(b) for b in service.model(pair).batch_categories]
    own = [{"label": "each cell's own batch", "value": ""}]
    if len(names) < 2:
        return own
    return [
        *own,
        {"label": f"averaged over all {len(names)} batches", "value": ALL_BATCHES},
        *({"label": f"as if measured in {b}", "value": b} for b in names),
    ]


def _obs_categories(column: pd.Series) -> list[str] | None:
    """The categories a colouring by ``column`` shows (of every cell, so colours stay put),
    or ``None`` when it is coloured as numbers (floats, or integers with > 20 values)."""
    numeric = pd.api.types.is_numeric_dtype(column) and not isinstance(
        column.dtype, pd.CategoricalDtype
    )
    if numeric and (column.nunique() > 20 or pd.api.types.is_float_dtype(column)):
        return None
    if isinstance(column.dtype, pd.CategoricalDtype):
        return [str(c) for c in column.cat.categories]
    return sorted(column.astype(str).unique())


def category_codes(
    service: AnalysisService, pair: Pair, spec: ColorSpec
) -> tuple[list[str], np.ndarray] | None:
    """A categorical colouring's categories and every cell's position among them (-1:
    none), as the legend counts and selects them; ``None`` for a colouring by numbers."""
    if spec.kind != "obs":
        return None
    full = obs_labels(service, pair, spec.name)
    cats = _obs_categories(full)
    if cats is None:
        return None
    if isinstance(full.dtype, pd.CategoricalDtype):
        codes = full.cat.codes.to_numpy()  # the categories are ``cats``, in order
    else:
        codes = pd.Categorical(full.astype(str), categories=cats).codes
    return cats, np.asarray(codes, dtype=np.int64)


def category_counts(
    service: AnalysisService, pair: Pair, spec: ColorSpec
) -> tuple[list[str], np.ndarray, int] | None:
    """A categorical colouring's categories, each one's number of cells, and the number of
    cells in none (the legend's); ``None`` for a colouring by numbers."""
    found = category_codes(service, pair, spec)
    if found is None:
        return None
    cats, codes = found
    return cats, np.bincount(codes[codes >= 0], minlength=len(cats)), int((codes < 0).sum())
