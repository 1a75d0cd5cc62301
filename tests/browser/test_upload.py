"""Uploading in a real browser: the file chosen in the Model page's drop zone is sent as it
is to the upload route (no base64 callback), checked by a job, stored under a name of its
own, shown and selected; the same name again gets a new name; a bad file is refused in one
line."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from dashboard import ids
from dashboard import testing_browser as pages
from dashboard.backend.testing import write_small_pbmc

pytestmark = pytest.mark.browser

DATA_DIR = Path(tempfile.mkdtemp(prefix="tve-browser-upload-"))
DASHBOARD_SETTINGS = {"data_dir": DATA_DIR}  # read by conftest's ``dashboard`` fixture
LOCAL = Path(tempfile.mkdtemp(prefix="tve-browser-local-"))  # the user's own disk


@pytest.fixture(scope="module", autouse=True)
def _files() -> Iterator[None]:
    write_small_pbmc(LOCAL / "my cells.h5ad")
    (LOCAL / "notes.h5ad").write_bytes(b"this is not an HDF5 file")
    yield
    for folder in (DATA_DIR, LOCAL):
        for p in sorted(folder.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()


def choose_file(driver: WebDriver, zone_id: str, path: Path) -> None:
    """Pick ``path`` in the zone's file dialog (selenium types it into the file input)."""
    field = pages.wait_for(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, f"#{zone_id} input.upload-input"),
        f"{zone_id}: the drop zone has no file input",
    )
    field.send_keys(str(path))


def status(driver: WebDriver) -> str:
    return driver.find_element(By.ID, ids.MODEL_UPLOAD_STATUS).text


def test_upload_from_the_drop_zone(driver: WebDriver, dashboard) -> None:
    pages.open_page(driver, dashboard.url, "model")
    driver.get_log("browser")
    choose_file(driver, ids.MODEL_UPLOAD, LOCAL / "my cells.h5ad")
    pages.wait_for(driver, lambda d: "Uploaded and checked" in status(d),
                   f"no upload message (shown: {status(driver)!r})")  # fmt: skip
    assert status(driver).startswith("Uploaded and checked my_cells.h5ad.")
    # kept in this browser's own area: uploads/<its workspace>/
    stored = next((DATA_DIR / "uploads").glob("s-*/my_cells.h5ad"))
    area = stored.parent
    assert stored.read_bytes() == (LOCAL / "my cells.h5ad").read_bytes()
    pages.wait_for(
        driver,
        lambda d: "200 cells" in d.find_element(By.ID, ids.MODEL_DATASET_INFO).text,
        "the uploaded dataset was not selected and read",
    )
    chosen = driver.find_element(By.ID, ids.MODEL_DATASET).text
    assert "my uploads/my_cells.h5ad" in chosen, chosen  # the user's own area

    choose_file(driver, ids.MODEL_UPLOAD, LOCAL / "my cells.h5ad")  # the same name again
    pages.wait_for(driver, lambda d: "my_cells-2.h5ad" in status(d),
                   f"the second upload got no name of its own ({status(driver)!r})")  # fmt: skip
    assert stored.exists() and (area / "my_cells-2.h5ad").exists()

    choose_file(driver, ids.MODEL_UPLOAD, LOCAL / "notes.h5ad")
    pages.wait_for(driver, lambda d: "Nothing was stored" in status(d),
                   f"the bad file was not refused ({status(driver)!r})")  # fmt: skip
    line = status(driver)
    assert line.startswith("notes.h5ad: ") and "\n" not in line and str(DATA_DIR) not in line
    assert not list((DATA_DIR / "uploads").rglob("notes*.h5ad"))
    assert not list((area / ".incoming").iterdir())
    # the check ran as a job: its panel's progress is gone once the outcome line shows
    assert not driver.find_element(By.ID, ids.MODEL_UPLOAD_ZONE.check.progress).text
    assert not pages.console_problems(driver)
    assert not dashboard.errors.records, dashboard.errors.messages()
