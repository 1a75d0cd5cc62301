"""Encode view state (colour-by feature, selected cells) in the URL so a view can be shared.

Selections are stored as a zlib-compressed bitset in URL-safe base64: a lasso selection of
thousands of cells becomes a few hundred characters. The query string carries ``color``
(``"gene:CD3E"``), ``layer`` (``raw``/``denoised``/``foreground``), ``layout`` (the
layout of Explore's cell view when not the dataset's default, ``"obsm:X_tsne"``), ``sel``
(the bitset) and ``n`` (the number of cells the bitset was made for, so a link to another
dataset is recognised instead of silently selecting the wrong cells).

On datasets above ``max_points`` a selection is a *region* (a lasso or box in one view, see
:mod:`dashboard.views.cells`): the link then carries ``region`` (its compact JSON, zlib-compressed,
URL-safe base64) and ``n`` instead of a bitset of up to a million cells.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode

import numpy as np

KEYS = ("pair", "color", "layer", "layout", "sel", "region", "n")
#: Most bytes a link's region may take once decompressed (room for a lasso of the most
#: vertices a region may have, 5,000).
MAX_REGION_BYTES = 512 * 1024


def _inflate(token: str, limit: int, what: str) -> bytes:
    """URL-safe base64 + zlib ``token`` decoded to at most ``limit`` bytes.

    The token's length is checked against what ``limit`` bytes can compress to before
    anything is decoded, and decompression stops at ``limit`` + 1 bytes: a crafted link
    (a zlib bomb) costs at most ``limit`` bytes of memory, never what it claims.
    """
    # zlib never expands its input by more than 5 bytes per 16 kB block + 11 bytes
    most = limit + 5 * (limit // 16_384 + 1) + 11
    if len(token) > (most + 2) // 3 * 4:
        msg = f"the {what} in the link is damaged (too long)"
        raise ValueError(msg)
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, limit + 1)
    except (ValueError, zlib.error) as err:
        msg = f"the {what} in the link is damaged ({err})"
        raise ValueError(msg) from None
    if len(raw) > limit or inflater.unconsumed_tail:
        msg = f"the {what} in the link is larger than this dataset allows"
        raise ValueError(msg)
    return raw


def encode_selection(cells: Sequence[int], n_cells: int) -> str:
    """Positions of selected cells → compact URL-safe string."""
    bits = np.zeros(n_cells, dtype=bool)
    idx = np.asarray(list(cells), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n_cells):
        msg = f"selection has cell positions outside 0..{n_cells - 1}"
        raise ValueError(msg)
    bits[idx] = True
    packed = zlib.compress(np.packbits(bits).tobytes(), 9)
    return base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")


def decode_selection(token: str, n_cells: int) -> list[int]:
    """Inverse of :func:`encode_selection`; a malformed token raises ``ValueError``.

    Memory is bounded by the dataset: the bitset of ``n_cells`` cells, whatever the token.
    """
    raw = _inflate(token, (n_cells + 7) // 8, "selection")
    if len(raw) != (n_cells + 7) // 8:
        msg = f"the selection in the link is for {len(raw) * 8} cells, not {n_cells}"
        raise ValueError(msg)
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:n_cells].astype(bool)
    return np.flatnonzero(bits).tolist()


def encode_region(region: Mapping[str, Any]) -> str:
    """A selection region (lasso or box in one view) → compact URL-safe string."""
    raw = json.dumps(region, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode("ascii").rstrip("=")


def decode_region(token: str) -> dict[str, Any]:
    """Inverse of :func:`encode_region`; a malformed token raises ``ValueError`` (the
    region's content is checked where it is used, :func:`dashboard.views.cells.clean_region`;
    at most :data:`MAX_REGION_BYTES` are decompressed)."""
    raw = _inflate(token, MAX_REGION_BYTES, "selection")
    try:
        region = json.loads(raw)
    except (ValueError, RecursionError) as err:
        msg = f"the selection in the link is damaged ({type(err).__name__})"
        raise ValueError(msg) from None
    if not isinstance(region, dict):
        msg = "the selection in the link is damaged (not a region)"
        raise ValueError(msg)
    return region


def build_search(params: Mapping[str, Any]) -> str:
    """Query string (``?color=...&layer=...&sel=...&n=...``) of the non-empty known keys."""
    items = [(k, str(params[k])) for k in KEYS if params.get(k) not in (None, "")]
    return "?" + urlencode(items) if items else ""


def parse_search(search: str | None) -> dict[str, str]:
    """``?a=1&b=2`` → ``{"a": "1", "b": "2"}`` (last value wins)."""
    if not search:
        return {}
    return {k: v[-1] for k, v in parse_qs(search.lstrip("?")).items()}


def view_search(
    color: Mapping[str, Any] | None,
    cells: Sequence[int] | None,
    n_cells: int | None,
    region: Mapping[str, Any] | None = None,
    pair: str | None = None,
    layout: str | None = None,
) -> str:
    """The query string of a view: the (dataset, model) ``pair`` it shows (its id, so a
    colleague's workspace opens the same one), colour (omitted when default), the cell
    view's ``layout`` (given only when not the default) and selection (cell positions, or a
    ``region`` on datasets shown as a subsample)."""
    params: dict[str, Any] = {"pair": pair, "layout": layout}
    if color:
        feature, layer = color.get("feature"), color.get("layer") or "raw"
        if feature and feature != "obs:cell_type":
            params["color"] = feature
        if feature and layer != "raw":
            params["layer"] = layer
    if region and n_cells:
        params["region"] = encode_region(region)
        params["n"] = n_cells
    elif cells and n_cells:
        params["sel"] = encode_selection(cells, n_cells)
        params["n"] = n_cells
    return build_search(params)


def state_from_query(query: Mapping[str, Any], n_cells: int | None) -> dict[str, Any]:
    """Colour and selection from a page's query parameters (as Dash passes them to
    ``layout``); a damaged or foreign selection is reported under ``"error"``."""
    # a key repeated in a hand-edited link reaches us as a list: the last value wins
    query = {k: v[-1] if isinstance(v, list) and v else v for k, v in query.items()}
    out: dict[str, Any] = {}
    if query.get("color"):
        out["color"] = {"feature": str(query["color"]), "layer": str(query.get("layer") or "raw")}
    token = query.get("sel")
    if query.get("region") and n_cells:
        try:
            _check_n(query, n_cells)
            out["region"] = decode_region(str(query["region"]))
        except ValueError as err:
            out["error"] = str(err)
    elif token and n_cells:
        try:
            _check_n(query, n_cells)
            out["cells"] = decode_selection(str(token), n_cells)
        except ValueError as err:
            out["error"] = str(err)
    return out


def _check_n(query: Mapping[str, Any], n_cells: int) -> None:
    """``ValueError`` unless the link's ``n`` (when given) is this dataset's cell count."""
    raw_n = str(query.get("n") or n_cells).strip()
    if not raw_n.isdigit():
        msg = f"the link's cell count {raw_n!r} is not a number"
        raise ValueError(msg)
    n = int(raw_n)
    if n != n_cells:
        msg = f"the shared selection is for {n} cells; this dataset has {n_cells}"
        raise ValueError(msg)
