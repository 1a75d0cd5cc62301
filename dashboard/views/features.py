"""Every feature a pair's cells can be coloured by (annotations, genes, proteins), the
search over them and the names they are shown under."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from dashboard.backend.names import display_name, short_protein_name, short_protein_names
from dashboard.views.gene_set_keys import SET_KIND, set_known, set_label
from dashboard.views.integration import with_batch_mixing
from dashboard.views.label_sets import with_label_sets
from dashboard.views.qc import QC_KIND, qc_entries

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService


#: Built-in per-cell annotations offered first in every colour picker.
OBS_BUILTINS = {"cell_type": "Cell type", "cluster": "Leiden cluster", "batch": "Batch"}


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
    qc: list[tuple[str, str]] = field(default_factory=list)  # model QC: (value, label)

    def label(self, value: str) -> str:
        """Dropdown label of a value: an annotation's or model QC quantity's label, a
        feature's :meth:`shown_name`."""
        kind, _, name = value.partition(":")
        if kind == "obs":
            return dict(self.obs).get(value, name)
        if kind == QC_KIND:
            return dict(self.qc).get(value, name)
        if kind == SET_KIND:  # a gene set (dashboard.views.gene_set_keys)
            return set_label(value)
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
        if kind == QC_KIND:
            return value in dict(self.qc)
        if kind == SET_KIND:  # every member one of this pair's genes or proteins
            return set_known(value, self)
        pool = self.genes if kind == "gene" else self.proteins if kind == "protein" else []
        return name in set(pool)


_catalogs: OrderedDict[str, FeatureCatalog] = OrderedDict()


_catalog_lock = threading.Lock()


def feature_catalog(service: AnalysisService, pair: Pair) -> FeatureCatalog:
    """The pair's :class:`FeatureCatalog` (memoised per dataset), with the per-cell batch
    mixing among the annotations once the integration scorecard has computed it
    (:func:`~dashboard.views.integration.with_batch_mixing`) and the current workspace's
    label sets (:func:`~dashboard.views.label_sets.with_label_sets`)."""
    catalog = with_batch_mixing(service, pair, _dataset_catalog(service, pair))
    return with_label_sets(service, pair, catalog)


def _dataset_catalog(service: AnalysisService, pair: Pair) -> FeatureCatalog:
    """The :class:`FeatureCatalog` of the pair's dataset (memoised per dataset)."""
    key = pair.dataset.fingerprint
    with _catalog_lock:
        if key in _catalogs:
            return _catalogs[key]
    data = service.dataset(pair)
    obs = [(f"obs:{k}", v) for k, v in OBS_BUILTINS.items()]
    obs += [(f"obs:{c}", str(c)) for c in data.obs.columns if str(c) not in OBS_BUILTINS]
    renamed = _renamed("gene", data.var_names, data.original_var_names)
    renamed |= _renamed("protein", data.protein_names, data.original_protein_names)
    catalog = FeatureCatalog(
        obs,
        [str(g) for g in data.var_names],
        [str(p) for p in data.protein_names],
        renamed,
        qc_entries(minified=data.minified is not None),
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
        out += [{"label": lab, "value": v} for v, lab in catalog.qc] if include_obs else []
        out += [
            {"label": catalog.label(f"protein:{p}"), "value": f"protein:{p}"}
            for p in catalog.proteins
        ]
        return out[:limit]
    if include_obs:
        for value, label in [*catalog.obs, *catalog.qc]:
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


def default_dot_features(catalog: FeatureCatalog, *, n: int = 8) -> list[str]:
    """Marker genes and proteins of the main PBMC types that the dataset has."""
    wanted = ["CD3E", "CD4", "CD8A", "MS4A1", "CD14", "FCGR3A", "NKG7", "GNLY", "PPBP", "IL7R"]
    genes = set(catalog.genes)
    out = [f"gene:{g}" for g in wanted if g in genes][: n // 2 + 2]
    out += [f"protein:{p}" for p in catalog.proteins[: max(n - len(out), 0)]]
    if not out:
        out = [f"gene:{g}" for g in catalog.genes[:n]]
    return out[:n]


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
