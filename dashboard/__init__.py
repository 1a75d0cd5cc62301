"""TotalVI Explorer dashboard: Dash pages over an analysis backend (``dashboard.backend``).

Importing this package is cheap: Dash, plotly and the model are imported by the modules that
need them (``dashboard.app``, ``dashboard.pages``, ``dashboard.backend.service``).
"""

from __future__ import annotations
