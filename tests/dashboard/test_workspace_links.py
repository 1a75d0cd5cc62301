"""Which pairs a shared link may open in another user's workspace: not one that lives only
in another user's memory (a mapped query holds that user's own cells)."""

from __future__ import annotations

import pytest

from dashboard.backend.service import AnalysisService
from dashboard.backend.settings import Settings
from dashboard.views.state import ActiveState
from dashboard.views.workspaces import Workspaces

pytestmark = pytest.mark.slow


def test_a_pair_only_in_memory_opens_for_no_one_else(tmp_path, trained) -> None:
    data, model = trained
    root = tmp_path
    svc = AnalysisService(
        Settings(cache_dir=root / "cache", data_dir=root / "data", model_dir=root / "models")
    )
    try:
        default = ActiveState(svc, warm=False)
        workspaces = Workspaces(default, svc.settings.workspaces_dir)
        mapped = svc.add_model(svc.add_dataset(data), model)  # no files: in memory only
        assert mapped.dataset.path is None and mapped.model.path is None
        workspaces.state("u-alice").activate(mapped)
        line = workspaces.open_link("u-bob", mapped.id)
        assert line == "the link's model is in another user's workspace; showing your own"
        bob = workspaces.state("u-bob")
        assert bob.pair is None and bob.switch.view().running is False  # nothing started
        assert workspaces.open_link("u-alice", mapped.id) is None  # her own: shown already
        # the server's default, in memory or not, is everyone's
        default.activate(mapped)
        other = svc.add_model(svc.add_dataset(data.subset(list(range(200)))), model)
        carol = workspaces.state("u-carol")
        carol.activate(other)
        assert workspaces.open_link("u-carol", mapped.id).startswith("opening the link's model")
        carol.cancel()
    finally:
        svc.close()
