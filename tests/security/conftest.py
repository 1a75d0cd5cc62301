"""Fixtures of the live-server attack suite: one ``serve`` process per package (``live``),
or one of a test's own (``fresh_server``, for tests that kill it). The server and the
crafted files are in :mod:`dashboard.testing_live`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dashboard.testing_live import Live, start_server, stop_server


@pytest.fixture(scope="package")
def live(tmp_path_factory) -> Iterator[Live]:
    server = start_server(tmp_path_factory.mktemp("live"))
    yield server
    stop_server(server)


@pytest.fixture
def fresh_server(tmp_path) -> Iterator[Callable[..., Live]]:
    """Start a server of its own (for tests that kill it); stopped at the end if alive."""
    started: list[Live] = []

    def start(**kw: Any) -> Live:
        started.append(start_server(tmp_path, **kw))
        return started[-1]

    yield start
    for server in started:
        stop_server(server)
