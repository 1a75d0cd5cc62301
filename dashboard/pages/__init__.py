"""Dash pages (discovered by Dash: one module per page, ``layout`` plus its callbacks)."""

from __future__ import annotations
