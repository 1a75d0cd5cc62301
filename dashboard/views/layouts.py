"""The cell layouts Explore's "Embedding" linked view can show: the model's latent UMAP and
every 2-D layout the dataset's file carries in ``obsm`` (``X_umap``, ``X_tsne``, the first
two components of ``X_pca``, ...; read by :func:`model.data.obsm_layouts`).

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
#: Longest key accepted from the browser (longer ones are refused unread).
MAX_KEY = 200
NO_LAYOUTS_NOTE = (
    "This dataset's file carries no 2-D layout of its own (obsm X_umap, X_tsne, X_pca, ...): "
    "only the latent UMAP is offered."
)


def layout_keys(service: AnalysisService, pair: Pair) -> list[str]:
    """Every layout key of the pair: ours first, then the file's in its order."""
    return [OURS, *(OBSM + k for k in service.dataset(pair).layouts)]


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
