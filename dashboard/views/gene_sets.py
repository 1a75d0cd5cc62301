"""Gene sets as the pages use them: a pasted or uploaded list of genes and proteins matched
against the pair's features, the set's per-cell score (its colouring, a violin by cell type,
the cells high and low in it) and the sets a workspace keeps.

Matching (:func:`match_entries`), case-insensitive: an entry names a gene by its name, a
protein by its full name (``CD4_TotalSeqB``) or its short name (``CD4``). A plain entry that
is both a gene and a protein's short name (``CD4``) picks the gene, and the result line
says so; ``protein:CD4`` (or ``CD4 (protein)``) picks the protein, ``gene:CD4`` the gene.
Entries matching nothing are named in the result line; a set with no known entry is refused.

The score is the backend's (:mod:`dashboard.backend.gene_sets`): per cell, the mean over the
set's features of the z-scored (across all cells) log1p denoised value (:data:`SCORE_HOW`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.gene_sets import MAX_FEATURES
from dashboard.views.features import feature_catalog
from dashboard.views.gene_set_keys import MAX_MEMBER, GeneSet, known_set, make_set, set_label
from dashboard.views.upload_payload import upload_bytes
from dashboard.views.values import names_list

if TYPE_CHECKING:
    from dashboard.backend.gene_sets import GeneSetScore
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService
    from dashboard.views.features import FeatureCatalog

#: Largest pasted text or uploaded file (bytes).
MAX_TEXT_BYTES = 64 * 1024
#: Gene sets a workspace keeps per dataset, and datasets it keeps sets for.
MAX_SAVED = 50
MAX_DATASETS = 5
#: What the score is, in words (shown on the page and in the colouring's note).
SCORE_HOW = (
    "Gene set score: per cell, the mean over the set's genes and proteins of the z-scored "
    "(across all cells) log1p denoised value (genes: denoised RNA per 10k counts; proteins: "
    "denoised foreground; each cell decoded in its own batch), each feature weighted equally; "
    "0 is the average cell."
)
#: The share of cells in each of the high and low groups that DE compares.
QUARTILE = 0.25
_SPLIT = re.compile(r"[\s,;]+")
_PROTEIN_SUFFIX = re.compile(r"\s*\(protein\)", re.IGNORECASE)
_HEADERS = {"gene", "genes", "symbol", "symbols", "feature", "features", "name", "protein"}


@dataclass(frozen=True)
class ParsedSet:
    """A matched gene set and its one-line account (what was matched, what was not)."""

    gene_set: GeneSet
    unknown: tuple[str, ...]
    notes: tuple[str, ...]  # e.g. that "CD4" was taken as the gene

    def summary(self) -> str:
        """``"T cells: 3 genes, 1 protein. Not found: FOO, BAR."``"""
        gs = self.gene_set
        parts = [
            f"{gs.name}: {_count(len(gs.genes), 'gene')}, {_count(len(gs.proteins), 'protein')}."
        ]
        if self.unknown:
            parts.append(f"Not found ({len(self.unknown)}): {names_list(list(self.unknown), 12)}.")
        parts += list(self.notes)
        return " ".join(parts)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


# ------------------------------------------------------------------------------ parsing
def text_entries(text: object) -> list[str]:
    """The entries of pasted text: separated by commas, semicolons, spaces or new lines
    (``CD4 (protein)`` kept as one entry); at most :data:`MAX_TEXT_BYTES`, entries of at
    most :data:`~dashboard.views.gene_set_keys.MAX_MEMBER` characters, at most
    :data:`~dashboard.backend.gene_sets.MAX_FEATURES` distinct entries."""
    if text is None:
        return []
    if not isinstance(text, str):
        msg = "the gene list must be text"
        raise InvalidSelection(msg)
    if len(text.encode("utf-8", "replace")) > MAX_TEXT_BYTES:
        msg = f"the gene list is too long (at most {MAX_TEXT_BYTES // 1024} kB)"
        raise InvalidSelection(msg)
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        msg = "the gene list has control characters: paste or upload plain text"
        raise InvalidSelection(msg)
    text = _PROTEIN_SUFFIX.sub("(protein)", text)
    entries = list(dict.fromkeys(e for e in _SPLIT.split(text.strip()) if e))
    long = [e for e in entries if len(e) > MAX_MEMBER]
    if long:
        msg = f"{long[0][:24]!r}… is not a gene or protein name (over {MAX_MEMBER} characters)"
        raise InvalidSelection(msg)
    if entries and entries[0].lower() in _HEADERS:  # a file's header line
        entries = entries[1:]
    if len(entries) > MAX_FEATURES:
        n = len(entries)
        msg = f"a gene set has at most {MAX_FEATURES} genes and proteins; this list has {n}"
        raise InvalidSelection(msg)
    return entries


def upload_text(contents: object, filename: object = None) -> str:
    """The text of a ``dcc.Upload`` (``data:<type>;base64,<data>``): at most
    :data:`MAX_TEXT_BYTES`, UTF-8 text (a binary file is refused in one line)."""
    what = f"{str(filename)[:60]!r}" if filename else "the file"
    too_large = f"too large for a gene list (at most {MAX_TEXT_BYTES // 1024} kB)"
    raw = upload_bytes(contents, what=what, max_bytes=MAX_TEXT_BYTES, too_large=too_large)
    if b"\x00" in raw:
        msg = f"{what} is not a text file: upload one gene per line, or a one-column CSV"
        raise InvalidSelection(msg)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        msg = f"{what} is not UTF-8 text: upload one gene per line, or a one-column CSV"
        raise InvalidSelection(msg) from None


# ----------------------------------------------------------------------------- matching
def match_entries(name: str, entries: list[str], catalog: FeatureCatalog) -> ParsedSet:
    """Match ``entries`` (case-insensitive) against ``catalog``'s genes and proteins (the
    module's rules); a set with no known entry is refused in one line naming the unknown."""
    genes = _lookup(catalog.genes, lambda g: g)
    proteins = _lookup(catalog.proteins, lambda p: p)
    short = _lookup(catalog.proteins, lambda p: catalog.short_name(f"protein:{p}"))
    picked_genes: list[str] = []
    picked_proteins: list[str] = []
    unknown: list[str] = []
    both: list[str] = []
    for entry in entries:
        kind, bare = _kind_of(entry)
        low = bare.lower()
        gene = _pick(genes, low, bare)
        protein = _pick(proteins, low, bare) or _pick(short, low, bare)
        if kind == "protein" or (kind is None and gene is None and protein is not None):
            found, into = protein, picked_proteins
        else:
            found, into = gene, picked_genes
            if kind is None and gene is not None and protein is not None:
                both.append(bare)
        if found is None:
            unknown.append(entry)
        else:
            into.append(found)
    if not picked_genes and not picked_proteins:
        what = f": {names_list(unknown, 8)}" if unknown else ""
        msg = f"none of the entries is a gene or protein of this dataset{what}"
        raise InvalidSelection(msg)
    notes = []
    if both:
        notes.append(
            f"{names_list(both, 6)}: gene and protein; took the gene "
            f"(write protein:{both[0]} for the protein)."
        )
    return ParsedSet(make_set(name, picked_genes, picked_proteins), tuple(unknown), tuple(notes))


def parse_gene_set(service: AnalysisService, pair: Pair, name: object, text: object) -> ParsedSet:
    """The set ``name`` of pasted (or uploaded) ``text``, matched against the pair's
    features (:func:`match_entries`); problems raise one line."""
    entries = text_entries(text)
    if not entries:
        msg = "paste or upload a list of genes and/or proteins first"
        raise InvalidSelection(msg)
    return match_entries(
        str(name or "") if isinstance(name, str) else "", entries, feature_catalog(service, pair)
    )


def _kind_of(entry: str) -> tuple[str | None, str]:
    """``"protein:CD4"``/``"CD4(protein)"`` → ``("protein", "CD4")``; ``"gene:CD4"`` →
    ``("gene", "CD4")``; ``"CD4"`` → ``(None, "CD4")``."""
    low = entry.lower()
    for kind in ("gene", "protein"):
        if low.startswith(f"{kind}:") and len(entry) > len(kind) + 1:
            return kind, entry[len(kind) + 1 :]
    if low.endswith("(protein)") and len(entry) > len("(protein)"):
        return "protein", entry[: -len("(protein)")]
    return None, entry


def _lookup(names: list[str], key: Any) -> dict[str, list[str]]:
    """``{lower-case key(name): [names]}``."""
    out: dict[str, list[str]] = {}
    for name in names:
        out.setdefault(str(key(name)).lower(), []).append(name)
    return out


def _pick(table: Mapping[str, list[str]], low: str, exact: str) -> str | None:
    """The name ``low`` finds: the one spelt exactly as ``exact`` if several, else the
    first."""
    found = table.get(low)
    if not found:
        return None
    return exact if exact in found else found[0]


# -------------------------------------------------------------------------------- score
def set_score(service: AnalysisService, pair: Pair, key: object) -> tuple[GeneSet, GeneSetScore]:
    """The gene set a colour key names (checked against the pair) and its score."""
    gs = known_set(key, feature_catalog(service, pair))
    return gs, service.gene_set_score(pair, gs.genes, gs.proteins)


def set_values(service: AnalysisService, pair: Pair, key: object) -> np.ndarray:
    """The per-cell score of the gene set ``key`` (float32, one per cell)."""
    return set_score(service, pair, key)[1].values


def set_title(key: str) -> str:
    """The colour-bar title of a set colouring: ``"Gene set: T cells · score (mean z)"``
    (the note under the view says how it is made: :data:`SCORE_HOW`)."""
    return f"{set_label(key)} · score (mean z)"


def score_line(service: AnalysisService, pair: Pair, key: object, *, named: bool = True) -> str:
    """What a set's score averages: ``"T cells: score of 3 genes and 1 protein over 800
    cells."`` (``named=False``: ``"Score of ..."``), and the features dropped for not
    varying."""
    gs, score = set_score(service, pair, key)
    n = service.dataset(pair).n_cells
    what = (
        f"of {_count(len(score.genes), 'gene')} and "
        f"{_count(len(score.proteins), 'protein')} over {n:,} cells."
    )
    line = f"{gs.name}: score {what}" if named else f"Score {what}"
    if score.dropped:
        shown = [feature_catalog(service, pair).shown_name(f) for f in score.dropped]
        line += f" Dropped (constant across cells, no z-score): {names_list(shown, 8)}."
    return line


def set_note(service: AnalysisService, pair: Pair, key: object) -> str:
    """The note under a view coloured by a set: how the score is made, and what it
    averages."""
    return f"{score_line(service, pair, key)} {SCORE_HOW}"


def score_violin_frame(
    service: AnalysisService, pair: Pair, key: object, *, max_per_group: int = 2000, seed: int = 0
) -> tuple[pd.DataFrame, list[str], GeneSet]:
    """The score of each cell with its type (at most ``max_per_group`` cells per type, a
    seeded draw), the cell-type order and the set."""
    gs, score = set_score(service, pair, key)
    types = service.shown_cell_types(pair)
    order = [str(c) for c in types.cat.categories]
    frame = pd.DataFrame({"cell_type": types.astype(str).to_numpy(), "score": score.values})
    rng = np.random.default_rng(seed)
    keep = [
        idx if len(idx) <= max_per_group else rng.choice(idx, max_per_group, replace=False)
        for idx in frame.groupby("cell_type", observed=True).indices.values()
    ]
    rows = np.sort(np.concatenate(keep)) if keep else np.array([], dtype=int)
    present = set(frame["cell_type"])
    return frame.iloc[rows].reset_index(drop=True), [t for t in order if t in present], gs


def high_low_cells(
    service: AnalysisService, pair: Pair, key: object
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """The cells in the top and bottom quartile of the set's score (at or above its 75th
    percentile, at or below its 25th), and the two groups' names; one line when they
    overlap (a score with ties across the middle half)."""
    gs, score = set_score(service, pair, key)
    values = score.values
    low_cut, high_cut = np.quantile(values, [QUARTILE, 1 - QUARTILE])
    high = np.flatnonzero(values >= high_cut)
    low = np.flatnonzero(values <= low_cut)
    if high_cut <= low_cut or np.intersect1d(high, low).size:
        msg = f"the score of {gs.name!r} barely varies: its top and bottom quartiles overlap"
        raise InvalidSelection(msg)
    return high, low, f"{gs.name} high (top 25%)", f"{gs.name} low (bottom 25%)"


# -------------------------------------------------------------------------- saved sets
def saved_sets(store: object, dataset_id: str, catalog: FeatureCatalog) -> list[GeneSet]:
    """The gene sets a workspace keeps for a dataset, newest last; entries that are not
    valid sets of this pair (forged, or another dataset's) are left out."""
    mine = store.get(dataset_id) if isinstance(store, dict) else None
    if not isinstance(mine, dict):
        return []
    out = []
    for name, key in list(mine.items())[:MAX_SAVED]:
        try:
            gs = known_set(key, catalog)
        except InvalidSelection:
            continue
        if gs.name == name:
            out.append(gs)
    return out


def with_saved(store: object, dataset_id: str, gs: GeneSet) -> dict[str, Any]:
    """The store with ``gs`` kept for the dataset (replacing a set of the same name; the
    oldest dropped beyond :data:`MAX_SAVED`; at most :data:`MAX_DATASETS` datasets)."""
    base = dict(store) if isinstance(store, dict) else {}
    mine = base.pop(dataset_id, None)
    mine = (
        {k: v for k, v in mine.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(mine, dict)
        else {}
    )
    mine.pop(gs.name, None)
    mine[gs.name] = gs.key
    while len(mine) > MAX_SAVED:
        mine.pop(next(iter(mine)))
    others = [(k, v) for k, v in base.items() if isinstance(v, dict)][-(MAX_DATASETS - 1) :]
    return {**dict(others), dataset_id: mine}


def without_saved(store: object, dataset_id: str, name: object) -> dict[str, Any]:
    """The store without the dataset's set ``name``."""
    base = dict(store) if isinstance(store, dict) else {}
    mine = base.get(dataset_id)
    if isinstance(mine, dict) and isinstance(name, str):
        base[dataset_id] = {k: v for k, v in mine.items() if k != name}
    return base
