"""The web chat page in headless Chromium: it loads offline, sends a message and shows streamed text.

The browser test needs Chromium (or Chrome) and a matching chromedriver on PATH (Debian: `apt-get install
chromium chromium-driver`); without them it is skipped, unless TOKENMILL_REQUIRE_BROWSER=1 (set by .ci/run,
which installs them) turns the missing browser into a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers.server_process import ServerProcess

pytestmark = pytest.mark.slow  # both tests start a server on the real default model


def _on_path(*names: str) -> str | None:
    """The first of `names` that is an executable on PATH."""
    return next((path for path in map(shutil.which, names) if path), None)


CHROMIUM = _on_path("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMEDRIVER = _on_path("chromedriver")
MISSING_BROWSER = (
    None
    if CHROMIUM and CHROMEDRIVER
    else f"needs Chromium and chromedriver on PATH (found browser: {CHROMIUM}, driver: {CHROMEDRIVER}); "
    "Debian: apt-get install chromium chromium-driver"
)
BROWSER_REQUIRED = os.environ.get("TOKENMILL_REQUIRE_BROWSER") == "1"


@pytest.fixture(scope="module")
def default_model_server():
    process = ServerProcess("--max-num-seqs", "4").wait_ready()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    if MISSING_BROWSER:
        pytest.fail(f"TOKENMILL_REQUIRE_BROWSER=1 but the browser test {MISSING_BROWSER}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1100,760",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.mark.skipif(bool(MISSING_BROWSER) and not BROWSER_REQUIRED, reason=f"browser test {MISSING_BROWSER}")
def test_chat_page_streams_an_answer(browser, default_model_server: ServerProcess, tmp_path: Path) -> None:
    browser.get(default_model_server.url + "/chat")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "model").text not in ("", "connecting…"))
    assert "SmolLM2" in browser.find_element(By.ID, "model").text
    temperature = browser.find_element(By.ID, "temperature")
    temperature.clear()
    temperature.send_keys("0")
    browser.find_element(By.ID, "input").send_keys("What is the capital of France?")
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant[data-done='1']"))
    answer = browser.find_element(By.CSS_SELECTOR, ".assistant").text
    assert "Paris" in answer
    assert "tok/s" in browser.find_element(By.CSS_SELECTOR, ".stats").text
    assert not browser.find_elements(By.CSS_SELECTOR, ".error")
    assert browser.save_screenshot(str(tmp_path / "chat.png"))
    assert (tmp_path / "chat.png").stat().st_size > 10_000


def test_chat_page_loads_nothing_from_outside(default_model_server: ServerProcess) -> None:
    import requests

    html = requests.get(default_model_server.url + "/chat", timeout=10).text
    assert "http://" not in html.replace("http://127", "") and "https://" not in html
