"""Page shown for unknown addresses."""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from dashboard import components

dash.register_page(__name__, name="Not found", title="Not found · TotalVI Explorer")


def layout(**_: Any) -> html.Div:
    """A short message and a way back."""
    return html.Div(
        [
            components.page_header("Page not found", "There is no page at this address."),
            dcc.Link("Back to Explore", href="/", className="btn btn-primary"),
        ]
    )
