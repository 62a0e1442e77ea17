"""The web chat page in headless Chromium: it loads offline, sends a message and shows streamed text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers.server_process import ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def default_model_server():
    process = ServerProcess("--max-num-seqs", "4").wait_ready()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
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


def test_chat_page_streams_an_answer(default_model_server: ServerProcess, browser, tmp_path: Path) -> None:
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
