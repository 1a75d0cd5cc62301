"""Model folders from the browser, against a live ``serve``: a folder or hub download whose
files link outside the model folder is refused in one line (no path, nothing read), and a
typed path outside it is refused; the server stays up."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dashboard.testing_live import Live

SEEDLIKE = Path(__file__).resolve().parents[1] / "data" / "scvi_tools_1.4.2_mudata_seedlike_800"


def load(live: Live, checkpoint: str | None, typed: str | None = None) -> str:
    """Press Load on the Model page as the browser would; the message shown."""
    if not live.deps:
        live.deps = live.get("/_dash-dependencies").json()
    (output,) = [
        d["output"] for d in live.deps if any(i["id"] == "model-load" for i in d["inputs"])
    ]
    out = live.callback(
        output,
        {
            "model-load.n_clicks": 1,
            "model-dataset.value": "small.h5ad",
            "model-batch-key.value": "batch",
            "model-checkpoint.value": checkpoint,
            "model-checkpoint-path.value": typed,
            "model-own-data.value": ["own"],
        },
        ["model-load.n_clicks"],
    )
    return str(out["response"]["model-message"])


@pytest.fixture(scope="module")
def outside(live: Live) -> Path:
    """Copies of the seed-like files outside the model folder (what a link would reach)."""
    where = live.root / "outside" / "seedlike"
    if not where.exists():
        shutil.copytree(SEEDLIKE, where)
    return where


def test_data_linked_from_outside_is_refused(live: Live, outside: Path) -> None:
    folder = live.model_dir / "leaky"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(SEEDLIKE / "model.pt", folder / "model.pt")
    (folder / "mdata.h5mu").unlink(missing_ok=True)
    (folder / "mdata.h5mu").symlink_to(outside / "mdata.h5mu")
    shown = load(live, str(folder))
    assert "mdata.h5mu is a link that leads outside the model folder; refused" in shown
    assert str(live.root) not in shown and "Loading" not in shown
    assert live.alive()


def test_hub_snapshot_linking_outside_its_repository_is_refused(live: Live, outside: Path) -> None:
    repo = live.model_dir / "models--someone--leaky"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text("a" * 40)
    for name in ("model.pt", "mdata.h5mu", "README.md"):
        (snap / name).unlink(missing_ok=True)
        (snap / name).symlink_to(os.path.relpath(outside / name, snap))
    shown = load(live, str(repo))
    assert "model.pt is a link that leads outside the model folder; refused" in shown
    assert str(live.root) not in shown
    layout = live.callback(
        "_pages_content.children",
        {"_pages_location.pathname": "/model", "_pages_location.search": ""},
        ["_pages_location.pathname"],
    )
    assert "leaky" not in str(layout)  # neither folder is offered in the list
    assert live.alive()


def test_typed_paths_outside_the_model_folder_are_refused(live: Live, outside: Path) -> None:
    for typed in (str(outside), "../outside/seedlike", "/etc"):
        shown = load(live, None, typed)
        assert "refused" in shown and "model folder" in shown, shown
        assert str(live.root) not in shown
    assert live.alive()
