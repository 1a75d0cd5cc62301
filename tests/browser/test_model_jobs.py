"""The Model page's jobs live on the server, as a real browser sees it: a training started in
one tab shows, with its progress and Cancel, in a second tab and after a reload; Train is off
in every tab while it runs; Cancel from the other tab ends it; a second training switches the
app to the new model, and no tab ever shows a stray "cancelled"."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from dashboard import ids
from dashboard import testing_browser as pages
from dashboard.backend.testing import write_small_pbmc

pytestmark = pytest.mark.browser

DATA_DIR = Path(tempfile.mkdtemp(prefix="tve-browser-jobs-"))
DASHBOARD_SETTINGS = {"data_dir": DATA_DIR}  # read by conftest's ``dashboard`` fixture
DATASET = DATA_DIR / "small.h5ad"
TRAINING = 120  # seconds a test waits for a training or a switch


@pytest.fixture(scope="module", autouse=True)
def _small_dataset() -> Iterator[None]:
    write_small_pbmc(DATASET)
    yield
    for p in DATA_DIR.rglob("*"):
        if p.is_file():
            p.unlink()


def progress_text(driver: WebDriver) -> str:
    return driver.find_element(By.ID, ids.MODEL_PROGRESS).text


def disabled(driver: WebDriver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).get_attribute("disabled") is not None


def start_training(driver: WebDriver, epochs: int) -> None:
    """Choose the small dataset, set the epochs, press Train."""
    pages.pick_option(driver, ids.MODEL_DATASET, "small", str(DATASET))
    pages.wait_for(
        driver,
        lambda d: "200 cells" in d.find_element(By.ID, ids.MODEL_DATASET_INFO).text,
        "the dataset info never showed the small dataset",
    )
    box = driver.find_element(By.ID, ids.MODEL_MAX_EPOCHS)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(epochs))
    pages.wait_idle(driver)
    driver.find_element(By.ID, ids.MODEL_TRAIN).click()


def shows_running(driver: WebDriver) -> bool:
    """The tab shows the running training: its panel, Cancel on, Train off."""
    text = progress_text(driver)
    return (
        text.startswith("Training small-")
        and "%" in text
        and not disabled(driver, ids.MODEL_CANCEL)
        and disabled(driver, ids.MODEL_TRAIN)
    )


def test_a_training_shows_in_every_tab_and_survives_a_reload(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    first = driver.current_window_handle
    pages.open_page(driver, dashboard.url, "model")
    start_training(driver, 2000)
    pages.wait_for(driver, shows_running, "the first tab never showed the training", TRAINING)

    driver.switch_to.new_window("tab")  # a second tab of the same user
    second = driver.current_window_handle
    pages.open_page(driver, dashboard.url, "model")
    pages.wait_for(driver, shows_running, "the second tab did not show the training")
    driver.save_screenshot(str(screenshots / "model-training-second-tab.png"))

    driver.switch_to.window(first)
    driver.refresh()  # a reload keeps it too: the state is the server's
    pages.wait_for(driver, shows_running, "the training was lost on reload")

    driver.switch_to.window(second)
    driver.find_element(By.ID, ids.MODEL_CANCEL).click()  # cancel from the other tab
    done = "Training: cancelled; the previous model stays active."
    for handle in (second, first):
        driver.switch_to.window(handle)
        pages.wait_for(
            driver,
            lambda d: done in progress_text(d) and not disabled(d, ids.MODEL_TRAIN),
            "the cancel did not reach every tab",
            TRAINING,
        )
        assert disabled(driver, ids.MODEL_CANCEL)
    driver.switch_to.window(second)
    driver.close()
    driver.switch_to.window(first)
    pages.assert_clean(driver, dashboard, "model page after a cancel")


def test_a_finished_training_switches_the_app_and_says_so_once(
    driver: WebDriver, dashboard: Any, screenshots: Any
) -> None:
    before = dashboard.service.dataset(dashboard.pair).n_cells
    pages.open_page(driver, dashboard.url, "model")
    start_training(driver, 3)
    pages.wait_for(
        driver,
        lambda d: progress_text(d).startswith("Training small-"),
        "the training never showed",
        TRAINING,
    )
    seen: list[str] = []  # everything the panel shows from here to the switch

    def switched(d: WebDriver) -> bool:
        text = progress_text(d)
        seen.append(text)
        return "it is active on every page" in text

    pages.wait_for(driver, switched, "the trained model never became active", TRAINING)
    assert not any("cancelled" in t.lower() for t in seen), seen
    line = progress_text(driver)
    assert line.startswith("Trained small-"), line
    status = driver.find_element(By.ID, ids.STATUS).text
    pages.wait_for(
        driver,
        lambda d: "small-" in d.find_element(By.ID, ids.STATUS).text,
        f"the status bar never named the new model (it says {status!r})",
    )
    assert not disabled(driver, ids.MODEL_TRAIN)
    pages.open_page(driver, dashboard.url, "explore")  # the new model's 200 cells
    pages.wait_graph(
        driver,
        ids.EXPLORE_UMAP,
        lambda g: g.get("n_points") == 200 != before,
        "Explore did not switch to the trained model",
        timeout=TRAINING,
    )
    driver.save_screenshot(str(screenshots / "model-trained.png"))
    pages.assert_clean(driver, dashboard, "explore after training")
