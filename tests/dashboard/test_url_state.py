"""View state in the URL: colour, layer and selection survive a round trip through a link,
and damaged or foreign links are reported in one readable line."""

from __future__ import annotations

import base64
import zlib
from urllib.parse import urlparse

import numpy as np
import pytest

from dashboard import app as app_module
from dashboard import ids
from dashboard.url_state import (
    build_search,
    decode_region,
    decode_selection,
    encode_selection,
    parse_search,
    state_from_query,
    view_search,
)


def open_link(search: str, n_cells: int | None) -> dict:
    """What a page makes of a link's query string (Dash passes parsed query params)."""
    return state_from_query(parse_search(search), n_cells)


# ------------------------------------------------------------------------- selection
@pytest.mark.parametrize("n_cells", [1, 7, 8, 9, 1500, 6855])
def test_selection_round_trip(n_cells: int) -> None:
    rng = np.random.default_rng(n_cells)
    cells = sorted(rng.choice(n_cells, size=max(1, n_cells // 3), replace=False).tolist())
    token = encode_selection(cells, n_cells)
    assert decode_selection(token, n_cells) == cells
    assert "=" not in token  # no padding: nothing to escape in a URL
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_selection_edge_cases() -> None:
    assert decode_selection(encode_selection([], 100), 100) == []
    assert decode_selection(encode_selection(range(100), 100), 100) == list(range(100))
    # duplicates and order do not matter
    assert decode_selection(encode_selection([5, 1, 5, 3], 10), 10) == [1, 3, 5]


def test_large_selection_makes_a_short_link() -> None:
    n = 6855
    lasso = list(range(1000, 4000))  # a contiguous lasso of 3000 cells
    token = encode_selection(lasso, n)
    assert len(token) < 200
    scattered = np.random.default_rng(0).choice(n, 3000, replace=False).tolist()
    assert len(encode_selection(scattered, n)) < 1300  # at most ~ n / 8 bytes, base64


def test_selection_outside_the_dataset_is_refused() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.9"):
        encode_selection([3, 10], 10)
    with pytest.raises(ValueError, match="outside"):
        encode_selection([-1], 10)


def test_damaged_token_gives_a_readable_error() -> None:
    for token in ["!!!notbase64", "abcd", "eJzLSM3JyQcABiwCFQ"]:  # the last: zlib of 'hello'
        with pytest.raises(ValueError) as info:
            decode_selection(token, 1500)
        message = str(info.value)
        assert "selection in the link" in message
        assert "\n" not in message
        assert "Traceback" not in message


def test_token_for_another_dataset_size_is_refused() -> None:
    token = encode_selection([0, 5, 9], 100)
    with pytest.raises(ValueError, match="for 104 cells, not 1500"):
        decode_selection(token, 1500)


# --------------------------------------------------------------------- query strings
def test_build_and_parse_search() -> None:
    search = build_search({"color": "gene:CD3E", "layer": "denoised", "other": "x", "sel": ""})
    assert search == "?color=gene%3ACD3E&layer=denoised"
    assert parse_search(search) == {"color": "gene:CD3E", "layer": "denoised"}
    assert build_search({}) == ""
    assert parse_search("") == {}
    assert parse_search(None) == {}
    assert parse_search("?color=a&color=b") == {"color": "b"}  # last value wins


def test_view_round_trip_colour_and_selection() -> None:
    n = 1500
    cells = [0, 17, 18, 19, 1499]
    color = {"feature": "protein:CD4_TotalSeqB", "layer": "foreground"}
    search = view_search(color, cells, n)
    assert urlparse("http://host/lookup" + search).query  # a valid URL query
    state = open_link(search, n)
    assert state == {"color": color, "cells": cells}


def test_view_search_leaves_defaults_out() -> None:
    assert view_search({"feature": "obs:cell_type", "layer": "raw"}, None, None) == ""
    assert view_search(None, None, None) == ""
    assert view_search({"feature": "gene:MS4A1", "layer": "raw"}, [], 10) == "?color=gene%3AMS4A1"
    search = view_search({"feature": "obs:cluster", "layer": "raw"}, [2], 10)
    assert parse_search(search)["color"] == "obs:cluster"
    assert parse_search(search)["n"] == "10"
    # a selection without a known dataset size is not shared (it could not be checked)
    assert view_search(None, [1, 2], None) == ""


def test_link_without_a_layer_opens_raw_values() -> None:
    assert open_link("?color=gene%3ACD3E", 10) == {
        "color": {"feature": "gene:CD3E", "layer": "raw"}
    }


def test_link_for_another_dataset_is_reported() -> None:
    search = view_search(None, [1, 2, 3], 100)
    state = open_link(search, 1500)
    assert "cells" not in state
    assert state["error"] == "the shared selection is for 100 cells; this dataset has 1500"


def test_damaged_link_is_reported_not_raised() -> None:
    state = open_link("?sel=%21%21broken&n=1500", 1500)
    assert "cells" not in state
    assert state["error"].startswith("the selection in the link is damaged")


@pytest.mark.parametrize(
    "query",
    [
        {"sel": "eNpzAgAAQwBD", "n": "many"},  # hand-edited cell count
        {"sel": ["eNpzAgAAQwBD", "x"], "n": ["8", "9"]},  # repeated keys: Dash gives lists
        {"sel": "eNpzAgAAQwBD", "n": ""},
    ],
)
def test_hand_edited_links_give_one_readable_line(query: dict) -> None:
    state = state_from_query(query, 8)
    if "error" in state:
        assert "\n" not in state["error"]
        assert "invalid literal" not in state["error"]
        assert "cells" not in state
    else:
        assert state["cells"] == decode_selection("eNpzAgAAQwBD", 8)


def test_selection_needs_a_dataset() -> None:
    token = encode_selection([1], 10)
    assert open_link(f"?sel={token}&n=10", None) == {}


# --------------------------------------------------------- the shell's link callbacks
def test_shell_seeds_the_selection_from_a_link() -> None:
    selection, alert = app_module.seed_from_link({"cells": [1, 2], "dataset": "abc"})
    assert selection == {"cells": [1, 2], "dataset": "abc", "source": "link"}
    assert alert is app_module.no_update


def test_shell_shows_a_link_error_as_a_warning() -> None:
    selection, alert = app_module.seed_from_link({"error": "the shared selection is for 5"})
    assert selection is app_module.no_update
    text = alert.children[0].children
    assert text == "Shared link: the shared selection is for 5."
    assert "alert-warning" in alert.className
    assert alert.children[1].id == ids.ALERT_CLOSE  # dismissable


def test_shell_says_when_the_links_colour_is_unknown_and_keeps_its_cells() -> None:
    notice = "the link colours by 'gene:NOPE', which this dataset does not have"
    selection, alert = app_module.seed_from_link(
        {"cells": [3], "dataset": "abc", "notice": notice}
    )
    assert selection == {"cells": [3], "dataset": "abc", "source": "link"}
    assert alert.children[0].children == f"Shared link: {notice}."
    assert "alert-warning" in alert.className


def test_shell_ignores_pages_without_link_state() -> None:
    assert app_module.seed_from_link({}) == (app_module.no_update, app_module.no_update)
    assert app_module.seed_from_link(None) == (app_module.no_update, app_module.no_update)


def test_url_query_drops_a_selection_from_another_dataset() -> None:
    token = {"dataset": "aaa", "version": 1}
    assert app_module._valid_cells({"cells": [1], "dataset": "bbb"}, token) is None
    assert app_module._valid_cells({"cells": [1], "dataset": "aaa"}, token) == [1]
    assert app_module._valid_cells({"cells": [], "dataset": "aaa"}, token) is None
    assert app_module.reset_stale_selection(token, {"cells": [1], "dataset": "bbb"}) is None
    assert (
        app_module.reset_stale_selection(token, {"cells": [1], "dataset": "aaa"})
        is app_module.no_update
    )


# --------------------------------------------------------------- region (large datasets)
def test_region_link_round_trip_is_short() -> None:
    from dashboard.url_state import decode_region, encode_region

    t = np.linspace(0, 2 * np.pi, 300, endpoint=False)
    region = {
        "view": "umap",
        "lasso": [np.round(5 * np.cos(t), 4).tolist(), np.round(3 * np.sin(t), 4).tolist()],
    }
    assert decode_region(encode_region(region)) == region
    search = view_search({"feature": "gene:CD3E", "layer": "raw"}, None, 1_000_000, region=region)
    assert len(search) < 8000
    state = open_link(search, 1_000_000)
    assert state["region"] == region and "cells" not in state
    assert "1000000 cells" in open_link(search, 999)["error"]
    assert "damaged" in open_link("?region=abc&n=10", 10)["error"]
    box = {"view": "umap", "box": [[0.0, 1.0], [2.0, 3.0]]}
    assert "sel=" not in view_search(None, [1, 2], 10, region=box)  # the region wins


def test_shell_seeds_and_shares_a_region_selection() -> None:
    region = {"view": "umap", "box": [[0.0, 1.0], [2.0, 3.0]]}
    selection, alert = app_module.seed_from_link({"region": region, "dataset": "abc"})
    assert selection == {"region": region, "dataset": "abc", "source": "link"}
    assert alert is app_module.no_update
    token = {"dataset": "abc"}
    assert app_module._valid_region(selection, token) == region
    assert app_module._valid_region({**selection, "dataset": "other"}, token) is None
    assert app_module._valid_region({"cells": [1]}, token) is None


# ------------------------------------------------------------------------ crafted links
def _bomb(n_bytes: int) -> str:
    packed = zlib.compress(b"\xff" * n_bytes, 9)
    return base64.urlsafe_b64encode(packed).decode().rstrip("=")


def test_a_selection_bomb_is_refused_without_inflating_it() -> None:
    """A 1 GB bitset compressed to ~1 MB: refused from its length, or after inflating at
    most the dataset's bitset (bits for n cells), never the 1 GB it claims."""
    import tracemalloc

    token = _bomb(200_000_000)  # ~200 kB of zlib, 200 MB inflated
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"too long|larger than this dataset"):
        decode_selection(token, 1000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5_000_000
    # short enough to pass the length check, but inflating past the bitset
    small = _bomb(10_000)
    with pytest.raises(ValueError, match="larger than this dataset"):
        decode_selection(small, 8_000)


def test_a_region_bomb_is_refused() -> None:
    raw = b'{"view":"umap","box":[[0,1],[0,1]],"pad":"' + b"a" * 5_000_000 + b'"}'
    token = base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")
    with pytest.raises(ValueError, match="larger than this dataset"):
        decode_region(token)
    deep = b"[" * 100_000 + b"]" * 100_000
    token = base64.urlsafe_b64encode(zlib.compress(deep, 9)).decode().rstrip("=")
    with pytest.raises(ValueError, match="damaged"):
        decode_region(token)
    with pytest.raises(ValueError, match="too long"):
        decode_region("A" * 2_000_000)
