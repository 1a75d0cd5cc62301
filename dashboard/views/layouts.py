"""The cell layouts Explore's main cell view and its "Embedding" linked view can show: the
model's latent UMAP and every 2-D layout the dataset's file carries in ``obsm`` (``X_umap``,
``X_tsne``, the first two components of ``X_pca``, ...; read by
:func:`model.data.obsm_layouts`). A dataset with a layout of its own opens on it
(:func:`default_layout`), so its first view waits for no UMAP of ours.

A layout is named by a key: :data:`OURS` (``"umap"``) or ``"obsm:<obsm key>"``. Keys come
back from the browser (dropdown values, regions of a lasso), so :func:`layout_xy` refuses
one the dataset does not have in one readable line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dashboard.backend.errors import InvalidSelection

if TYPE_CHECKING:
    from dashboard.backend.refs import Pair
    from dashboard.backend.service import AnalysisService

#: The key of the model's latent UMAP.
OURS = "umap"
OURS_LABEL = "Latent UMAP (ours)"
#: Prefix of the keys of the file's own layouts.
OBSM = "obsm:"
#: The file's layout a dataset opens with when it has one (else the file's first).
PREFERRED = "X_umap"
#: Longest key accepted from the browser (longer ones are refused unread).
MAX_KEY = 200
NO_LAYOUTS_NOTE = (
    "This dataset's file carries no 2-D layout of its own (obsm X_umap, X_tsne, X_pca, ...): "
    "only the latent UMAP is offered."
)


def layout_keys(service: AnalysisService, pair: Pair) -> list[str]:
    """Every layout key of the pair: ours first, then the file's in its order."""
    return [OURS, *(OBSM + k for k in service.dataset(pair).layouts)]


def default_layout(service: AnalysisService, pair: Pair) -> str:
    """The layout the main cell view opens with: the file's own ``X_umap`` if it carries
    one, else the file's first layout, else ours (:data:`OURS`)."""
    layouts = service.dataset(pair).layouts
    if not layouts:
        return OURS
    return OBSM + (PREFERRED if PREFERRED in layouts else next(iter(layouts)))


def shown_layout(service: AnalysisService, pair: Pair, ready: object) -> str:
    """The layout a view's ready store names (``{"layout": key}``, from the browser:
    checked by :func:`check_layout`), or :func:`default_layout` when it names none."""
    key = ready.get("layout") if isinstance(ready, dict) else None
    return default_layout(service, pair) if key is None else check_layout(service, pair, key)


def link_layout(service: AnalysisService, pair: Pair, value: object) -> tuple[str, str]:
    """The layout a shared link opens (``value``: its ``layout``, from the browser; none:
    :func:`default_layout`) and, when the dataset has no such layout, the line saying so
    (the default is shown instead; else ``""``)."""
    value = value[-1] if isinstance(value, list) and value else value  # a repeated key
    default = default_layout(service, pair)
    if value in (None, "", []):
        return default, ""
    try:
        return check_layout(service, pair, value), ""
    except InvalidSelection:
        shown = str(value) if len(str(value)) <= 40 else str(value)[:37] + "..."
        return default, (
            f"the link shows the layout {shown!r}, which this dataset does not have; "
            f"showing {layout_label(default)} instead"
        )


def layout_label(key: str) -> str:
    """What the layout dropdown calls a layout: ``"Latent UMAP (ours)"``, ``"X_tsne (from
    the file)"``, ``"X_pca, components 1-2 (from the file)"``."""
    if key == OURS:
        return OURS_LABEL
    name = key.removeprefix(OBSM)
    if "pca" in name.lower():
        return f"{name}, components 1-2 (from the file)"
    return f"{name} (from the file)"


def layout_choices(service: AnalysisService, pair: Pair) -> list[dict[str, str]]:
    """The layout dropdown's options (``label``, ``value``: the key)."""
    return [{"label": layout_label(k), "value": k} for k in layout_keys(service, pair)]


def layouts_note(service: AnalysisService, pair: Pair) -> str:
    """The muted line under the layout dropdown: :data:`NO_LAYOUTS_NOTE` when the file has
    no layout of its own, else ``""``."""
    return "" if service.dataset(pair).layouts else NO_LAYOUTS_NOTE


def check_layout(service: AnalysisService, pair: Pair, key: object) -> str:
    """``key`` if it names a layout of the pair, else :class:`InvalidSelection` (one line)."""
    if isinstance(key, str) and len(key) <= MAX_KEY and key in layout_keys(service, pair):
        return key
    shown, known = str(key)[:40], ", ".join(layout_keys(service, pair))
    msg = f"the layout {shown!r} is not one of this dataset's ({known})"
    raise InvalidSelection(msg)


def layout_xy(service: AnalysisService, pair: Pair, key: object) -> tuple[np.ndarray, np.ndarray]:
    """x and y of every cell in the layout ``key`` (checked by :func:`check_layout`)."""
    key = check_layout(service, pair, key)
    if key == OURS:
        xy = service.umap(pair)
        return xy["UMAP1"].to_numpy(), xy["UMAP2"].to_numpy()
    arr = service.dataset(pair).layouts[key.removeprefix(OBSM)]
    return arr[:, 0], arr[:, 1]


def layout_axes(key: str) -> tuple[str, str]:
    """Axis titles of a layout: ``("UMAP 1", "UMAP 2")``, ``("X_tsne 1", "X_tsne 2")``."""
    if key == OURS:
        return "UMAP 1", "UMAP 2"
    name = key.removeprefix(OBSM)
    return f"{name} 1", f"{name} 2"
