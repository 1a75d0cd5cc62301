"""Label sets as the pages use them: colourings, groupings, compare groups and the edits
of the Annotations card (:mod:`dashboard.backend.label_sets` keeps them per workspace).

A set is reached everywhere a cell grouping is:

- colouring: the annotation ``obs:labels:<set name>`` (:func:`with_label_sets` lists every
  set of the workspace among the annotations; :func:`label_set_labels` reads its values);
- "Group cells by" (the DE page's per-type table, the model card's DE metric, Lookup's
  dot plot): :func:`grouping_choices` and :func:`grouping_key` (a *snapshot* key for jobs,
  which run outside the request) / :func:`grouping_labels` (shown labels, for views);
- Explore's compare groups: one entry per category (:func:`compare_entries`,
  :func:`resolve_compare`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dashboard.backend.errors import InvalidSelection
from dashboard.backend.label_sets import LIVE_PREFIX, LabelSet, labels_csv

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService
    from dashboard.views.features import FeatureCatalog

#: The obs column (after ``obs:``) of a label set's colouring: ``labels:<set name>``.
COLUMN_PREFIX = LIVE_PREFIX
#: A compare choice of one category of a set: ``lab:`` + JSON ``[set, category]``.
COMPARE_PREFIX = "lab:"
#: A "Group cells by" choice of an obs column (label-like) of the dataset.
OBS_GROUPING = "col:"
#: What the groupings' default (``""``) is called.
CELL_TYPES_LABEL = "Cell types (as shown)"


# ----------------------------------------------------------------------------- reading
def _n(service: AnalysisService, pair: Pair) -> int:
    return service.dataset(pair).n_cells


def label_sets(service: AnalysisService, pair: Pair) -> list[LabelSet]:
    """The current workspace's label sets of the pair's dataset."""
    return service.label_sets.sets(pair, _n(service, pair))


def label_set(service: AnalysisService, pair: Pair, name: str) -> LabelSet:
    """The workspace's set ``name`` (one line when there is none)."""
    return service.label_sets.get(pair, _n(service, pair), name)


def set_feature(name: str) -> str:
    """The colouring key of set ``name`` (``obs:labels:<name>``)."""
    return f"obs:{COLUMN_PREFIX}{name}"


def is_set_column(column: str) -> bool:
    """True if an obs column (of a colouring) names a label set."""
    return column.startswith(COLUMN_PREFIX)


def label_set_labels(service: AnalysisService, pair: Pair, column: str) -> pd.Series:
    """Per cell its category in the set a colouring's column names (``labels:<name>``)."""
    s = label_set(service, pair, column[len(COLUMN_PREFIX) :])
    return s.series(service.dataset(pair).obs_names)


def with_label_sets(
    service: AnalysisService, pair: Pair, catalog: FeatureCatalog
) -> FeatureCatalog:
    """``catalog`` with the workspace's label sets among its annotations (a file ``stat``
    when nothing changed: the store keeps the parsed file)."""
    sets = label_sets(service, pair)
    if not sets:
        return catalog
    extra = [(set_feature(s.name), f"{s.name} (label set)") for s in sets]
    return dataclasses.replace(catalog, obs=[*catalog.obs, *extra])


def set_summary(s: LabelSet) -> str:
    """``"“Lineage”: 3 categories, 1,234 of 6,855 cells labelled"``."""
    n = int(s.codes.size)
    labelled = int((s.codes >= 0).sum())
    k = len(s.categories)
    return (
        f"“{s.name}”: {k} categor{'y' if k == 1 else 'ies'}, {labelled:,} of {n:,} cells labelled"
    )


def set_options(service: AnalysisService, pair: Pair) -> list[dict[str, str]]:
    """The Annotations card's set dropdown."""
    return [{"label": s.name, "value": s.name} for s in label_sets(service, pair)]


def category_options(
    service: AnalysisService, pair: Pair, name: str | None
) -> list[dict[str, str]]:
    """The categories of set ``name`` with their cells (value: the category)."""
    if not name:
        return []
    try:
        s = label_set(service, pair, name)
    except InvalidSelection:
        return []
    return [{"label": f"{c} ({k:,})", "value": c} for c, k in s.counts().items()]


# ---------------------------------------------------------------------------- groupings
def grouping_choices(service: AnalysisService, pair: Pair) -> list[dict[str, str]]:
    """What cells can be grouped by: the cell types (``""``), the dataset's label-like
    obs columns and the workspace's label sets."""
    out = [{"label": CELL_TYPES_LABEL, "value": ""}]
    out += [
        {"label": f"obs column {c}", "value": f"{OBS_GROUPING}{c}"}
        for c in service.label_columns(pair)
    ]
    out += [
        {"label": f"{s.name} (label set)", "value": f"{COLUMN_PREFIX}{s.name}"}
        for s in label_sets(service, pair)
    ]
    return out


def grouping_key(service: AnalysisService, pair: Pair, grouping: Any) -> str | None:
    """The backend's ``labels_key`` of a grouping choice, as a job can read it: ``None``
    (the cell types), an obs column, or a label set's snapshot (``labels@<digest>``).
    Forged choices are refused in one line."""
    if grouping in (None, ""):
        return None
    if not isinstance(grouping, str) or len(grouping) > 300:
        msg = "that grouping is not one of the listed ones"
        raise InvalidSelection(msg)
    if grouping.startswith(OBS_GROUPING):
        column = grouping[len(OBS_GROUPING) :]
        if column not in service.label_columns(pair):
            msg = f"no label-like obs column {column[:60]!r} in this dataset"
            raise InvalidSelection(msg)
        return column
    if grouping.startswith(COLUMN_PREFIX):
        return service.label_set_snapshot(pair, grouping[len(COLUMN_PREFIX) :])
    msg = "that grouping is not one of the listed ones"
    raise InvalidSelection(msg)


def grouping_labels(service: AnalysisService, pair: Pair, grouping: Any) -> pd.Series:
    """Per cell its group under a grouping choice, as pages show it (cell types by their
    shown names)."""
    if isinstance(grouping, str) and grouping.startswith(COLUMN_PREFIX):
        return service.shown_cell_types(pair, labels_key=grouping)  # the live set
    return service.shown_cell_types(pair, labels_key=grouping_key(service, pair, grouping))


def grouping_name(service: AnalysisService, pair: Pair, grouping: Any) -> str:
    """What a grouping choice is called (``"cell types"``, ``"label set “Lineage”"``)."""
    if not grouping:
        return "cell types"
    if str(grouping).startswith(COLUMN_PREFIX):
        return f"label set “{str(grouping)[len(COLUMN_PREFIX) :]}”"
    return f"obs column {str(grouping)[len(OBS_GROUPING) :]}"


# ------------------------------------------------------------------------ compare groups
def compare_entries(service: AnalysisService, pair: Pair) -> list[dict[str, str]]:
    """One compare choice per category of every set (``"Lineage: T cells (1,234)"``)."""
    out = []
    for s in label_sets(service, pair):
        for cat, k in s.counts().items():
            value = COMPARE_PREFIX + json.dumps([s.name, cat], ensure_ascii=False)
            out.append({"label": f"{s.name}: {cat} ({k:,})", "value": value})
    return out


def label_group(value: str) -> tuple[str, str]:
    """``(set name, category)`` of a :func:`compare_entries` value (forged: one line)."""
    try:
        name, cat = json.loads(value[len(COMPARE_PREFIX) :])
    except (ValueError, TypeError):
        msg = "that label-set group is not one of the listed ones"
        raise InvalidSelection(msg) from None
    if not isinstance(name, str) or not isinstance(cat, str):
        msg = "that label-set group is not one of the listed ones"
        raise InvalidSelection(msg)
    return name, cat


def resolve_compare(service: AnalysisService, pair: Pair, value: str) -> tuple[list[int], str]:
    """Cells and name of a compare choice :func:`compare_entries` made."""
    name, cat = label_group(value)
    s = label_set(service, pair, str(name))
    if cat not in s.categories:
        msg = f"label set “{s.name}” has no category “{str(cat)[:60]}” any more"
        raise InvalidSelection(msg)
    cells = np.flatnonzero(s.codes == s.categories.index(cat))
    return [int(i) for i in cells], str(cat)


# ------------------------------------------------------------------------------- edits
def create_from_cells(
    service: AnalysisService, pair: Pair, name: Any, cells: Sequence[int], label: Any
) -> LabelSet:
    """A new set ``name`` in which ``cells`` are ``label`` (the rest unlabelled)."""
    return service.label_sets.create(pair, _n(service, pair), name, cells=cells, label=label)


def create_from_types(service: AnalysisService, pair: Pair, name: Any) -> LabelSet:
    """A new set ``name``, a copy of the cell types as shown (to rename, merge, delete)."""
    types = service.shown_cell_types(pair)
    return service.label_sets.create(pair, _n(service, pair), name, labels=types)


def label_cells(
    service: AnalysisService, pair: Pair, name: str, cells: Sequence[int], label: Any
) -> LabelSet:
    """Label ``cells`` ``label`` in set ``name``."""
    return service.label_sets.label_cells(pair, _n(service, pair), name, cells, label)


def rename_or_merge(
    service: AnalysisService, pair: Pair, name: str, categories: Sequence[str], new: Any
) -> LabelSet:
    """One category: rename it ``new``; several: merge them into ``new``."""
    cats = [str(c) for c in categories or []]
    if not cats:
        msg = "choose the categories to rename or merge"
        raise InvalidSelection(msg)
    n = _n(service, pair)
    if len(cats) == 1:
        return service.label_sets.rename_category(pair, n, name, cats[0], new)
    return service.label_sets.merge(pair, n, name, cats, new)


def delete_categories(
    service: AnalysisService, pair: Pair, name: str, categories: Sequence[str]
) -> LabelSet:
    """Drop ``categories`` of set ``name`` (their cells unlabelled), as one edit each."""
    cats = [str(c) for c in categories or []]
    if not cats:
        msg = "choose the categories to delete"
        raise InvalidSelection(msg)
    out = label_set(service, pair, name)
    for cat in cats:
        out = service.label_sets.delete_category(pair, _n(service, pair), name, cat)
    return out


def delete_set(service: AnalysisService, pair: Pair, name: str) -> None:
    """Forget set ``name`` (Undo brings it back)."""
    service.label_sets.delete_set(pair, _n(service, pair), name)


def undo(service: AnalysisService, pair: Pair) -> str:
    """Undo the workspace's last edit of the dataset's sets; returns what it undid."""
    return service.label_sets.undo(pair, _n(service, pair))


def next_undo(service: AnalysisService, pair: Pair) -> str:
    """What Undo would undo now (``""``: nothing)."""
    steps = service.label_sets.undo_steps(pair, _n(service, pair))
    return steps[0] if steps else ""


def import_csv(
    service: AnalysisService, pair: Pair, content: bytes, filename: str, name: Any = None
) -> LabelSet:
    """A new set from an uploaded CSV (cell id, label); named ``name``, else after the
    file."""
    stem = re.sub(r"\.(csv|tsv|txt)$", "", str(filename or "labels"), flags=re.IGNORECASE)
    set_name = (name or "").strip() if isinstance(name, str) else ""
    obs = service.dataset(pair).obs_names
    return service.label_sets.import_csv(
        pair, obs, set_name or stem[:60] or "labels", content, filename=filename
    )


def export_csv(service: AnalysisService, pair: Pair, name: str) -> tuple[str, str]:
    """``(file name, CSV text)`` of set ``name`` (``cell,<set name>``)."""
    s = label_set(service, pair, name)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", s.name).strip("_") or "labels"
    return f"labels_{safe}.csv", labels_csv(s, service.dataset(pair).obs_names)
