"""View queries: what the pages need from the backend, in the shapes the figures take.

A thin adapter over :class:`~dashboard.backend.service.AnalysisService` for answers the
service does not give directly (per-feature colour values, the feature search index, raw vs
denoised tables per cell type, dot-plot summaries, DE tables for display, observed vs
generated CV points, uploads). It imports no Dash and no plotly, so it is tested like the
backend; pages call it and hand the results to :mod:`dashboard.figures`.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from dashboard.backend.errors import BackendError, InvalidSelection
from dashboard.backend.names import display_name, short_protein_name, short_protein_names
from model.protein_scale import SCALE_SHORT

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService
    from dashboard.backend.settings import Settings


#: Value layers a feature can be coloured by.
LAYERS = {
    "raw": "raw (log1p)",
    "denoised": "denoised (log1p)",
    "foreground": "foreground probability",
}
#: Built-in per-cell annotations offered first in every colour picker.
OBS_BUILTINS = {"cell_type": "Cell type", "cluster": "Leiden cluster", "batch": "Batch"}
DEFAULT_FEATURE = "obs:cell_type"
#: Upload limit when ``TOTALVI_EXPLORER_MAX_UPLOAD_MB`` is not set (Settings has no field).
DEFAULT_MAX_UPLOAD_MB = 500
DATA_SUFFIXES = (".h5ad", ".h5mu", ".h5")


# ============================================================================ colouring
@dataclass(frozen=True)
class ColorSpec:
    """What the cells are coloured by: ``feature`` is ``"obs:<column>"``, ``"gene:<name>"``
    or ``"protein:<name>"``; ``layer`` is one of :data:`LAYERS` (ignored for obs)."""

    feature: str = DEFAULT_FEATURE
    layer: str = "raw"

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
        """From the colour store (``{"feature", "layer"}``); invalid or empty → default."""
        if not state or not isinstance(state, dict):
            return cls()
        feature = str(state.get("feature") or DEFAULT_FEATURE)
        if feature.split(":", 1)[0] not in {"obs", "gene", "protein"} or ":" not in feature:
            feature = DEFAULT_FEATURE
        layer = str(state.get("layer") or "raw")
        if layer not in LAYERS or (layer == "foreground" and not feature.startswith("protein:")):
            layer = "raw"
        return cls(feature, layer)

    def to_state(self) -> dict[str, str]:
        """The colour store's JSON form."""
        return {"feature": self.feature, "layer": self.layer}


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


def _dataset(service: AnalysisService, pair: Pair) -> Any:
    return service.dataset(pair)


class _ColumnCache:
    """Per-dataset CSC copy of the RNA counts and library sizes: one gene column is then a
    slice instead of a scan of the whole CSR matrix (kept for the two newest datasets)."""

    def __init__(self, size: int = 2) -> None:
        self._items: OrderedDict[str, tuple[sp.csc_matrix, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, data: Any) -> tuple[sp.csc_matrix, np.ndarray]:
        key = data.fingerprint()
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        csc = data.rna.tocsc()
        lib = np.asarray(data.rna.sum(axis=1), dtype=np.float64).ravel()
        with self._lock:
            self._items[key] = (csc, lib)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return csc, lib


_columns = _ColumnCache()


def warm_gene_columns(service: AnalysisService, pair: Pair) -> None:
    """Build (once per process and dataset) the column-major counts that
    :func:`gene_raw` reads (nothing for minified data: it has no counts)."""
    data = _dataset(service, pair)
    if data.minified is None:
        _columns.get(data)


# ======================================================================= counts & panel
#: What a page says where raw counts would be shown for minified data.
NO_COUNTS_NOTE = (
    "Raw counts are not in this file (minified data: only the latent posterior is kept); "
    "denoised values shown."
)

#: What the DE page says for minified data (the test needs no counts; some columns do).
DE_NO_COUNTS_NOTE = (
    "Raw counts are not in this file (minified data): the test runs on the model's stored "
    "latent posterior; the count columns (non-zero proportions) are empty."
)


def is_minified(service: AnalysisService, pair: Pair) -> bool:
    """True if the pair's dataset is minified (scvi-hub: counts dropped, the latent
    posterior kept), so nothing that needs raw counts can be shown."""
    return _dataset(service, pair).minified is not None


def shown_layer(service: AnalysisService, pair: Pair, spec: ColorSpec) -> str:
    """The layer whose values a colouring shows: ``spec.layer``, except ``"denoised"``
    for the raw layer of minified data."""
    if spec.layer == "raw" and spec.kind != "obs" and is_minified(service, pair):
        return "denoised"
    return spec.layer


def _panel(service: AnalysisService, pair: Pair) -> np.ndarray | None:
    """``(n_batch, n_proteins)`` bool over the dataset's batches and proteins: ``True``
    where a batch measured a protein (``None``: every batch measured every protein).

    The data's own mask; for minified data (all-zero counts) the model's, matched by batch
    and protein name.
    """
    data = _dataset(service, pair)
    mask = data.protein_batch_mask
    if mask is None and data.minified is not None:
        mask = _model_panel(service.model(pair), data)
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    present = np.bincount(data.batch, minlength=data.n_batch) > 0
    return None if mask[present].all() else mask


def _model_panel(model: Any, data: Any) -> np.ndarray | None:
    if model.protein_batch_mask is None:
        return None
    measured = np.asarray(model.protein_batch_mask, dtype=bool)
    rows = pd.Index([str(b) for b in model.batch_categories]).get_indexer(data.batch_categories)
    cols = pd.Index([str(p) for p in model.protein_names]).get_indexer(data.protein_names)
    out = np.ones((data.n_batch, data.n_proteins), dtype=bool)
    for i, r in enumerate(rows):
        if r >= 0:
            out[i, cols >= 0] = measured[r, cols[cols >= 0]]
    return out


def unmeasured_batches(service: AnalysisService, pair: Pair, protein: str) -> list[str]:
    """The batches (with cells) that did not measure ``protein``: there its raw, denoised
    and foreground values are the model's predictions (empty: measured everywhere)."""
    data = _dataset(service, pair)
    pos = _protein_position(data, pair, protein)
    mask = _panel(service, pair)
    if mask is None:
        return []
    present = np.bincount(data.batch, minlength=data.n_batch) > 0
    missing = present & ~mask[:, pos]
    return [str(data.batch_categories[b]) for b in np.flatnonzero(missing)]


def imputed_cells(service: AnalysisService, pair: Pair, protein: str) -> np.ndarray | None:
    """Per cell: ``True`` where its batch did not measure ``protein`` (``None``: none)."""
    data = _dataset(service, pair)
    pos = _protein_position(data, pair, protein)
    mask = _panel(service, pair)
    if mask is None:
        return None
    out = ~mask[data.batch, pos]
    return out if out.any() else None


def _protein_position(data: Any, pair: Pair, protein: str) -> int:
    """Column of ``protein`` in the dataset; an unknown name is an :class:`InvalidSelection`."""
    pos = int(data.protein_names.get_indexer([protein])[0])
    if pos < 0:
        msg = f"no protein {protein!r} in {pair.dataset.name or 'the dataset'}"
        raise InvalidSelection(msg)
    return pos


def panel_summary(service: AnalysisService, pair: Pair) -> str | None:
    """One line on the proteins some batches did not measure, e.g. ``"31 of 111 proteins
    not measured in 2 batches (s03, s11); the model imputes them there"``; ``None`` when
    every batch measured every protein."""
    mask = _panel(service, pair)
    if mask is None:
        return None
    data = _dataset(service, pair)
    present = np.bincount(data.batch, minlength=data.n_batch) > 0
    missing = ~mask & present[:, None]
    proteins = int(missing.any(axis=0).sum())
    batches = [str(data.batch_categories[b]) for b in np.flatnonzero(missing.any(axis=1))]
    what = "protein" if data.n_proteins == 1 else "proteins"
    where = "batch" if len(batches) == 1 else "batches"
    return (
        f"{proteins} of {data.n_proteins} {what} not measured in {len(batches)} {where} "
        f"({_names_list(batches)}); the model imputes them there"
    )


def _names_list(names: Sequence[str], shown: int = 6) -> str:
    """``"s03, s11"``; past ``shown`` names ``"a, b, c, d, e, f and 4 more"``."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown} more"


def color_note(service: AnalysisService, pair: Pair, spec: ColorSpec) -> str:
    """The line a page shows under a colouring: that raw counts are not in a minified
    file, and where a protein is imputed (``""``: nothing to say)."""
    notes = []
    if spec.kind in {"gene", "protein"} and shown_layer(service, pair, spec) != spec.layer:
        notes.append(NO_COUNTS_NOTE)
    if spec.kind == "protein":
        missing = unmeasured_batches(service, pair, spec.name)
        if missing:
            shown = feature_catalog(service, pair).shown_name(spec.feature)
            notes.append(
                f"{shown} was not measured in {_names_list(missing)}: the model's prediction "
                "is shown for those cells (imputed)."
            )
    return " ".join(notes)


def gene_raw(service: AnalysisService, pair: Pair, gene: str) -> np.ndarray:
    """log1p of counts per 10k (library-size normalised) for one gene, per cell (minified
    data, which has no counts: :func:`gene_denoised`)."""
    data = _dataset(service, pair)
    if data.minified is not None:
        return gene_denoised(service, pair, gene)
    pos = data.var_names.get_indexer([gene])[0]
    if pos < 0:
        msg = f"no gene {gene!r} in {pair.dataset.name or 'the dataset'}"
        raise InvalidSelection(msg)
    csc, lib = _columns.get(data)
    col = np.asarray(csc[:, pos].toarray(), dtype=np.float64).ravel()
    return np.log1p(col / np.maximum(lib, 1.0) * 1e4).astype(np.float32)


def gene_denoised(service: AnalysisService, pair: Pair, gene: str) -> np.ndarray:
    """log1p of the model's denoised expression (per 10k) for one gene, per cell."""
    values = service.denoised_rna(pair, [gene])[gene].to_numpy(dtype=np.float32)
    return np.log1p(values)


def protein_raw(service: AnalysisService, pair: Pair, protein: str) -> np.ndarray:
    """log1p of the raw protein counts, per cell; the model's prediction (denoised) in
    batches that did not measure it, and everywhere for minified data (no counts)."""
    data = _dataset(service, pair)
    pos = _protein_position(data, pair, protein)
    if data.minified is not None:
        return protein_denoised(service, pair, protein)
    values = np.log1p(np.asarray(data.protein[:, pos], dtype=np.float32))
    unmeasured = imputed_cells(service, pair, protein)
    if unmeasured is not None:  # e.g. a mapped query without this antibody: its prediction
        values[unmeasured] = protein_denoised(service, pair, protein)[unmeasured]
    return values


def _protein_column(frame: pd.DataFrame, protein: str, what: str) -> np.ndarray:
    if protein not in frame.columns:
        msg = f"the model has no {what} for protein {protein!r}"
        raise InvalidSelection(msg)
    return frame[protein].to_numpy(dtype=np.float32)


def protein_denoised(service: AnalysisService, pair: Pair, protein: str) -> np.ndarray:
    """log1p of the denoised (foreground) protein value, per cell."""
    return np.log1p(_protein_column(service.denoised_protein(pair), protein, "denoised value"))


def protein_foreground(service: AnalysisService, pair: Pair, protein: str) -> np.ndarray:
    """Probability that the protein count is foreground, per cell."""
    return _protein_column(service.foreground_probability(pair), protein, "foreground value")


def feature_values(service: AnalysisService, pair: Pair, spec: ColorSpec) -> np.ndarray:
    """Numeric per-cell values of a gene or protein in the requested layer."""
    if spec.kind == "gene":
        if spec.layer == "denoised":
            return gene_denoised(service, pair, spec.name)
        return gene_raw(service, pair, spec.name)
    if spec.kind == "protein":
        if spec.layer == "denoised":
            return protein_denoised(service, pair, spec.name)
        if spec.layer == "foreground":
            return protein_foreground(service, pair, spec.name)
        return protein_raw(service, pair, spec.name)
    msg = f"{spec.feature} is not a gene or protein"
    raise InvalidSelection(msg)


def obs_labels(service: AnalysisService, pair: Pair, column: str) -> pd.Series:
    """A per-cell annotation: cell type, Leiden cluster, batch or any obs column."""
    data = _dataset(service, pair)
    if column == "cell_type":
        return service.shown_cell_types(pair)
    if column == "cluster":
        return service.clusters(pair)
    if column == "batch":
        cats = list(data.batch_categories)
        return pd.Series(
            pd.Categorical.from_codes(data.batch, categories=cats), index=data.obs_names
        )
    if column not in data.obs.columns:
        msg = f"no cell annotation {column!r}; choose one of {list(data.obs.columns)}"
        raise InvalidSelection(msg)
    return data.obs[column]


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
        return OBS_BUILTINS.get(spec.name, spec.name)
    label = _feature_label(service, pair, spec)
    missing = unmeasured_batches(service, pair, spec.name) if spec.kind == "protein" else []
    if missing:
        label += f"; imputed in {_names_list(missing)} (not measured)"
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
    layer = shown_layer(service, pair, spec)
    if spec.kind == "protein" and layer == "denoised":
        return f"denoised (log1p, {SCALE_SHORT[service.protein_scale()]})"
    return LAYERS[layer]


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


def hover_columns(service: AnalysisService, pair: Pair) -> dict[str, Sequence[Any]]:
    """The base hover annotations of every cell view: cell type and batch."""
    types = service.shown_cell_types(pair).astype(str).to_numpy()
    batch = obs_labels(service, pair, "batch").astype(str).to_numpy()
    return {"type": types, "batch": batch}


# ============================================================================== search
@dataclass(frozen=True)
class FeatureCatalog:
    """Every colourable feature of a pair: annotations, genes and proteins.

    ``renamed`` maps the value of a gene or protein whose name was made unique (``"gene:
    COG8-1"``) to its original symbol and which copy of that symbol it is (``("COG8", 2)``);
    values stay the unique names, labels show the symbol.
    """

    obs: list[tuple[str, str]]  # (value, label)
    genes: list[str]
    proteins: list[str]
    renamed: dict[str, tuple[str, int]] = field(default_factory=dict)

    def label(self, value: str) -> str:
        """Dropdown label of a value: an annotation's label, a feature's :meth:`shown_name`."""
        kind, _, name = value.partition(":")
        if kind == "obs":
            return dict(self.obs).get(value, name)
        return self.shown_name(value)

    def shown_name(self, value: str) -> str:
        """The display name of a gene or protein key, the same on every page
        (:func:`dashboard.backend.names.display_name`): ``"gene:CD4"`` → ``"CD4"``,
        ``"protein:CD4_TotalSeqB"`` → ``"CD4 protein"``; later copies of a duplicated
        symbol say which copy they are (``"gene:COG8-1"`` → ``"COG8 (2nd)"``)."""
        short, genes = self._shown_parts
        return display_name(value, proteins=short, genes=genes)

    def short_name(self, value: str) -> str:
        """A feature's name without the modality (search matches it): ``"CD4"`` for both
        ``"gene:CD4"`` and ``"protein:CD4_TotalSeqB"``."""
        kind, _, name = value.partition(":")
        short, genes = self._shown_parts
        return short.get(name, name) if kind == "protein" else genes.get(name, name)

    @functools.cached_property
    def _shown_parts(self) -> tuple[dict[str, str], dict[str, str]]:
        """Short names of the proteins (distinct) and shown names of renamed genes."""
        short = short_protein_names(self.proteins)
        genes: dict[str, str] = {}
        for value, (symbol, copy) in self.renamed.items():
            kind, _, name = value.partition(":")
            if kind == "protein":
                short[name] = f"{short_protein_name(symbol)} ({_ordinal(copy)})"
            else:
                genes[name] = f"{symbol} ({_ordinal(copy)})"
        return short, genes

    def has(self, value: str) -> bool:
        """True if ``value`` names a known feature."""
        kind, _, name = value.partition(":")
        if kind == "obs":
            return value in dict(self.obs)
        pool = self.genes if kind == "gene" else self.proteins if kind == "protein" else []
        return name in set(pool)


_catalogs: OrderedDict[str, FeatureCatalog] = OrderedDict()
_catalog_lock = threading.Lock()


def feature_catalog(service: AnalysisService, pair: Pair) -> FeatureCatalog:
    """The pair's :class:`FeatureCatalog` (memoised per dataset)."""
    key = pair.dataset.fingerprint
    with _catalog_lock:
        if key in _catalogs:
            return _catalogs[key]
    data = _dataset(service, pair)
    obs = [(f"obs:{k}", v) for k, v in OBS_BUILTINS.items()]
    obs += [(f"obs:{c}", str(c)) for c in data.obs.columns if str(c) not in OBS_BUILTINS]
    renamed = _renamed("gene", data.var_names, data.original_var_names)
    renamed |= _renamed("protein", data.protein_names, data.original_protein_names)
    catalog = FeatureCatalog(
        obs, [str(g) for g in data.var_names], [str(p) for p in data.protein_names], renamed
    )
    with _catalog_lock:
        _catalogs[key] = catalog
        while len(_catalogs) > 4:
            _catalogs.popitem(last=False)
    return catalog


def _renamed(kind: str, names: pd.Index, symbols: pd.Index) -> dict[str, tuple[str, int]]:
    """``{"<kind>:<unique name>": (symbol, copy number)}`` for names that differ from their
    symbol (copies counted in file order, the first copy keeping its name)."""
    out: dict[str, tuple[str, int]] = {}
    if names is symbols or names.equals(symbols):
        return out
    seen: dict[str, int] = {}
    for name, symbol in zip(names.astype(str), symbols.astype(str), strict=True):
        seen[symbol] = seen.get(symbol, 0) + 1
        if name != symbol:
            out[f"{kind}:{name}"] = (symbol, seen[symbol])
    return out


def _ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ... ``11th``, ``12th``, ``21st``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def search_features(
    catalog: FeatureCatalog,
    query: str | None,
    *,
    limit: int = 50,
    include_obs: bool = True,
) -> list[dict[str, str]]:
    """Dropdown options matching ``query`` (case-insensitive): exact names first, then
    prefix matches, then substring matches; proteins before genes within a rank, then
    shorter names first. An empty query lists the annotations and the proteins."""
    q = (query or "").strip().lower()
    entries: list[tuple[tuple[int, int, int, str], str]] = []
    pools = [(0, "protein", catalog.proteins), (1, "gene", catalog.genes)]
    if not q:
        out = [{"label": lab, "value": v} for v, lab in catalog.obs] if include_obs else []
        out += [
            {"label": catalog.label(f"protein:{p}"), "value": f"protein:{p}"}
            for p in catalog.proteins
        ]
        return out[:limit]
    if include_obs:
        for value, label in catalog.obs:
            low = label.lower()
            rank = _rank(low, q)
            if rank is None:
                rank = _rank(value.split(":", 1)[1].lower(), q)
            if rank is not None:
                entries.append(((rank, -1, len(label), low), value))
    for order, kind, names in pools:
        for name in names:
            low = name.lower()
            rank = _rank(low, q)
            renamed = catalog.renamed.get(f"{kind}:{name}")
            if kind == "protein" or renamed:  # "cd4" is an exact match of CD4_TotalSeqB
                symbol = renamed[0] if renamed else name  # "cog8" finds both copies of COG8
                short = short_protein_name(symbol) if kind == "protein" else symbol
                shown = _rank(short.lower(), q)
                if shown is not None and (rank is None or shown < rank):
                    rank = shown
            if rank is not None:
                entries.append(((rank, order, len(name), low), f"{kind}:{name}"))
    entries.sort(key=lambda e: e[0])
    return [{"label": catalog.label(v), "value": v} for _, v in entries[:limit]]


def _rank(name: str, q: str) -> int | None:
    if name == q:
        return 0
    if name.startswith(q):
        return 1
    if q in name:
        return 2
    return None


def with_current(options: list[dict[str, str]], catalog: FeatureCatalog, value: Any) -> list:
    """``options`` plus the currently chosen value(s), so a dropdown never loses its value."""
    values = value if isinstance(value, list) else [value] if value else []
    have = {o["value"] for o in options}
    extra = [{"label": catalog.label(v), "value": v} for v in values if v and v not in have]
    return extra + options


# ======================================================================== feature views
def violin_frame(
    service: AnalysisService,
    pair: Pair,
    feature: str,
    *,
    max_per_group: int = 2000,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    """Raw and denoised values (log1p) of a gene or protein with each cell's type.

    At most ``max_per_group`` cells per type are kept (seeded draw) so the payload stays
    small at any dataset size; returns the frame and the cell-type order.
    """
    spec = ColorSpec(feature)
    if spec.kind not in {"gene", "protein"}:
        msg = f"{feature} is not a gene or protein"
        raise InvalidSelection(msg)
    raw = feature_values(service, pair, ColorSpec(feature, "raw"))
    den = feature_values(service, pair, ColorSpec(feature, "denoised"))
    types = service.shown_cell_types(pair)
    order = [str(c) for c in types.cat.categories]
    frame = pd.DataFrame({"cell_type": types.astype(str).to_numpy(), "raw": raw, "denoised": den})
    rng = np.random.default_rng(seed)
    keep = []
    for _, idx in frame.groupby("cell_type", observed=True).indices.items():
        keep.append(idx if len(idx) <= max_per_group else rng.choice(idx, max_per_group, False))
    rows = np.sort(np.concatenate(keep)) if keep else np.array([], dtype=int)
    return frame.iloc[rows].reset_index(drop=True), order


def dotplot_tables(
    service: AnalysisService, pair: Pair, features: Sequence[str], *, layer: str = "denoised"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell type: mean value (``layer``, log1p) and fraction of cells with a raw count
    above zero, for each feature (columns named by display name). Minified data has no
    counts: its genes' fractions are NaN (unknown)."""
    types = service.shown_cell_types(pair)
    order = [str(c) for c in types.cat.categories]
    labels = types.astype(str).to_numpy()
    data = _dataset(service, pair)
    csc = None if data.minified is not None else _columns.get(data)[0]
    means, fracs = {}, {}
    for feature in features:
        spec = ColorSpec(feature, layer)
        values = feature_values(service, pair, spec)
        if spec.kind == "gene":
            pos = data.var_names.get_indexer([spec.name])[0]
            expressed = (
                np.full(data.n_cells, np.nan)
                if csc is None
                else np.asarray(csc[:, pos].toarray()).ravel() > 0
            )
        else:
            pos = data.protein_names.get_indexer([spec.name])[0]
            expressed = _protein_expressed(service, pair, spec.name, data.protein[:, pos])
        frame = pd.DataFrame({"t": labels, "v": values, "e": expressed})
        grouped = frame.groupby("t")
        name = feature_catalog(service, pair).shown_name(spec.feature)
        means[name] = grouped["v"].mean().reindex(order)
        fracs[name] = grouped["e"].mean().reindex(order)
    return pd.DataFrame(means, index=order), pd.DataFrame(fracs, index=order)


def efficiency_summary(service: AnalysisService, pair: Pair) -> str:
    """The model's learned protein capture efficiency in one line (over the proteins each
    batch measured), and the scale denoised proteins are shown on: ``"0.37-0.40 (14
    proteins x 1 batch); denoised proteins: measured scale"``, or that it has none."""
    model = service.model(pair)
    if not model.has_protein_efficiency:
        return "none learned (scvi-tools before 1.3.1, or 1): one protein scale"
    eff = model.protein_efficiency()
    values = eff.to_numpy()
    if model.protein_batch_mask is not None:  # a batch without the antibody learned nothing
        values = values[np.asarray(model.protein_batch_mask, dtype=bool)]
    n_batch = eff.shape[0]
    return (
        f"{values.min():.2f}-{values.max():.2f} ({eff.shape[1]} proteins x {n_batch} "
        f"batch{'es' if n_batch != 1 else ''}); denoised proteins: "
        f"{SCALE_SHORT[service.protein_scale()]}"
    )


def dotplot_title(service: AnalysisService, pair: Pair) -> str:
    """The dot plot's title: what its colour is, and the scale of denoised proteins."""
    return (
        "Mean denoised value (log1p) per cell type, scaled per feature; denoised proteins: "
        f"{SCALE_SHORT[service.protein_scale()]}"
    )


def _protein_expressed(
    service: AnalysisService, pair: Pair, protein: str, counts: np.ndarray
) -> np.ndarray:
    """Proteins have background in every cell: "expressing" means foreground probability
    above one half when the model has it, else any count."""
    try:
        return protein_foreground(service, pair, protein) > 0.5
    except BackendError:
        return np.asarray(counts) > 0


def default_dot_features(catalog: FeatureCatalog, *, n: int = 8) -> list[str]:
    """Marker genes and proteins of the main PBMC types that the dataset has."""
    wanted = ["CD3E", "CD4", "CD8A", "MS4A1", "CD14", "FCGR3A", "NKG7", "GNLY", "PPBP", "IL7R"]
    genes = set(catalog.genes)
    out = [f"gene:{g}" for g in wanted if g in genes][: n // 2 + 2]
    out += [f"protein:{p}" for p in catalog.proteins[: max(n - len(out), 0)]]
    if not out:
        out = [f"gene:{g}" for g in catalog.genes[:n]]
    return out[:n]


# ==================================================================================== DE
DE_COLUMNS = [
    "feature",
    "modality",
    "lfc_mean",
    "lfc_std",
    "bayes_factor",
    "proba_de",
    "is_de",
    "scale1",
    "scale2",
    "non_zeros_proportion1",
    "non_zeros_proportion2",
    "group1",
    "group2",
]


def de_display_table(
    de: pd.DataFrame, *, group: str | None = None, catalog: FeatureCatalog | None = None
) -> pd.DataFrame:
    """A DE result as the pages show it: one row per feature, sorted by Bayes factor
    (strongest first), ``is_de`` from the FDR column.

    ``key`` (``"protein:CD19_TotalSeqB"``) colours the cells by the row, ``feature`` is its
    display name (``"CD19 protein"``, :meth:`FeatureCatalog.shown_name` of ``catalog``) and
    ``feature_id`` the name in the dataset (``"CD19_TotalSeqB"``: the grid's tooltip and
    CSV column).
    """
    from model.differential import PROTEIN_SUFFIX

    df = de if group is None else de[de["group1"].astype(str) == str(group)]
    fdr_col = next((c for c in df.columns if c.startswith("is_de_fdr_")), None)
    modality = df["modality"].astype(str) if "modality" in df else pd.Series("rna", df.index)
    is_protein = modality.to_numpy() == "protein"
    # DE tables suffix protein rows ("CD4_TotalSeqB_protein"); the key must name the
    # protein as the dataset does, or a click would colour by a protein that is not there
    names = [
        f[: -len(PROTEIN_SUFFIX)] if p and f.endswith(PROTEIN_SUFFIX) else f
        for f, p in zip(df.index.astype(str), is_protein, strict=True)
    ]
    kind = np.where(is_protein, "protein", "gene")
    keys = [f"{k}:{f}" for k, f in zip(kind, names, strict=True)]
    shown = catalog.shown_name if catalog is not None else display_name
    out = pd.DataFrame(
        {
            "key": keys,
            "feature": [shown(k) for k in keys],
            "feature_id": names,
            "modality": np.where(is_protein, "protein", "rna"),
        }
    )
    for col in DE_COLUMNS[2:]:
        if col == "is_de":
            out[col] = df[fdr_col].to_numpy(dtype=bool) if fdr_col else False
        elif col in df:
            out[col] = df[col].to_numpy()
    return out.sort_values("bayes_factor", ascending=False, kind="stable").reset_index(drop=True)


def de_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON rows for the grid (floats rounded to 4 significant digits)."""
    out = table.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda v: float(f"{v:.4g}") if np.isfinite(v) else None)
    return out.to_dict("records")


def whole_number(value: Any, lo: int, hi: int, what: str) -> int:
    """A number field from the browser as an ``int`` in ``lo..hi``, or one line naming the
    field (``2.5``, ``"ten"``, ``true`` and ``1e400`` are refused, never truncated)."""
    try:
        v = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError, OverflowError):
        v = float("nan")
    if not v.is_integer() or not lo <= v <= hi:
        msg = f"{what} must be a whole number from {lo} to {hi}"
        raise InvalidSelection(msg)
    return int(v)


def cell_positions(values: Any) -> list[int]:
    """Cell positions from the browser: a non-empty list of non-negative whole numbers, or
    :class:`InvalidSelection` naming the first bad entry (never a silent wrap-around:
    numpy reads ``-1`` as the last cell)."""
    if not isinstance(values, list | tuple) or not values:
        msg = "the selection is not a list of cell positions"
        raise InvalidSelection(msg)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            msg = f"the selection holds {str(v)[:40]!r}, which is not a cell position (0, 1, ...)"
            raise InvalidSelection(msg)
    return list(values)


def de_selection(
    service: AnalysisService,
    pair: Pair,
    cells_a: Sequence[int],
    cells_b: Sequence[int] | None,
    *,
    name_a: str,
    name_b: str | None,
) -> pd.DataFrame:
    """DE of selection A vs B (``None``: vs the rest), as :func:`de_display_table`."""
    if cells_b is not None:
        overlap = np.intersect1d(np.asarray(cells_a), np.asarray(cells_b))
        if overlap.size:
            b = np.setdiff1d(np.asarray(cells_b), overlap)
            if b.size == 0:
                msg = f"{name_b} lies inside {name_a}; pick groups that differ"
                raise InvalidSelection(msg)
            cells_b = b.tolist()
    de = service.de_groups(
        pair,
        np.asarray(cells_a, dtype=np.int64),
        None if cells_b is None else np.asarray(cells_b, dtype=np.int64),
        name1=name_a,
        name2=name_b,
    )
    return de_display_table(de, catalog=feature_catalog(service, pair))


# ========================================================================= files & uploads
def max_upload_bytes(settings: Settings | None = None) -> int:
    """Upload size limit: ``settings.max_upload_bytes`` when given, else
    ``TOTALVI_EXPLORER_MAX_UPLOAD_MB`` (MB), default 500 MB."""
    if settings is not None:
        return int(settings.max_upload_bytes)
    raw = os.environ.get("TOTALVI_EXPLORER_MAX_UPLOAD_MB", "")
    try:
        mb = float(raw) if raw.strip() else DEFAULT_MAX_UPLOAD_MB
    except ValueError:
        mb = DEFAULT_MAX_UPLOAD_MB
    return int(mb * 1024 * 1024)


def upload_notices(data: Any) -> tuple[str, ...]:
    """The notices of what an upload's validation read (e.g. duplicate names made unique)."""
    return tuple(str(n) for n in getattr(data, "notices", ()) or ())


def obs_columns(service: AnalysisService, dataset: Any) -> list[str]:
    """obs columns of a registered dataset (candidates for the batch key)."""
    return [str(c) for c in service.dataset(dataset).obs.columns]


def default_protein_pair(catalog: FeatureCatalog) -> tuple[str | None, str | None]:
    """Two proteins for the linked scatter: CD4 vs CD8 when present, else the first two."""
    proteins = catalog.proteins

    def find(names: Sequence[str]) -> str | None:
        bases = [catalog.short_name(f"protein:{p}").upper() for p in proteins]
        for q in names:  # exact names first, in the order asked
            if q in bases:
                return proteins[bases.index(q)]
        return None

    x = find(["CD4"]) or (proteins[0] if proteins else None)
    y = find(["CD8A", "CD8"]) or next((p for p in proteins if p != x), None)
    return x, y
