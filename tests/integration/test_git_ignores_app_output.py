"""What the app writes under its default folders (results cache, uploads, models trained on
the Model page) never shows up as a change of the git work tree; the embedded data stay
tracked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dashboard.backend.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def ignored(path: Path) -> bool:
    out = subprocess.run(
        ["git", "check-ignore", "-q", str(path.relative_to(ROOT))],
        cwd=ROOT,
        check=False,
        capture_output=True,
    )
    assert out.returncode in (0, 1), out.stderr
    return out.returncode == 0


@pytest.fixture(scope="module", autouse=True)
def _git_checkout() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout (a clone) to ask git what it ignores")


def test_app_output_under_the_default_folders_is_ignored() -> None:
    s = Settings()
    written = [
        s.cache_dir / "results" / "cache.db",
        s.cache_dir / "jobs" / "0123abcd.json",
        s.data_dir / "uploads" / "my_cells.h5ad",
        s.data_dir / "uploads" / ".upload-x.h5ad",
        s.model_dir / "pbmc10k-20261201-120000" / "model.pt",
        s.model_dir / "my_cells-20261201-120000-2" / "model.pt",
    ]
    for path in written:
        assert ROOT in path.parents, path  # the defaults are inside the work tree
        assert ignored(path), f"{path.relative_to(ROOT)} would show up in git status"


def test_the_embedded_data_and_model_stay_tracked() -> None:
    data = ROOT / "data"
    for path in (data / "pbmc10k.h5ad", data / "models" / "pbmc10k" / "model.pt"):
        assert not ignored(path), path
